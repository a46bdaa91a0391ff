# SPDX-License-Identifier: Apache-2.0
"""from_torch on real torch modules (exported by torch.onnx at opsets 11–17), compared with the
same module run in float64 (module.double()), and loading TorchScript / torch.save files."""
import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from conftest import rel_err, velocity  # noqa: E402
from siflow_convert import ConversionError, from_torch  # noqa: E402
from siflow_convert.torch_import import detect_format, load_torch_file  # noqa: E402

D = 3
REL = 1e-5


def torch_v(module, y, t, layout):
    """The module's output in float64 for rows y at scalar time t, in the given layout."""
    m = module.double()
    y = torch.tensor(y, dtype=torch.float64)
    n = y.shape[0]
    with torch.no_grad():
        if layout == "first":
            out = m(torch.cat([torch.full((n, 1), t, dtype=torch.float64), y], 1))
        elif layout == "last":
            out = m(torch.cat([y, torch.full((n, 1), t, dtype=torch.float64)], 1))
        else:
            tt = {"column": torch.full((n, 1), t, dtype=torch.float64),
                  "batch": torch.full((n,), t, dtype=torch.float64),
                  "scalar": torch.tensor(t, dtype=torch.float64),
                  "one": torch.tensor([t], dtype=torch.float64)}[layout]
            out = m(y, tt)
    module.float()
    return out.numpy()


def compare(module, layout="column", opset=17, dim=D, ts=(0.0, 0.37, 1.0)):
    """Converts and compares at several times; returns the graph."""
    torch.manual_seed(0)
    if layout in ("first", "last"):
        g = from_torch(module, dim, time_column=layout, opset=opset)
    else:
        g = from_torch(module, dim, time_shape=layout, opset=opset)
    y = np.random.default_rng(1).normal(size=(7, dim)) * 1.5
    for t in ts:
        want = torch_v(module, y, t, layout)
        got = velocity(g, t, y)
        assert rel_err(got, want) <= REL, (t, rel_err(got, want))
    return g


class Concat(nn.Module):
    """v = net(cat([x, t])) with t [B, 1] (two inputs), or net(xt) with one input."""

    def __init__(self, net, one_input=False):
        super().__init__()
        self.net, self.one_input = net, one_input

    def forward(self, x, t=None):
        return self.net(x if self.one_input else torch.cat([x, t], dim=1))


def mlp(act, width=16, dim=D, extra_in=1):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim + extra_in, width), act, nn.Linear(width, width), act,
                         nn.Linear(width, dim))


ACTS = {
    "relu": nn.ReLU(), "leaky": nn.LeakyReLU(0.2), "elu": nn.ELU(alpha=0.6), "selu": nn.SELU(),
    "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "softplus": nn.Softplus(), "silu": nn.SiLU(),
    "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"),
}
EXPECT = {"relu": "relu", "leaky": "leaky_relu", "elu": "elu", "selu": "selu", "tanh": "tanh",
          "sigmoid": "sigmoid", "softplus": "softplus", "silu": "silu", "gelu": "gelu_erf",
          "gelu_tanh": "gelu_tanh"}


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("act", sorted(ACTS))
def test_activations(act, opset):
    g = compare(Concat(mlp(ACTS[act])), opset=opset)
    kinds = [n.unary for n in g.nodes if n.op == "unary"]
    assert kinds == [EXPECT[act]] * 2
    assert sum(n.op == "fc" for n in g.nodes) == 3


def test_elu_alpha_is_stored():
    g = compare(Concat(mlp(nn.ELU(alpha=0.6))))
    assert all(math.isclose(n.alpha, 0.6, rel_tol=1e-6) for n in g.nodes if n.unary == "elu")


class LayerNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(D + 1, 8)
        self.ln = nn.LayerNorm(8)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)
        self.out = nn.Linear(8, D)

    def forward(self, x, t):
        return self.out(torch.tanh(self.ln(self.inp(torch.cat([x, t], 1)))))


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_layernorm(opset):
    g = compare(LayerNormNet(), opset=opset)
    ln = [n for n in g.nodes if n.op == "layernorm"]
    assert len(ln) == 1 and ln[0].gamma is not None and ln[0].beta is not None


class Fourier(nn.Module):
    """The paper-style net: Fourier time features, t first, a residual block."""

    def __init__(self, dim=D, width=32, nfreq=4):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("freqs", torch.arange(1, nfreq + 1, dtype=torch.float32) * math.pi)
        self.inp = nn.Linear(2 * nfreq + dim, width)
        self.block = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.out = nn.Linear(width, dim)

    def forward(self, x, t):
        tf = t * self.freqs                      # [B, 1] * [nfreq]
        h = self.inp(torch.cat([torch.sin(tf), torch.cos(tf), x], dim=1))
        h = h + self.block(torch.relu(h))
        return self.out(torch.relu(h))


@pytest.mark.parametrize("opset", [11, 17])
def test_fourier_features_and_residual(opset):
    g = compare(Fourier(), opset=opset)
    kinds = {n.unary for n in g.nodes if n.op == "unary"}
    assert {"sin", "cos", "silu", "relu"} <= kinds


def test_wide_dim16():
    g = compare(Fourier(dim=16, width=24), dim=16)
    assert g.dim == 16


@pytest.mark.parametrize("layout", ["first", "last"])
def test_time_column(layout):
    g = compare(Concat(mlp(nn.SiLU()), one_input=True), layout=layout)
    assert g.nodes[0].op == "concat"


class ScalarTime(nn.Module):
    """The paper's code: a scalar t repeated over the batch (repeat, expand or ones)."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.net = mlp(nn.Tanh())

    def forward(self, x, t):
        n = x.shape[0]
        if self.how == "repeat":
            tt = t.repeat(n).unsqueeze(1)
        elif self.how == "expand":
            tt = t.reshape(1, 1).expand(n, 1)
        else:
            tt = t * torch.ones(n, 1, dtype=x.dtype)
        return self.net(torch.cat([x, tt], 1))


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("how,layout", [("repeat", "one"), ("expand", "one"),
                                        ("expand", "scalar"), ("ones", "scalar"),
                                        ("ones", "one")])
def test_scalar_time_broadcast(how, layout, opset):
    g = compare(ScalarTime(how), layout=layout, opset=opset)
    assert [n.op for n in g.nodes][:2] == ["concat", "fc"]


class BatchTime(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp(nn.ReLU())

    def forward(self, x, t):
        return self.net(torch.cat([x, t.unsqueeze(-1)], 1))


def test_time_as_batch_vector():
    compare(BatchTime(), layout="batch")


def test_export_failure_is_a_conversion_error():
    class Bad(nn.Module):
        def forward(self, x, t):
            return torch.linalg.svd(x)[0]          # not exportable

    with pytest.raises(ConversionError, match="torch.onnx.export failed|not supported"):
        from_torch(Bad(), D)


def test_unsupported_op_in_torch_module_names_node():
    class SignNet(nn.Module):
        def forward(self, x, t):
            return torch.sign(x) * t

    with pytest.raises(ConversionError, match=r"\(Sign\): op Sign is not supported"):
        from_torch(SignNet(), D)


def test_bad_arguments():
    with pytest.raises(ConversionError, match="time_column"):
        from_torch(Concat(mlp(nn.ReLU())), D, two_inputs=False)
    with pytest.raises(ConversionError, match="dim must be a positive integer"):
        from_torch(Concat(mlp(nn.ReLU())), 0)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp(nn.GELU())

    def forward(self, x, t):
        return self.net(torch.cat([x, t], dim=1))


def test_torchscript_and_torch_save_files(tmp_path):
    module = TwoInputs()
    ts_path, pt_path = tmp_path / "m.anything", tmp_path / "m.bin"
    torch.jit.script(module).save(str(ts_path))
    torch.save(module, str(pt_path))
    assert detect_format(str(ts_path)) == "torchscript"
    assert detect_format(str(pt_path)) == "torch"
    y = np.random.default_rng(2).normal(size=(5, D))
    want = torch_v(module, y, 0.6, "column")
    for p in (ts_path, pt_path):
        g = from_torch(load_torch_file(str(p)), D)
        assert rel_err(velocity(g, 0.6, y), want) <= REL


def test_state_dict_file_is_refused(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save(mlp(nn.ReLU()).state_dict(), str(p))
    with pytest.raises(ConversionError, match="not an nn.Module"):
        load_torch_file(str(p))


def test_onnx_bytes_detected(tmp_path):
    buf = io.BytesIO()
    torch.onnx.export(Concat(mlp(nn.ReLU())), (torch.zeros(2, D), torch.zeros(2, 1)), buf,
                      input_names=["x", "t"], output_names=["v"])
    p = tmp_path / "model.dat"
    p.write_bytes(buf.getvalue())
    assert detect_format(str(p)) == "onnx"


class TimeEmbedding(nn.Module):
    """A time-embedding MLP run once on a scalar t, then expanded over the batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("f", torch.arange(1, 3, dtype=torch.float32) * math.pi)
        self.emb = nn.Sequential(nn.Linear(4, 6), nn.SiLU())
        self.inp = nn.Linear(D + 6, 8)
        self.out = nn.Linear(8, D)

    def forward(self, x, t):
        tf = t * self.f
        e = self.emb(torch.cat([tf.sin(), tf.cos()], -1).reshape(1, -1)).expand(x.shape[0], -1)
        return self.out(torch.relu(self.inp(torch.cat([x, e], 1))))


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("layout", ["scalar", "one"])
def test_time_embedding_on_scalar_t(layout, opset):
    compare(TimeEmbedding(), layout=layout, opset=opset)


def test_module_is_not_modified():
    module = TwoInputs().double().train()
    from_torch(module, D)
    assert module.training and next(module.parameters()).dtype == torch.float64
