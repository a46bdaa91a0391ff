# SPDX-License-Identifier: Apache-2.0
"""The Exp op (format 1.1) through the converter: ONNX Exp and torch.exp map to it, the float64
reference evaluates it (value and tangent), the writer records format 1.1 only when a graph
contains it, the reader accepts 1.1, and the runtime's velocities match the reference."""
import re
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import rel_err, siflow_cli, velocity
from siflow_convert import ConversionError, from_onnx, ir, sif_io
from siflow_convert import reference as R

RNG = np.random.default_rng(13)
D = 3
Y = RNG.normal(size=(8, D))
T = 0.37


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def exp_onnx(w1, b1, w2):
    """v = Exp(Tanh([x, t] W1^T + b1)) W2^T: ONNX Gemm, Tanh, Exp, MatMul."""
    vi = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
    init = lambda name, a: numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)
    nodes = [helper.make_node("Concat", ["x", "t"], ["h"], axis=-1, name="cat"),
             helper.make_node("Gemm", ["h", "w1", "b1"], ["g"], transB=1, name="fc1"),
             helper.make_node("Tanh", ["g"], ["a"], name="act"),
             helper.make_node("Exp", ["a"], ["e"], name="exp"),
             helper.make_node("MatMul", ["e", "w2t"], ["v"], name="fc2")]
    g = helper.make_graph(nodes, "net", [vi("x", ("B", D)), vi("t", ("B", 1))],
                          [vi("v", ("B", D))],
                          [init("w1", w1), init("b1", b1), init("w2t", np.asarray(w2).T)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def exp_weights():
    rng = np.random.default_rng(5)
    return rng.normal(size=(6, D + 1)), rng.normal(size=6), rng.normal(size=(D, 6)) * 0.5


def exp_numpy(y, t, w1, b1, w2):
    h = np.concatenate([y, np.full((len(y), 1), t)], axis=1)
    return np.exp(np.tanh(h @ _f32(w1).T + _f32(b1))) @ _f32(w2).T


def test_onnx_exp_maps_to_the_exp_op_and_matches_numpy():
    w1, b1, w2 = exp_weights()
    g = from_onnx(exp_onnx(w1, b1, w2))
    assert [n.op for n in g.nodes].count("exp") == 1
    exp_node = next(n for n in g.nodes if n.op == "exp")
    assert exp_node.name == "exp" and all(getattr(exp_node, f) is None for f in sif_io.OPERANDS)
    got = velocity(g, T, Y)
    assert rel_err(got, exp_numpy(Y, T, w1, b1, w2)) <= 1e-12


def test_exp_of_a_constant_is_folded_not_emitted():
    vi = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
    c = numpy_helper.from_array(np.array([0.5, -1.0, 2.0], dtype=np.float32), "c")
    nodes = [helper.make_node("Exp", ["c"], ["ec"]), helper.make_node("Mul", ["x", "ec"], ["v"])]
    model = helper.make_model(
        helper.make_graph(nodes, "net", [vi("x", ("B", D)), vi("t", ("B", 1))],
                          [vi("v", ("B", D))], [c]),
        opset_imports=[helper.make_opsetid("", 17)])
    g = from_onnx(model)
    assert "exp" not in [n.op for n in g.nodes]
    want = Y * np.exp(_f32([0.5, -1.0, 2.0]))
    assert rel_err(velocity(g, T, Y), want) <= 1e-7   # the folded constant is stored as float32


def test_reference_exp_tangent_matches_central_differences():
    w1, b1, w2 = exp_weights()
    m = ir.FlowModel(graph=from_onnx(exp_onnx(w1, b1, w2)))
    t = np.full(len(Y), T)
    _, jac = R.evaluate(m, t, Y, tangents=True)
    h = 1e-6
    for p in range(D):
        e = np.zeros(D)
        e[p] = h
        fd = (R.velocity(m, t, Y + e) - R.velocity(m, t, Y - e)) / (2 * h)
        np.testing.assert_allclose(jac[:, p, :], fd, rtol=1e-6, atol=1e-8)


def test_an_exp_node_with_an_operand_or_two_inputs_is_refused():
    g = ir.Graph(dim=2)
    g.output = g.add(ir.Node("exp", [0], name="e", weight=np.eye(2)))
    with pytest.raises(ConversionError, match=r"node 0 \(exp, e\): has a weight, which exp does"):
        g.widths()
    g = ir.Graph(dim=2)
    g.output = g.add(ir.Node("exp", [0, 0], name="e"))
    with pytest.raises(ConversionError, match="needs exactly one input"):
        g.widths()


def _format_of(data):
    from siflow_convert._generated import Model as fb_model
    m = fb_model.Model.GetRootAs(data, 0)
    return m.FormatMajor(), m.FormatMinor()


def test_writer_records_1_1_only_for_a_graph_with_exp_and_the_reader_accepts_it():
    w1, b1, w2 = exp_weights()
    model = ir.FlowModel(graph=from_onnx(exp_onnx(w1, b1, w2)), name="exp net")
    data = sif_io.to_bytes(model)
    assert _format_of(data) == (1, 1)
    back = sif_io.from_bytes(data)
    assert [n.op for n in back.graph.nodes] == [n.op for n in model.graph.nodes]
    np.testing.assert_array_equal(R.velocity(back, T, Y),
                                  R.velocity(sif_io.stored(model), T, Y))
    plain = ir.Graph(dim=D)
    plain.output = plain.add(ir.Node("fc", [0], weight=np.eye(D)))
    assert _format_of(sif_io.to_bytes(ir.FlowModel(graph=plain))) == (1, 0)


def _runtime_velocity(cli, tmp_path, model, y, t):
    path = tmp_path / "m.sif"
    sif_io.write_sif(model, str(path))
    np.save(tmp_path / "y.npy", np.asarray(y, dtype=np.float32))
    np.save(tmp_path / "t.npy", np.asarray(t, dtype=np.float32))
    out = subprocess.run([cli, "velocity", str(path), "-i", str(tmp_path / "y.npy"), "-t",
                          str(tmp_path / "t.npy"), "-o", str(tmp_path / "v.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = subprocess.run([cli, "info", str(path)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    return np.load(tmp_path / "v.npy").astype(np.float64), info.stdout


def test_the_runtime_loads_a_converted_exp_model_and_matches_the_reference(tmp_path):
    cli = siflow_cli()
    w1, b1, w2 = exp_weights()
    model = ir.FlowModel(graph=from_onnx(exp_onnx(w1, b1, w2)))
    y = RNG.normal(size=(40, D)).astype(np.float32)
    t = RNG.uniform(size=40).astype(np.float32)
    got, info = _runtime_velocity(cli, tmp_path, model, y, t)
    assert re.search(r"format\s+1\.1\n", info), info
    # float32 weights and activations: a few 2^-24 relative through three layers.
    assert rel_err(got, R.velocity(sif_io.stored(model), t, y)) <= 1e-6
    # The float32 emulation of the reference reproduces the runtime's arithmetic closely too.
    v32, _ = R.evaluate(sif_io.stored(model), t, y, dtype=np.float32)
    assert rel_err(got, v32) <= 1e-6


def test_torch_exp_module_converts_and_the_runtime_matches_torch_float64(tmp_path):
    torch = pytest.importorskip("torch")
    from siflow_convert import from_torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = torch.nn.Linear(D + 1, 8)
            self.out = torch.nn.Linear(8, D)

        def forward(self, x, t):
            h = torch.tanh(self.inp(torch.cat([x, t], dim=-1)))
            return self.out(torch.exp(h)) * torch.exp(-t)

    torch.manual_seed(3)
    net = Net().eval()
    graph = from_torch(net, D)
    assert [n.op for n in graph.nodes].count("exp") == 2
    y = RNG.normal(size=(32, D))
    t = RNG.uniform(size=32)
    with torch.no_grad():
        net64 = Net().double().eval()
        net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
        want = net64(torch.from_numpy(y), torch.from_numpy(t[:, None])).numpy()
    model = ir.FlowModel(graph=graph)
    # The float64 reference on the float32 weights is torch's float64 forward.
    assert rel_err(R.velocity(model, t, y), want) <= 1e-12
    cli = siflow_cli()
    got, _ = _runtime_velocity(cli, tmp_path, model, y.astype(np.float32), t.astype(np.float32))
    yf, tf = _f32(y), _f32(t)
    with torch.no_grad():
        want32 = net64(torch.from_numpy(yf), torch.from_numpy(tf[:, None])).numpy()
    assert rel_err(got, want32) <= 1e-6
