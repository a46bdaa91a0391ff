# SPDX-License-Identifier: Apache-2.0
"""The layout ops (format 1.4) through the converter: ONNX Split and a contiguous Slice/Gather of
the feature axis (torch's chunk, split and x[:, i:j]) become Slice nodes with no weights instead of
0/1 dense layers; the float64 reference evaluates Reshape/Transpose/Slice and their tangents; the
writer records the layout fields, x_shape and format 1.4, the reader gives them back; the runtime's
velocities match the reference and torch float64."""
import re
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import rel_err, siflow_cli
from siflow_convert import ConversionError, from_onnx, ir, sif_io
from siflow_convert import reference as R

RNG = np.random.default_rng(17)
D = 4


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _init(name, a, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(a, dtype=dtype), name)


def split_onnx(opset, w1, w2, sizes=(3, 3)):
    """v = [tanh(a), sigmoid(b)] W2^T with a, b = Split(Gemm([x, t]), sizes) on the last axis."""
    split_args = {}
    inits = [_init("w1", w1), _init("w2t", np.asarray(w2).T)]
    inputs = ["g"]
    if opset >= 13:
        inits.append(_init("sizes", sizes, np.int64))
        inputs.append("sizes")
    else:
        split_args["split"] = list(sizes)
    nodes = [helper.make_node("Concat", ["x", "t"], ["h"], axis=-1, name="cat"),
             helper.make_node("Gemm", ["h", "w1"], ["g"], transB=1, name="fc1"),
             helper.make_node("Split", inputs, ["a", "b"], axis=-1, name="chunk", **split_args),
             helper.make_node("Tanh", ["a"], ["ta"], name="tanh"),
             helper.make_node("Sigmoid", ["b"], ["sb"], name="sigmoid"),
             helper.make_node("Concat", ["ta", "sb"], ["c"], axis=-1, name="cat2"),
             helper.make_node("MatMul", ["c", "w2t"], ["v"], name="fc2")]
    g = helper.make_graph(nodes, "net", [_vi("x", ("B", D)), _vi("t", ("B", 1))],
                          [_vi("v", ("B", D))], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def split_weights(width=6):
    rng = np.random.default_rng(5)
    return rng.normal(size=(width, D + 1)), rng.normal(size=(D, width)) * 0.5


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def split_numpy(y, t, w1, w2, sizes=(3, 3)):
    h = np.concatenate([y, np.full((len(y), 1), t)], axis=1) @ _f32(w1).T
    a, b = h[:, :sizes[0]], h[:, sizes[0]:]
    return np.concatenate([np.tanh(a), 1 / (1 + np.exp(-b))], axis=1) @ _f32(w2).T


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_split_becomes_slice_nodes_without_weights(opset):
    w1, w2 = split_weights()
    g = from_onnx(split_onnx(opset, w1, w2))
    ops = [n.op for n in g.nodes]
    assert ops.count("slice") == 2 and ops.count("fc") == 2, ops
    slices = [n for n in g.nodes if n.op == "slice"]
    assert [(s.axis, s.start, s.end) for s in slices] == [(-1, 0, 3), (-1, 3, 6)]
    assert all(getattr(s, f) is None for s in slices for f in sif_io.OPERANDS)
    y = RNG.normal(size=(8, D))
    got = R.velocity(ir.FlowModel(graph=g), 0.3, y)
    assert rel_err(got, split_numpy(y, 0.3, w1, w2)) <= 1e-12


def test_uneven_split_sizes_and_a_bad_split_are_handled():
    w1, w2 = split_weights(7)
    g = from_onnx(split_onnx(13, w1, w2, sizes=(2, 5)))
    assert [(n.start, n.end) for n in g.nodes if n.op == "slice"] == [(0, 2), (2, 7)]
    y = RNG.normal(size=(5, D))
    assert rel_err(R.velocity(ir.FlowModel(graph=g), 0.6, y),
                   split_numpy(y, 0.6, w1, w2, sizes=(2, 5))) <= 1e-12
    with pytest.raises(ConversionError, match=r"Split sizes \[2, 4\] do not cover the 7"):
        from_onnx(split_onnx(13, w1, w2, sizes=(2, 4)))


def test_a_non_contiguous_gather_stays_a_selection_layer():
    """Columns [2, 0] are not a range: still a 0/1 fc (the one case Slice cannot express)."""
    nodes = [helper.make_node("Gather", ["x", "idx"], ["g"], axis=1, name="pick"),
             helper.make_node("Concat", ["g", "t"], ["h"], axis=-1, name="cat"),
             helper.make_node("MatMul", ["h", "w"], ["v"], name="fc")]
    w = RNG.normal(size=(3, D))
    g = helper.make_graph(nodes, "net", [_vi("x", ("B", D)), _vi("t", ("B", 1))],
                          [_vi("v", ("B", D))],
                          [_init("idx", [2, 0], np.int64), _init("w", w)])
    graph = from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op for n in graph.nodes] == ["fc", "concat", "fc"]
    contiguous = helper.make_graph(
        [helper.make_node("Gather", ["x", "idx"], ["g"], axis=1, name="pick")] + nodes[1:],
        "net", [_vi("x", ("B", D)), _vi("t", ("B", 1))], [_vi("v", ("B", D))],
        [_init("idx", [1, 2], np.int64), _init("w", w)])
    graph = from_onnx(helper.make_model(contiguous,
                                        opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op for n in graph.nodes] == ["slice", "concat", "fc"]


def _image_model():
    """x of shape [2, 2, 3] (d = 12): transpose, slice of a middle axis, reshape, a dense layer."""
    rng = np.random.default_rng(9)
    g = ir.Graph(dim=12, x_shape=[2, 2, 3])
    tr = g.add(ir.Node("transpose", [0], name="hwc", perm=[2, 0, 1]))            # [3, 2, 2]
    sl = g.add(ir.Node("slice", [tr], name="mid", axis=1, start=1, end=2))      # [3, 1, 2]
    flat = g.add(ir.Node("reshape", [sl], name="flat", shape=[6]))
    h = g.add(ir.Node("concat", [flat, 1]))
    h = g.add(ir.Node("fc", [h], weight=rng.normal(size=(12, 7)) * 0.5, bias=rng.normal(size=12)))
    h = g.add(ir.Node("unary", [h], unary="tanh"))
    g.output = g.add(ir.Node("reshape", [h], name="image", shape=[2, 2, 3]))
    return ir.FlowModel(graph=g, name="layout")


def _numpy_image(y, t, m):
    nodes = m.graph.nodes
    x = y.reshape(-1, 2, 2, 3).transpose(0, 3, 1, 2)[:, :, 1:2, :].reshape(len(y), 6)
    h = np.concatenate([x, np.full((len(y), 1), t)], axis=1) @ nodes[4].weight.T + nodes[4].bias
    return np.tanh(h)


def test_reference_layout_ops_match_numpy_and_their_tangents_match_differences():
    m = _image_model()
    assert m.graph.shapes()[2:5] == [[3, 2, 2], [3, 1, 2], [6]]
    y = RNG.normal(size=(6, 12))
    v, jac = R.evaluate(m, 0.4, y, tangents=True)
    assert rel_err(v, _numpy_image(y, 0.4, m)) <= 1e-12
    h = 1e-6
    for p in range(12):
        e = np.zeros(12)
        e[p] = h
        fd = (_numpy_image(y + e, 0.4, m) - _numpy_image(y - e, 0.4, m)) / (2 * h)
        assert np.max(np.abs(jac[:, p, :] - fd)) <= 1e-8


def test_layout_graphs_are_checked_by_name():
    g = ir.Graph(dim=6, x_shape=[2, 3])
    g.output = g.add(ir.Node("transpose", [0], perm=[0, 0]))
    with pytest.raises(ConversionError, match=r"perm \[0, 0\] does not permute"):
        g.widths()
    g = ir.Graph(dim=6, x_shape=[2, 3])
    g.output = g.add(ir.Node("slice", [0], axis=1, start=2, end=4))
    with pytest.raises(ConversionError, match=r"slice \[2, 4\) of axis 1 is empty or outside"):
        g.widths()
    g = ir.Graph(dim=6, x_shape=[2, 3])
    g.output = g.add(ir.Node("reshape", [0], shape=[4, 2]))
    with pytest.raises(ConversionError, match=r"reshape to \[4, 2\] does not hold"):
        g.widths()
    with pytest.raises(ConversionError, match=r"x_shape \[4, 2\] does not hold dim 6"):
        ir.Graph(dim=6, x_shape=[4, 2], nodes=[ir.Node("unary", [0])], output=2).widths()


def test_writer_records_1_4_with_the_layout_fields_and_the_reader_gives_them_back():
    m = _image_model()
    data = sif_io.to_bytes(m)
    back = sif_io.from_bytes(data)
    assert back.graph.x_shape == [2, 2, 3]
    got = [(n.op, n.perm, n.axis, n.start, n.end, n.shape) for n in back.graph.nodes
           if n.op in ir.LAYOUT_OPS]
    assert got == [("transpose", [2, 0, 1], -1, 0, 0, None), ("slice", None, 1, 1, 2, None),
                   ("reshape", None, -1, 0, 0, [6]), ("reshape", None, -1, 0, 0, [2, 2, 3])]
    assert sif_io.required_minor(m.graph) == 4
    plain = ir.Graph(dim=2, nodes=[ir.Node("unary", [0], unary="tanh")], output=2)
    assert sif_io.required_minor(plain) == 0


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


def test_the_runtime_runs_the_layout_ops_as_the_reference(tmp_path):
    cli = siflow_cli()
    m = _image_model()
    y = RNG.normal(size=(20, 12)).astype(np.float32)
    t = RNG.uniform(size=20).astype(np.float32)
    got, info = _runtime_velocity(cli, tmp_path, m, y, t)
    assert re.search(r"format\s+1\.4\n", info), info
    assert re.search(r"x shape\s+\[2, 2, 3\]\n", info), info
    assert got.shape == (20, 2, 2, 3)   # written in the model's shape
    want = R.velocity(sif_io.stored(m), t, y).reshape(20, 2, 2, 3)
    assert rel_err(got, want) <= 1e-6


def test_torch_chunk_converts_to_slices_and_the_runtime_matches_torch_float64(tmp_path):
    torch = pytest.importorskip("torch")
    from siflow_convert import from_torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = torch.nn.Linear(D + 1, 8)
            self.out = torch.nn.Linear(6, D)

        def forward(self, x, t):
            a, b = self.inp(torch.cat([x, t], dim=-1)).chunk(2, dim=-1)
            return self.out(torch.cat([torch.tanh(a) * torch.sigmoid(b), x[:, 1:3]], dim=-1))

    torch.manual_seed(4)
    net = Net().eval()
    graph = from_torch(net, D)
    ops = [n.op for n in graph.nodes]
    # Two fc layers only: the chunk and x[:, 1:3] are Slice nodes, no selection matrices.
    assert ops.count("fc") == 2 and ops.count("slice") == 3, ops
    y = RNG.normal(size=(16, D))
    t = RNG.uniform(size=16)
    net64 = Net().double().eval()
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    with torch.no_grad():
        want = net64(torch.from_numpy(y), torch.from_numpy(t[:, None])).numpy()
    model = ir.FlowModel(graph=graph)
    assert rel_err(R.velocity(model, t, y), want) <= 1e-12
    cli = siflow_cli()
    got, _ = _runtime_velocity(cli, tmp_path, model, y.astype(np.float32), t.astype(np.float32))
    yf, tf = _f32(y), _f32(t)
    with torch.no_grad():
        want32 = net64(torch.from_numpy(yf), torch.from_numpy(tf[:, None])).numpy()
    assert rel_err(got, want32) <= 1e-6


class _ImageNet:
    """x [B, 2, 4, 4]: a channel chunk, a transpose of the last two axes, a flatten, a dense layer
    with t, a reshape back to the image and a skip connection."""

    @staticmethod
    def make(torch):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(17, 32)

            def forward(self, x, t):
                b = x.shape[0]
                first, second = x.chunk(2, dim=1)
                h = (first.transpose(2, 3) * torch.tanh(second)).reshape(b, -1)
                z = self.fc(torch.cat([h, t], dim=-1))
                return z.reshape(b, 2, 4, 4) + x
        return Net


def test_torch_image_net_converts_with_its_shapes_and_matches_torch_float64(tmp_path):
    torch = pytest.importorskip("torch")
    from siflow_convert import from_torch
    Net = _ImageNet.make(torch)
    torch.manual_seed(8)
    net = Net().eval()
    graph = from_torch(net, (2, 4, 4))
    assert graph.x_shape == [2, 4, 4]
    ops = [n.op for n in graph.nodes]
    assert ops.count("transpose") == 1 and ops.count("fc") == 1, ops
    assert "slice" in ops, ops
    y = RNG.normal(size=(6, 32))
    t = RNG.uniform(size=6)
    net64 = Net().double().eval()
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    with torch.no_grad():
        want = net64(torch.from_numpy(y.reshape(6, 2, 4, 4)),
                     torch.from_numpy(t[:, None])).numpy().reshape(6, 32)
    model = ir.FlowModel(graph=graph)
    assert rel_err(R.velocity(model, t, y), want) <= 1e-12
    assert sif_io.required_minor(graph) == 4
    cli = siflow_cli()
    got, info = _runtime_velocity(cli, tmp_path, model, y.astype(np.float32).reshape(6, 2, 4, 4),
                                  t.astype(np.float32))
    assert got.shape == (6, 2, 4, 4)
    assert re.search(r"x shape\s+\[2, 4, 4\]\n", info), info
    yf, tf = _f32(y), _f32(t)
    with torch.no_grad():
        want32 = net64(torch.from_numpy(yf.reshape(6, 2, 4, 4)),
                       torch.from_numpy(tf[:, None])).numpy()
    assert rel_err(got, want32) <= 1e-6


def test_a_fixed_batch_export_is_batch_polymorphic_where_the_graph_allows():
    torch = pytest.importorskip("torch")
    import io
    Net = _ImageNet.make(torch)
    torch.manual_seed(8)
    net = Net().eval()
    buf = io.BytesIO()
    with torch.no_grad():   # batch 1, no dynamic_axes: every shape in the graph is fixed
        torch.onnx.export(net, (torch.zeros(1, 2, 4, 4), torch.zeros(1, 1)), buf,
                          input_names=["x", "t"], output_names=["v"], opset_version=17)
    graph = from_onnx(buf.getvalue())
    y = RNG.normal(size=(5, 32))
    t = RNG.uniform(size=5)
    with torch.no_grad():
        want = net.double()(torch.from_numpy(y.reshape(5, 2, 4, 4)),
                            torch.from_numpy(t[:, None])).numpy().reshape(5, 32)
    assert rel_err(R.velocity(ir.FlowModel(graph=graph), t, y), want) <= 1e-6


def test_a_graph_mixing_the_batch_with_features_names_the_dynamic_axis_fix():
    """Reshape [1, 2, 4, 4] -> [2, 16] merges the fixed batch of 1 into the features."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"], name="merge"),
             helper.make_node("Reshape", ["r", "back"], ["v"], name="back")]
    g = helper.make_graph(nodes, "net", [_vi("x", (1, 2, 4, 4)), _vi("t", (1, 1))],
                          [_vi("v", (1, 2, 4, 4))],
                          [_init("s", [2, 16], np.int64), _init("back", [1, 2, 4, 4], np.int64)])
    with pytest.raises(ConversionError, match=r"merge.*moves values across the batch axis.*"
                                              r"fixed batch of 1.*dynamic batch axis"):
        from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_transpose_moving_the_batch_names_multihead_attention():
    nodes = [helper.make_node("Transpose", ["x", ], ["tr"], perm=[1, 0, 2], name="seq_first"),
             helper.make_node("Transpose", ["tr"], ["v"], perm=[1, 0, 2], name="back")]
    g = helper.make_graph(nodes, "net", [_vi("x", ("B", 3, 2)), _vi("t", ("B", 1))],
                          [_vi("v", ("B", 3, 2))], [])
    with pytest.raises(ConversionError, match=r"seq_first.*moves the batch axis off axis 0.*"
                                              r"nn.MultiheadAttention"):
        from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
