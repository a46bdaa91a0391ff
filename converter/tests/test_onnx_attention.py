# SPDX-License-Identifier: Apache-2.0
"""Products of two activations (onnx_attention: MatMul, Einsum, the product's scale, Softmax over
the last axis) and the U-Net broadcasts (onnx_broadcast: per-channel embeddings, channel
Concat): the equations accepted and refused, the IR's shape rules, the file round trip, and
converted attention nets against PyTorch in float64 (reference) and the runtime (CLI)."""
import io
import math
import subprocess

import numpy as np
import pytest

from conftest import rel_err, siflow_cli
from siflow_convert import ir, sif_io
from siflow_convert import reference as R
from siflow_convert.onnx_attention import einsum_plan

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(1414)


# ------------------------------------------------------------------------------ equations

@pytest.mark.parametrize("eq,plan", [
    ("bhqd,bhkd->bhqk", (0, False, 1, True)),     # Q Kᵀ
    ("bhqk,bhkd->bhqd", (0, False, 1, False)),    # A V
    ("bci,bcj->bij", (0, True, 1, False)),        # channel-first scores
    ("bij,bcj->bci", (1, False, 0, True)),        # channel-first mixing
    ("bqd,bkd->bqk", (0, False, 1, True)),
    ("bhci,bhcj->bhij", (0, True, 1, False)),
    ("bhij,bhcj->bhci", (1, False, 0, True)),
    ("b h q d , b h k d -> b h q k", (0, False, 1, True)),
])
def test_attention_equations_map_onto_one_matmul(eq, plan):
    assert einsum_plan(eq, "n") == plan


@pytest.mark.parametrize("eq,why", [
    ("...qd,...kd->...qk", r"'\.\.\.'"),
    ("bqd,bkd", "explicit '->'"),
    ("bi,bj->bij", "0 contracted letters"),
    ("bcij,bcik->bjk", "2 contracted letters"),
    ("bhqd,bkd->bhqk", "group letter"),
    ("bqd,bkd->qbk", "batch letter must come first"),
    ("bii,bij->bij", "each letter once"),
    ("bqd,bqd->bqq", "each letter once"),
    ("bqdx,bkd->bqk", "summed without being contracted"),
])
def test_other_equations_are_refused_by_name(eq, why):
    with pytest.raises(ir.ConversionError, match=why) as e:
        einsum_plan(eq, "node 'e' (Einsum)")
    assert repr(eq) in str(e.value) and "node 'e' (Einsum)" in str(e.value)


# ------------------------------------------------------------------------------ IR and file

def _attention_graph(transpose_b=True, scale=0.5):
    """x [2, 3, 4] (2 heads, 3 tokens, 4 features): softmax(scale x xᵀ) x."""
    g = ir.Graph(dim=24, x_shape=[2, 3, 4])
    s = g.add(ir.Node("matmul", [0, 0], transpose_b=transpose_b, scale=scale))
    a = g.add(ir.Node("softmax", [s], axis=-1))
    g.output = g.add(ir.Node("matmul", [a, 0]))
    return g


def test_matmul_shapes_and_refusals():
    g = _attention_graph()
    assert g.shapes()[2] == [2, 3, 3] and g.shapes()[4] == [2, 3, 4]
    bad = ir.Graph(dim=24, x_shape=[2, 3, 4])
    bad.output = bad.add(ir.Node("matmul", [0, 0]))     # [3, 4] x [3, 4] does not multiply
    with pytest.raises(ir.ConversionError, match="do not multiply"):
        bad.widths()
    flat = ir.Graph(dim=24)
    flat.output = flat.add(ir.Node("matmul", [0, 0], transpose_b=True))
    with pytest.raises(ir.ConversionError, match=r"must both be \[M, K\]"):
        flat.widths()
    inf = ir.Graph(dim=24, x_shape=[2, 3, 4])
    inf.add(ir.Node("matmul", [0, 0], transpose_b=True, scale=math.inf))
    with pytest.raises(ir.ConversionError, match="scale inf is not finite"):
        inf._widths_so_far()


def test_reference_matches_numpy_and_its_jvp_finite_differences():
    g = _attention_graph()
    model = ir.FlowModel(graph=g)
    y = RNG.normal(size=(3, 24))
    x = y.reshape(3, 2, 3, 4)
    s = 0.5 * np.einsum("bhqd,bhkd->bhqk", x, x)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    want = np.einsum("bhqk,bhkd->bhqd", a, x).reshape(3, -1)
    v, jac = R.evaluate(model, 0.3, y, tangents=True)
    assert rel_err(v, want) <= 1e-13
    eps = 1e-6
    for p in (0, 7, 23):
        d = np.zeros(24)
        d[p] = eps
        fd = (R.velocity(model, 0.3, y + d) - R.velocity(model, 0.3, y - d)) / (2 * eps)
        assert np.max(np.abs(jac[:, p, :] - fd)) <= 1e-7


def test_transpose_b_and_scale_survive_the_file(tmp_path):
    model = ir.FlowModel(graph=_attention_graph(transpose_b=True, scale=0.125))
    path = str(tmp_path / "a.sif")
    sif_io.write_sif(model, path)
    back = sif_io.read_sif(path)
    mm = [n for n in back.graph.nodes if n.op == "matmul"]
    assert [(n.transpose_b, n.scale) for n in mm] == [(True, 0.125), (False, 1.0)]
    y = RNG.normal(size=(2, 24))
    assert rel_err(R.velocity(back, 0.5, y), R.velocity(model, 0.5, y)) == 0.0


# ------------------------------------------------------------------------------ ONNX import

class EinsumHeads(torch.nn.Module):
    """x [B, 2, 4, 4] -> 2-head attention over 16 positions written with einsum, scaled by t."""

    def __init__(self, eq_scores="bhci,bhcj->bhij", eq_mix="bhij,bhcj->bhci"):
        super().__init__()
        self.qkv = torch.nn.Conv2d(2, 12, 1)
        self.out = torch.nn.Conv2d(4, 2, 1)     # reads the [heads, d, 16] product as [4, 4, 4]
        self.eqs = (eq_scores, eq_mix)

    def forward(self, x, t):
        b = x.shape[0]
        q, k, v = self.qkv(x).chunk(3, dim=1)
        q, k, v = (z.reshape(b, 2, 2, 16) for z in (q, k, v))
        a = torch.softmax(torch.einsum(self.eqs[0], q, k) * 0.5, dim=-1)
        o = torch.einsum(self.eqs[1], a, v).reshape(b, 4, 4, 4)
        return self.out(o) * t.reshape(-1, 1, 1, 1) + x


class MatmulTokens(torch.nn.Module):
    """x [B, 2, 4, 4] -> single-head attention in token layout [B, 16, 2] with matmul, a
    per-channel time embedding and a channel concat (the U-Net idioms)."""

    def __init__(self):
        super().__init__()
        self.q, self.k = torch.nn.Conv2d(2, 2, 1), torch.nn.Conv2d(2, 2, 1)
        self.temb = torch.nn.Linear(1, 2)
        self.mix = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x, t):
        b = x.shape[0]
        h = x + self.temb(t)[:, :, None, None]
        q = self.q(h).reshape(b, 2, 16).transpose(1, 2)
        k = self.k(h).reshape(b, 2, 16).transpose(1, 2)
        v = h.reshape(b, 2, 16).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(2.0), dim=-1)
        o = (a @ v).transpose(1, 2).reshape(b, 2, 4, 4)
        return self.mix(torch.cat([o, h], dim=1))


class MatmulHeads(torch.nn.Module):
    """x [B, 2, 4, 4] -> 2-head attention [B, 2, 16, 2] (heads, tokens, features) with matmul
    on 4-D tensors: q @ k.transpose(-2, -1), softmax, @ v."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Conv2d(2, 12, 1)
        self.out = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x, t):
        b = x.shape[0]
        q, k, v = (z.reshape(b, 2, 2, 16).transpose(-2, -1)
                   for z in self.qkv(x).chunk(3, dim=1))
        a = torch.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1)
        o = (a @ v).transpose(-2, -1).reshape(b, 4, 4, 4)
        return self.out(o) * t.reshape(-1, 1, 1, 1) + x


def _onnx(net, opset):
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(3, 2, 4, 4), torch.zeros(3, 1)), buf,
                      input_names=["x", "t"], output_names=["v"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                      opset_version=opset)
    return buf.getvalue()


def _convert_and_compare(net, opset, y, t):
    from siflow_convert import from_onnx
    graph = from_onnx(_onnx(net, opset))
    net64 = type(net)().double().eval()
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    with torch.no_grad():
        want = net64(torch.from_numpy(y).reshape(-1, 2, 4, 4),
                     torch.from_numpy(t)[:, None]).reshape(len(y), -1).numpy()
    model = ir.FlowModel(graph=graph)
    got = np.stack([R.velocity(model, t[r], y[r:r + 1])[0] for r in range(len(y))])
    return graph, model, got, want


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


@pytest.mark.parametrize("opset", [12, 13, 17])
def test_einsum_attention_converts_to_matmul_and_matches_torch(opset):
    torch.manual_seed(opset)
    y, t = _f32(RNG.normal(size=(4, 32))), _f32(RNG.uniform(size=4))
    graph, _, got, want = _convert_and_compare(EinsumHeads().eval(), opset, y, t)
    mm = [n for n in graph.nodes if n.op == "matmul"]
    assert len(mm) == 2, [n.op for n in graph.nodes]
    assert mm[0].scale == pytest.approx(0.5) and not mm[0].transpose_b   # the Mul folded in
    assert mm[1].transpose_b
    assert rel_err(got, want) <= 1e-6    # float32 scale and weights vs torch float64


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_matmul_attention_with_unet_broadcasts_matches_torch(tmp_path, opset):
    torch.manual_seed(opset)
    y, t = _f32(RNG.normal(size=(4, 32))), _f32(RNG.uniform(size=4))
    graph, model, got, want = _convert_and_compare(MatmulTokens().eval(), opset, y, t)
    ops = [n.op for n in graph.nodes]
    assert ops.count("matmul") == 2 and "resize" in ops and "concat" in ops, ops
    scores = next(n for n in graph.nodes if n.op == "matmul")
    assert scores.scale == pytest.approx(1 / math.sqrt(2.0))
    assert rel_err(got, want) <= 1e-6
    cli = siflow_cli()
    path = tmp_path / "m.sif"
    sif_io.write_sif(model, str(path))
    np.save(tmp_path / "y.npy", y.astype(np.float32).reshape(-1, 2, 4, 4))
    np.save(tmp_path / "t.npy", t.astype(np.float32))
    out = subprocess.run([cli, "velocity", str(path), "-i", str(tmp_path / "y.npy"), "-t",
                          str(tmp_path / "t.npy"), "-o", str(tmp_path / "v.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert rel_err(np.load(tmp_path / "v.npy").reshape(4, -1), want) <= 1e-5


@pytest.mark.parametrize("opset", [11, 14, 17])
def test_multi_head_matmul_attention_matches_torch(opset):
    torch.manual_seed(opset)
    y, t = _f32(RNG.normal(size=(4, 32))), _f32(RNG.uniform(size=4))
    graph, _, got, want = _convert_and_compare(MatmulHeads().eval(), opset, y, t)
    mm = [n for n in graph.nodes if n.op == "matmul"]
    # torch cancels k's two transposes; v's swap of its last two axes becomes transpose_b.
    assert len(mm) == 2 and mm[0].scale == pytest.approx(0.5) and mm[1].transpose_b
    assert graph.shapes()[graph.nodes.index(mm[0]) + 2] == [2, 16, 16]
    assert rel_err(got, want) <= 1e-6


def test_mul_of_a_product_read_elsewhere_is_not_folded():
    class Twice(torch.nn.Module):
        def forward(self, x, t):
            s = x @ x.transpose(1, 2)           # [B, 4, 4]
            return (s * 0.5 + s).reshape(-1, 16)[:, :8] * t + x.reshape(-1, 8)

    from siflow_convert import from_onnx
    buf = io.BytesIO()
    torch.onnx.export(Twice(), (torch.zeros(3, 4, 2), torch.zeros(3, 1)), buf,
                      input_names=["x", "t"], output_names=["v"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                      opset_version=13)
    graph = from_onnx(buf.getvalue())
    mm = [n for n in graph.nodes if n.op == "matmul"]
    assert len(mm) == 1 and mm[0].scale == 1.0 and mm[0].transpose_b
    y, t = RNG.normal(size=(2, 8)), np.array([0.3, 0.8])
    x = y.reshape(2, 4, 2)
    s = np.einsum("bik,bjk->bij", x, x)
    want = (1.5 * s).reshape(2, 16)[:, :8] * t[:, None] + y
    got = np.stack([R.velocity(ir.FlowModel(graph=graph), t[r], y[r:r + 1])[0]
                    for r in range(2)])
    assert rel_err(got, want) <= 1e-6


def test_unsupported_einsum_in_an_export_is_refused_by_name():
    class Outer(torch.nn.Module):
        def forward(self, x, t):
            o = torch.einsum("bci,bcj->bcij", x, x)       # no contracted letter
            return o.reshape(-1, 2, 16)[:, :, :4].reshape(-1, 8) * t

    from siflow_convert import from_onnx
    buf = io.BytesIO()
    torch.onnx.export(Outer(), (torch.zeros(3, 2, 4), torch.zeros(3, 1)), buf,
                      input_names=["x", "t"], output_names=["v"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                      opset_version=13)
    with pytest.raises(ir.ConversionError, match=r"Einsum equation 'bci,bcj->bcij' is not "
                                                 r"supported \(0 contracted letters"):
        from_onnx(buf.getvalue())


def test_batch_broadcasting_matmul_is_refused():
    class Broadcast(torch.nn.Module):
        def forward(self, x, t):
            a = x.reshape(-1, 2, 2, 2)
            b = x[:, :4].reshape(-1, 1, 2, 2)            # [B, 1, 2, 2] against [B, 2, 2, 2]
            return (a @ b).reshape(-1, 8) * t

    from siflow_convert import from_onnx
    buf = io.BytesIO()
    torch.onnx.export(Broadcast(), (torch.zeros(3, 8), torch.zeros(3, 1)), buf,
                      input_names=["x", "t"], output_names=["v"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                      opset_version=13)
    with pytest.raises(ir.ConversionError, match="no broadcasting of group axes"):
        from_onnx(buf.getvalue())
