# SPDX-License-Identifier: Apache-2.0
"""Converter options of issue 14: one refusal naming every unsupported node, fixed-batch exports,
--argument-order and the call-signature hints, from_torch with a label / condition input, the
self-check against the source (and the numpy ONNX evaluator it uses, against torch), and
--normalize from .npy/.csv or --mean/--std."""
import io
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import rel_err, velocity
from siflow_convert import ConversionError, convert, from_onnx, onnx_eval, reference
from siflow_convert.cli import main
from siflow_convert.ir import FlowModel
from siflow_convert.onnx_import import _Importer

RNG = np.random.default_rng(14)
D = 2


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _model(nodes, inits=(), opset=17, x_shape=("B", D), t_shape=("B", 1), out_shape=None):
    g = helper.make_graph(nodes, "net", [_vi("x", x_shape), _vi("t", t_shape)],
                          [_vi("v", out_shape or x_shape)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                               helper.make_opsetid("custom.ops", 1)])


W0, B0 = RNG.normal(size=(8, D + 1)), RNG.normal(size=8)
W1, B1 = RNG.normal(size=(D, 8)) * 0.5, RNG.normal(size=D) * 0.1


def _mlp(act="Sin"):
    nodes = [helper.make_node("Concat", ["x", "t"], ["h"], axis=1, name="cat"),
             helper.make_node("Gemm", ["h", "W0", "B0"], ["a"], transB=1, name="fc0"),
             helper.make_node(act, ["a"], ["b"], name="act"),
             helper.make_node("Gemm", ["b", "W1", "B1"], ["v"], transB=1, name="fc1")]
    return _model(nodes, [_init("W0", W0), _init("B0", B0), _init("W1", W1), _init("B1", B1)])


# ------------------------------------------------------------------------------ refusals

def test_one_refusal_names_every_unsupported_node_with_its_op_type():
    nodes = [helper.make_node("Sign", ["x"], ["s"], name="sign1"),
             helper.make_node("Relu", ["s"], ["r"], name="after_sign"),  # downstream: not judged
             helper.make_node("Hardmax", ["x"], ["h"], name="hard", axis=-1),
             helper.make_node("MyOp", ["x"], ["m"], name="custom", domain="custom.ops"),
             helper.make_node("Add", ["r", "h"], ["a"], name="add"),
             helper.make_node("Add", ["a", "m"], ["v"], name="add2")]
    model = _model(nodes)
    with pytest.raises(ConversionError) as e:
        from_onnx(model)
    msg = str(e.value)
    assert msg.startswith("3 nodes cannot be converted:"), msg
    for part in ("node 'sign1' (Sign): op Sign is not supported",
                 "node 'hard' (Hardmax): op Hardmax is not supported",
                 "node 'custom' (MyOp): op domain 'custom.ops' is not supported"):
        assert part in msg, msg
    assert "after_sign" not in msg and "'add'" not in msg
    assert msg.count("supported: Gemm") == 1, msg    # the list of supported ops once


def test_a_single_refusal_reads_as_before():
    model = _mlp("Sign")
    with pytest.raises(ConversionError, match=r"^node 'act' \(Sign\): op Sign is not supported; "
                                              r"supported: Gemm"):
        from_onnx(model)


# ------------------------------------------------------------------------------ fixed batch

torch = pytest.importorskip("torch")
F = torch.nn.functional


class Mlp(torch.nn.Module):
    def __init__(self, d=D, hidden=16):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(d + 1, hidden), torch.nn.Linear(hidden, d)

    def forward(self, x, t):
        return self.l2(torch.tanh(self.l1(torch.cat([x, t], 1))))


class MlpTx(Mlp):
    """torchdyn / torchdiffeq style: forward(t, x), t [B, 1] scales the hidden layer."""

    def forward(self, t, x):
        return self.l2(torch.tanh(self.l1(torch.cat([x, t], 1))[:, :16] * (1 + t)))


def _fixed_export(net, batch, opset=17):
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(batch, D), torch.zeros(batch, 1)), buf,
                          input_names=["x", "t"], output_names=["v"], opset_version=opset)
    return buf.getvalue()


def test_a_fixed_batch_mlp_export_converts_as_batch_polymorphic():
    torch.manual_seed(1)
    net = Mlp().eval()
    data = _fixed_export(net, 4)
    model = convert(data, test_vectors=0)        # self-check: the source runs 4 rows at a time
    assert model.self_check.status == "passed", model.self_check.line()
    y, t = RNG.normal(size=(7, D)), RNG.uniform(size=7)
    with torch.no_grad():
        want = net.double()(torch.from_numpy(y), torch.from_numpy(t[:, None])).numpy()
    got = reference.velocity(model, t, y)
    assert rel_err(got, want) <= 1e-6


class BatchMixer(torch.nn.Module):
    def forward(self, x, t):
        return x - x.mean(0, keepdim=True) * t      # reads across the batch


def test_a_fixed_batch_graph_that_uses_the_batch_is_refused_with_the_dynamic_axis_hint():
    with pytest.raises(ConversionError, match=r"fixed batch of 3.*export it with a dynamic "
                                              r"batch axis.*dynamic_axes"):
        from_onnx(_fixed_export(BatchMixer(), 3))


# ------------------------------------------------------------------------------ argument order

def test_argument_order_tx_converts_a_forward_t_x_module(tmp_path):
    torch.manual_seed(2)
    net = MlpTx().eval()
    path = tmp_path / "tx.pt"
    torch.save(net, path)
    out = tmp_path / "tx.sif"
    assert main([str(path), "-o", str(out), "--dim", str(D), "--argument-order", "tx",
                 "--test-vectors", "0"]) == 0
    from siflow_convert.torch_import import from_torch
    g = from_torch(net, D, argument_order="tx")
    assert g.self_check.status == "passed"
    y, t = RNG.normal(size=(5, D)), 0.3
    with torch.no_grad():
        want = net.double()(torch.full((5, 1), t, dtype=torch.float64), torch.from_numpy(y))
    assert rel_err(velocity(g, t, y), want.numpy()) <= 1e-6


def test_a_forward_t_x_module_called_as_x_t_gets_the_argument_order_hint(tmp_path, capsys):
    path = tmp_path / "tx.pt"
    torch.save(MlpTx().eval(), path)
    assert main([str(path), "-o", str(tmp_path / "o.sif"), "--dim", str(D)]) == 1
    err = capsys.readouterr().err
    assert "calling the module as module(x, t)" in err and "--argument-order tx" in err, err


def test_a_torch_saved_module_finds_its_class_on_pythonpath(tmp_path):
    import subprocess
    import sys
    from conftest import CONVERTER
    code = tmp_path / "code"
    code.mkdir()
    (code / "mynets.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.l = torch.nn.Linear(3, 2)\n"
        "    def forward(self, x, t):\n"
        "        return self.l(torch.cat([x, t], 1))\n")
    sys.path.insert(0, str(code))
    try:
        import mynets
        torch.save(mynets.Net(), tmp_path / "net.pt")
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("mynets", None)
    cmd = [sys.executable, "-m", "siflow_convert", "net.pt", "--dim", "2", "-o", "n.sif",
           "--test-vectors", "0"]
    r = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=CONVERTER),
                       capture_output=True, text=True)
    assert r.returncode == 1 and "No module named 'mynets'" in r.stderr and \
        "put its folder on PYTHONPATH" in r.stderr, r.stderr
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join([CONVERTER, str(code)])))
    assert r.returncode == 0, r.stderr
    assert "self-check against the PyTorch source: passed" in r.stdout, r.stdout


class Labelled(torch.nn.Module):
    """v(t, x, y) = W2 tanh(W1 [x, t] + b1 + E[y]) + b2."""

    def __init__(self, classes=5):
        super().__init__()
        self.emb = torch.nn.Embedding(classes, 8)
        self.l1, self.l2 = torch.nn.Linear(D + 1, 8), torch.nn.Linear(8, D)

    def forward(self, x, t, y):
        return self.l2(torch.tanh(self.l1(torch.cat([x, t], 1)) + self.emb(y)))


class Conditioned(Labelled):
    def __init__(self):
        super().__init__()
        self.lc = torch.nn.Linear(3, 8, bias=False)

    def forward(self, x, t, y, c):
        return self.l2(torch.tanh(self.l1(torch.cat([x, t], 1)) + self.emb(y) + self.lc(c)))


def test_a_module_taking_a_label_without_label_given_gets_the_signature_hint():
    from siflow_convert.torch_import import from_torch
    with pytest.raises(ConversionError, match=r"Labelled.forward\(x, t, y\) takes 3 argument\(s\)"
                                              r", but the converter calls module\(x, t\).*"
                                              r"label=True \(--label-input NAME\)"):
        from_torch(Labelled(), D)


def test_from_torch_with_a_label_converts_a_class_conditional_module():
    from siflow_convert import conditioning
    from siflow_convert.torch_import import from_torch
    torch.manual_seed(3)
    net = Labelled().eval()
    g = from_torch(net, D, label=True, null_label=4)
    assert g.self_check.status == "passed", g.self_check.line()
    ln = conditioning.label_node(g)
    assert ln is not None and ln.classes == 5 and ln.null_label == 4
    y, t, labels = RNG.normal(size=(6, D)), RNG.uniform(size=6), np.array([0, 1, 2, 3, 4, 2])
    m = conditioning.with_conditioning(FlowModel(graph=g), labels)
    with torch.no_grad():
        want = net.double()(torch.from_numpy(y), torch.from_numpy(t[:, None]),
                            torch.from_numpy(labels)).numpy()
    assert rel_err(reference.velocity(m, t, y), want) <= 1e-6


def test_from_torch_with_a_label_and_a_condition_vector(tmp_path):
    from siflow_convert import conditioning
    from siflow_convert.torch_import import from_torch
    torch.manual_seed(4)
    net = Conditioned().eval()
    g = from_torch(net, D, label=True, cond=3, null_label=0, null_cond=[0, 0, 0])
    assert g.self_check.status == "passed", g.self_check.line()
    y, t = RNG.normal(size=(4, D)), RNG.uniform(size=4)
    labels, c = np.array([1, 0, 4, 2]), RNG.normal(size=(4, 3))
    m = conditioning.with_conditioning(FlowModel(graph=g), labels, c)
    with torch.no_grad():
        want = net.double()(torch.from_numpy(y), torch.from_numpy(t[:, None]),
                            torch.from_numpy(labels), torch.from_numpy(c)).numpy()
    assert rel_err(reference.velocity(m, t, y), want) <= 1e-6
    # The CLI: --label-input marks the module's third argument; --null-cond gives c's width.
    path = tmp_path / "cond.pt"
    torch.save(net, path)
    assert main([str(path), "-o", str(tmp_path / "c.sif"), "--dim", str(D), "--label-input", "y",
                 "--null-label", "0", "--cond-input", "c", "--null-cond", "0,0,0",
                 "--test-vectors", "4"]) == 0


# ------------------------------------------------------------------------------ self-check

def _wrong_sin(self, node, ins, where):
    return self._unary("cos", node, ins, where)      # a broken mapping: Sin read as Cos


def test_the_self_check_refuses_a_wrong_onnx_mapping(monkeypatch, tmp_path, capsys):
    model = _mlp("Sin")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert main([str(path), "-o", str(tmp_path / "ok.sif")]) == 0
    assert "self-check against the ONNX source: passed" in capsys.readouterr().out
    monkeypatch.setattr(_Importer, "op_Sin", _wrong_sin)
    out = tmp_path / "bad.sif"
    assert main([str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "self-check failed: the converted graph disagrees with the ONNX source by" in err, err
    assert "worst at test point" in err and "coordinate" in err
    assert "the first converted node that disagrees with the ONNX value of its name: node 'act' " \
           "(cos)" in err, err
    assert not out.exists()
    # With the check off, the (wrong) graph is converted: proof that the check caught it.
    assert main([str(path), "-o", str(out), "--no-self-check"]) == 0


def test_the_self_check_refuses_a_wrong_torch_mapping(monkeypatch):
    from siflow_convert.torch_import import from_torch

    class SinNet(Mlp):
        def forward(self, x, t):
            return self.l2(torch.sin(self.l1(torch.cat([x, t], 1))))
    torch.manual_seed(5)
    net = SinNet().eval()
    assert from_torch(net, D).self_check.status == "passed"
    monkeypatch.setattr(_Importer, "op_Sin", _wrong_sin)
    with pytest.raises(ConversionError, match=r"self-check failed.*PyTorch source"):
        from_torch(net, D)


def test_the_self_check_passes_within_float32_rounding():
    model = convert(_mlp("Tanh"), test_vectors=0)
    r = model.self_check
    assert r.status == "passed" and r.error <= r.tolerance and r.error < 1e-12, r.line()


def test_an_op_the_evaluator_cannot_run_makes_the_check_skipped_not_passed(monkeypatch,
                                                                           tmp_path, capsys):
    monkeypatch.delitem(onnx_eval._UNARY, "Tanh")
    path = tmp_path / "m.onnx"
    path.write_bytes(_mlp("Tanh").SerializeToString())
    assert main([str(path), "-o", str(tmp_path / "m.sif"), "--fp16"]) == 0
    out = capsys.readouterr().out
    assert "self-check against the ONNX source: SKIPPED (the numpy ONNX evaluator cannot run " \
           "node 'act' (Tanh): op Tanh)" in out, out
    assert "weights stored as fp16: velocity error" in out     # --fp16: against fp32 weights


@pytest.mark.parametrize("opset", [11, 17])
def test_the_self_check_runs_image_and_labelled_onnx_sources(opset):
    from test_image_ops import UNetish
    torch.manual_seed(opset)
    net = UNetish().eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(2, 2, 6, 6), torch.zeros(2, 1)), buf,
                          input_names=["x", "t"], output_names=["v"], opset_version=opset,
                          dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}})
    r = convert(buf.getvalue(), test_vectors=0).self_check
    assert r.source == "ONNX" and r.status == "passed", r.line()
    lab = Labelled().eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(lab, (torch.zeros(3, D), torch.zeros(3, 1), torch.zeros(3).long()),
                          buf, input_names=["x", "t", "y"], output_names=["v"],
                          opset_version=opset,
                          dynamic_axes={k: {0: "B"} for k in ("x", "t", "y", "v")})
    r = convert(buf.getvalue(), test_vectors=0, null_label=0).self_check
    assert r.status == "passed", r.line()


def test_the_self_check_finds_a_weight_off_by_1e_3_in_an_image_net(monkeypatch):
    from test_image_ops import UNetish
    torch.manual_seed(6)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(UNetish().eval(), (torch.zeros(2, 2, 6, 6), torch.zeros(2, 1)), buf,
                          input_names=["x", "t"], output_names=["v"], opset_version=17,
                          dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}})
    plain = _Importer.op_ConvTranspose

    def off(self, node, ins, where):       # a mapping that scales the weights by 1.001
        out = plain(self, node, ins, where)
        self.graph.nodes[-1].weight = self.graph.nodes[-1].weight * 1.001
        return out
    monkeypatch.setattr(_Importer, "op_ConvTranspose", off)
    with pytest.raises(ConversionError, match=r"self-check failed.*the first converted node that "
                                              r"disagrees with the ONNX value of its name: node "
                                              r"'/up/ConvTranspose' \(conv_transpose2d\)"):
        convert(buf.getvalue(), test_vectors=0)


class Zoo(torch.nn.Module):
    """Most ops the converter maps, for the ONNX evaluator against torch in float64."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 6, 3, stride=2, padding=(1, 0), dilation=(1, 2))
        self.dw = torch.nn.Conv2d(6, 6, 3, padding=1, groups=3)
        self.norm = torch.nn.GroupNorm(3, 6)
        self.up = torch.nn.ConvTranspose2d(6, 2, 3, stride=2, padding=1, output_padding=1)
        self.ln = torch.nn.LayerNorm(8)
        self.emb = torch.nn.Linear(1, 6)

    def forward(self, x, t):
        h = F.silu(self.norm(self.conv(x))) * self.emb(t).reshape(-1, 6, 1, 1)
        h = F.max_pool2d(F.hardswish(self.dw(h)), 3, stride=1, padding=1)
        h = F.avg_pool2d(F.mish(h), 3, stride=1, padding=1, count_include_pad=False)
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.avg_pool2d(h, 2)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up(F.max_pool2d(h, 2))[:, :, :8, :8]
        seq = h.reshape(-1, 2, 64).transpose(1, 2).reshape(-1, 8, 16)[:, :, :8]
        q = self.ln(seq)
        att = torch.einsum("bts,bsc->btc", torch.softmax(q @ q.transpose(1, 2) / 2.0, dim=-1), q)
        a, b = att.chunk(2, dim=-1)
        out = torch.cat([F.gelu(a), torch.clamp(b, -0.5, 0.5)], -1)
        out = F.normalize(out.reshape(-1, 64), dim=-1) * torch.sqrt(torch.exp(t) + 1)
        return out.reshape(-1, 2, 4, 8).repeat(1, 1, 2, 1) + x


@pytest.mark.parametrize("opset", [12, 13, 17])     # Einsum exports from opset 12 on
def test_the_onnx_evaluator_matches_torch_float64(opset):
    import onnx
    torch.manual_seed(opset)
    net = Zoo().eval()
    with torch.no_grad():
        for p in (net.norm.weight, net.norm.bias, net.ln.weight, net.ln.bias):
            p.copy_(torch.randn_like(p))
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(2, 2, 8, 8), torch.zeros(2, 1)), buf,
                          input_names=["x", "t"], output_names=["v"], opset_version=opset,
                          dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}})
    model = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in model.graph.node}
    for op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "Resize", "MatMul", "Einsum",
               "Softmax", "InstanceNormalization", "Transpose"):
        assert op in ops, sorted(ops)
    x, t = RNG.normal(size=(2, 2, 8, 8)), RNG.uniform(size=(2, 1))  # reshapes keep batch 2
    got = onnx_eval.run(model, {"x": x, "t": t})[0]
    with torch.no_grad():
        want = net.double()(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    assert got.shape == want.shape
    # The export stores its own constants (GELU's sqrt(2), LayerNorm's eps) as float32: ~1e-9.
    assert rel_err(got, want) <= 1e-8


# ------------------------------------------------------------------------------ normalisation

def _convert_norm(tmp_path, *extra):
    path = tmp_path / "m.onnx"
    path.write_bytes(_mlp("Tanh").SerializeToString())
    return main([str(path), "-o", str(tmp_path / "n.sif"), "--test-vectors", "0", *extra])


def test_normalize_reads_npy_and_csv_with_the_same_result(tmp_path):
    data = RNG.normal(size=(50, D)) * [2.0, 0.5] + [1.0, -3.0]
    np.save(tmp_path / "d.npy", data)
    with open(tmp_path / "d.csv", "w") as f:
        f.write("# samples\nx0,x1\n")
        f.writelines(f"{a!r},{b!r}\n" for a, b in data)
    m1 = convert(_mlp("Tanh"), test_vectors=0, normalize=str(tmp_path / "d.npy"))
    m2 = convert(_mlp("Tanh"), test_vectors=0, normalize=str(tmp_path / "d.csv"))
    for m in (m1, m2):
        np.testing.assert_allclose(m.normalization.mean, data.mean(0), rtol=1e-14)
        np.testing.assert_allclose(m.normalization.std, data.std(0), rtol=1e-14)
    assert _convert_norm(tmp_path, "--normalize", str(tmp_path / "d.csv")) == 0


def test_normalize_refuses_bad_csv_data(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("1,2\n3,oops\n")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    (tmp_path / "const.csv").write_text("1,2\n1,3\n")
    for name, want in (("bad", "line 2 holds a field that is not a number"),
                       ("ragged", "line 2 has 1 values, the first row 2"),
                       ("const", r"feature(s) [0] are constant")):
        assert _convert_norm(tmp_path, "--normalize", str(tmp_path / f"{name}.csv")) == 1
        assert want in capsys.readouterr().err


def test_mean_and_std_values_scalar_or_per_coordinate():
    m = convert(_mlp("Tanh"), test_vectors=0, mean="1.5", std="2,0.25")
    np.testing.assert_array_equal(m.normalization.mean, [1.5, 1.5])
    np.testing.assert_array_equal(m.normalization.std, [2.0, 0.25])
    m = convert(_mlp("Tanh"), test_vectors=0, std="3")
    np.testing.assert_array_equal(m.normalization.mean, [0.0, 0.0])
    np.testing.assert_array_equal(m.normalization.std, [3.0, 3.0])


def test_mean_std_errors(tmp_path, capsys):
    np.save(tmp_path / "d.npy", RNG.normal(size=(5, D)))
    with pytest.raises(SystemExit) as e:
        _convert_norm(tmp_path, "--normalize", str(tmp_path / "d.npy"), "--mean", "0")
    assert e.value.code == 2
    assert "--normalize DATA and --mean/--std exclude each other" in capsys.readouterr().err
    for args, want in ((["--std", "1,0"], "--std: every standard deviation must be > 0"),
                       (["--mean", "1,2,3"], "--mean: 3 values given, the model has dim 2"),
                       (["--std", "a"], "--std: 'a' is not a number")):
        assert _convert_norm(tmp_path, *args) == 1
        assert want in capsys.readouterr().err
    with pytest.raises(ConversionError, match="exclude each other"):
        convert(_mlp("Tanh"), test_vectors=0, normalize=str(tmp_path / "d.npy"), std="1")


def test_help_lists_the_new_options(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for opt in ("--argument-order {xt,tx}", "--mean M", "--std S", "--no-self-check",
                "--normalize DATA"):
        assert opt in out, out
    assert os.path.basename(__file__)
