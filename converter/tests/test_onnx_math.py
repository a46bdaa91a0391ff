# SPDX-License-Identifier: Apache-2.0
"""Format 1.4's elementwise maths through the converter: torch modules using exp, clamp/ReLU6,
sqrt, rsqrt-RMSNorm, F.normalize, log, abs, reciprocal, pow, hardswish, mish and softmax,
exported by torch.onnx at opsets 11-17, converted and evaluated by the float64 reference against
torch in float64; the same models on the runtime (velocity within 1e-4 relative of the
reference); the .sif round trip of the new fields; refusals named."""
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import rel_err, siflow_cli, velocity
from siflow_convert import ConversionError, from_onnx, ir, sif_io
from siflow_convert import reference as R

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from siflow_convert import from_torch  # noqa: E402

D = 4
# float64 reference against float64 torch on the same float32 weights; the export stores the
# literal constants (0.1, 1e-6, 1.5, ...) as float32, which moves v by about 1e-8 relative.
REL = 1e-6


class MathNet(nn.Module):
    """An MLP using every op of the elementwise set; `hard_swish` needs opset 14."""

    def __init__(self, hard_swish=True):
        super().__init__()
        self.fc1 = nn.Linear(D + 1, 12)
        self.fc2 = nn.Linear(12, 12)
        self.fc3 = nn.Linear(12, D)
        self.g = nn.Parameter(torch.linspace(0.5, 1.5, 12))
        self.hard_swish = hard_swish

    def forward(self, x, t):
        h = self.fc1(torch.cat([x, t], 1))
        h = torch.clamp(h, -2.0, 2.5) + F.relu6(h)                            # Clip
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.g  # RMSNorm
        h = self.fc2(h)
        a = F.hardswish(h) if self.hard_swish else F.silu(h)
        h = a + F.mish(h)                                                    # Softplus·Tanh·Mul
        h = F.normalize(h, dim=-1) * 3.0                    # ReduceL2, Clip, Expand, Div
        h = (torch.sqrt(h.abs() + 0.1) + torch.log(h.abs() + 1.0) + torch.exp(-h)
             + 1.0 / (h * h + 1.0) + (h.abs() + 0.5).pow(1.5) + h.pow(-2.0) * 0.01 / (h.abs() + 1))
        h = torch.softmax(h, -1) * 4.0 + h / (t + 1.0)                      # Softmax, Div
        return self.fc3(h)


def torch_v(module, y, t):
    m = module.double()
    with torch.no_grad():
        yy = torch.tensor(y, dtype=torch.float64)
        out = m(yy, torch.full((len(y), 1), t, dtype=torch.float64)).numpy()
    module.float()
    return out


def points():
    return np.random.default_rng(3).normal(size=(9, D)) * 1.5


@pytest.mark.parametrize("opset", [11, 13, 14, 17])
def test_math_mlp_matches_torch_in_float64(opset):
    torch.manual_seed(0)
    module = MathNet(hard_swish=opset >= 14)
    g = from_torch(module, D, opset=opset)
    ops = {n.op for n in g.nodes} | {n.unary for n in g.nodes if n.op == "unary"}
    for want in ("clip", "div", "reduce", "softmax", "pow", "log", "sqrt", "exp", "abs"):
        assert want in ops, (want, sorted(ops))
    if opset >= 14:
        assert "hard_swish" in ops
    # F.mish exports as Softplus, Tanh, Mul before opset 18: one Mish node, nothing left over.
    assert "mish" in ops and "softplus" not in ops
    y = points()
    for t in (0.0, 0.37, 1.0):
        err = rel_err(velocity(g, t, y), torch_v(module, y, t))
        assert err <= REL, (opset, t, err)


def test_f_normalize_divides_by_the_norm_without_a_widening_node():
    class Normalize(nn.Module):
        def forward(self, x, t):
            return F.normalize(x, dim=-1) * (t + 1.0)

    g = from_torch(Normalize(), D, opset=13)
    div = next(n for n in g.nodes if n.op == "div")
    red = g.nodes[div.inputs[1] - 2]
    # The divisor is the clipped [B, 1] norm itself: Expand's widening folded into Div.
    assert red.op == "clip" and g.nodes[red.inputs[0] - 2].op == "reduce"
    assert not any(n.op == "mul" and n.constant is not None and np.all(n.constant == 1.0)
                   for n in g.nodes)
    y = points()
    assert rel_err(velocity(g, 0.5, y), torch_v(Normalize(), y, 0.5)) <= REL


def test_new_fields_round_trip_and_need_format_1_4():
    torch.manual_seed(0)
    g = from_torch(MathNet(), D, opset=17)
    model = ir.FlowModel(graph=g)
    data = sif_io.to_bytes(model)
    back = sif_io.from_bytes(data)
    for a, b in zip(g.nodes, back.graph.nodes):
        assert (a.op, a.unary, a.reduce, a.axis) == (b.op, b.unary, b.reduce, b.axis)
        assert np.float32(a.exponent) == b.exponent
        assert np.float32(a.low) == b.low and np.float32(a.high) == b.high
    assert sif_io.required_minor(g) == 4
    y = points()
    np.testing.assert_array_equal(R.velocity(back, 0.3, y),
                                  R.velocity(sif_io.stored(model), 0.3, y))


def test_reference_tangents_of_the_new_ops_match_central_differences():
    torch.manual_seed(1)
    m = ir.FlowModel(graph=from_torch(MathNet(), D, opset=17))
    y = points()[:3]
    t = np.full(len(y), 0.4)
    _, jac = R.evaluate(m, t, y, tangents=True)
    h = 1e-6
    for k in range(D):
        e = np.zeros(D)
        e[k] = h
        fd = (R.evaluate(m, t, y + e)[0] - R.evaluate(m, t, y - e)[0]) / (2 * h)
        assert np.max(np.abs(jac[:, k, :] - fd)) <= 1e-6 * max(1.0, np.max(np.abs(fd)))


def test_the_runtime_matches_the_reference_on_the_math_mlp(tmp_path):
    cli = siflow_cli()
    torch.manual_seed(0)
    model = ir.FlowModel(graph=from_torch(MathNet(), D, opset=17))
    rng = np.random.default_rng(4)
    y = (rng.normal(size=(32, D)) * 1.5).astype(np.float32)
    t = rng.uniform(size=32).astype(np.float32)
    path = tmp_path / "m.sif"
    sif_io.write_sif(model, str(path))
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "t.npy", t)
    out = subprocess.run([cli, "velocity", str(path), "-i", str(tmp_path / "y.npy"), "-t",
                          str(tmp_path / "t.npy"), "-o", str(tmp_path / "v.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = np.load(tmp_path / "v.npy").astype(np.float64)
    want = np.stack([R.velocity(model, float(ti), yi[None].astype(np.float64))[0]
                     for ti, yi in zip(t, y)])
    err = rel_err(got, want)
    assert err <= 1e-4, err


def _onnx(nodes, inits=(), opset=13):
    vi = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
    init = [numpy_helper.from_array(np.asarray(a, dtype=np.float32), n) for n, a in inits]
    g = helper.make_graph(nodes, "net", [vi("x", ("B", D)), vi("t", ("B", 1))],
                          [vi("v", ("B", D))], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_clip_attributes_before_opset_11_and_inputs_after():
    old = _onnx([helper.make_node("Clip", ["x"], ["v"], min=-0.5, max=0.75)], opset=10)
    new = _onnx([helper.make_node("Clip", ["x", "lo", "hi"], ["v"])],
                inits=[("lo", -0.5), ("hi", 0.75)], opset=13)
    y = points()
    for model in (old, new):
        g = from_onnx(model)
        clip = next(n for n in g.nodes if n.op == "clip")
        assert (clip.low, clip.high) == (-0.5, 0.75)
        np.testing.assert_array_equal(velocity(g, 0.5, y), np.clip(y, -0.5, 0.75))
    one_sided = _onnx([helper.make_node("Clip", ["x", "", "hi"], ["v"])], inits=[("hi", 1.0)])
    clip = next(n for n in from_onnx(one_sided).nodes if n.op == "clip")
    assert clip.low == -np.inf and clip.high == 1.0


def test_refusals_name_the_node_and_cause():
    with pytest.raises(ConversionError, match=r"\(Clip\): Clip min must be a constant"):
        from_onnx(_onnx([helper.make_node("Clip", ["x", "t"], ["v"], name="c")]))
    with pytest.raises(ConversionError, match=r"Clip bounds min 1.0 and max -1.0"):
        from_onnx(_onnx([helper.make_node("Clip", ["x", "lo", "hi"], ["v"])],
                        inits=[("lo", 1.0), ("hi", -1.0)]))
    with pytest.raises(ConversionError, match=r"\(Softmax\): Softmax over axis 0"):
        from_onnx(_onnx([helper.make_node("Softmax", ["x"], ["v"], axis=0)]))
    with pytest.raises(ConversionError,
                       match=r"\(ReduceL2\): ReduceL2 over axis 0 of a \[B, 4\] tensor"):
        from_onnx(_onnx([helper.make_node("ReduceL2", ["x"], ["r"], axes=[0]),
                         helper.make_node("Div", ["x", "r"], ["v"])]))
