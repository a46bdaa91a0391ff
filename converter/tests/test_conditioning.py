# SPDX-License-Identifier: Apache-2.0
"""Class labels and classifier-free guidance through the converter (format 1.4): a small
class-conditional MLP with nn.Embedding exported from PyTorch converts to LabelInput + Embedding;
the float64 reference matches PyTorch in float64 for the conditional, null-label and guided
velocities and integrates the guided ODE; the file round-trips with its test vectors' labels and
guidance weight (format 1.4), and the runtime (siflow velocity / validate / logprob) agrees.
Every refusal of a bad label input is tested."""
import io
import os
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import rel_err, siflow_cli
from siflow_convert import ConversionError, from_onnx, ir, sif_io
from siflow_convert import conditioning as C
from siflow_convert import reference as R

torch = pytest.importorskip("torch")

CLASSES, NULL = 4, 3


class Net(torch.nn.Module):
    """v(t, x, y) = W2 tanh(W1 [x, t] + b1 + E[y]) + b2."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(CLASSES, 8)
        self.l1 = torch.nn.Linear(3, 8)
        self.l2 = torch.nn.Linear(8, 2)

    def forward(self, x, t, y):
        return self.l2(torch.tanh(self.l1(torch.cat([x, t], dim=1)) + self.emb(y)))


@pytest.fixture(scope="module")
def converted():
    torch.manual_seed(3)
    net = Net().float()
    buf = io.BytesIO()
    x, t, y = torch.randn(3, 2), torch.rand(3, 1), torch.tensor([0, 1, 3])
    torch.onnx.export(net, (x, t, y), buf, input_names=["x", "t", "y"], output_names=["v"],
                      dynamic_axes={k: {0: "B"} for k in ("x", "t", "y", "v")},
                      opset_version=13)
    graph = from_onnx(buf.getvalue(), null_label=NULL)
    # The float32 weights in float64: what the file stores and the reference evaluates.
    return net.double(), graph, buf.getvalue()


def torch_v(net, x, t, labels):
    with torch.no_grad():
        return net(torch.tensor(x), torch.full((len(x), 1), t, dtype=torch.float64),
                   torch.tensor(labels)).numpy()


RNG = np.random.default_rng(5)
X = RNG.normal(size=(7, 2))
LABELS = np.array([0, 1, 2, 0, 1, 2, 1])


def test_embedding_becomes_label_input_and_embedding(converted):
    _, graph, _ = converted
    ops = [n.op for n in graph.nodes]
    assert "label_input" in ops and "embedding" in ops
    label = graph.nodes[ops.index("label_input")]
    assert label.classes == CLASSES and label.null_label == NULL


def test_reference_matches_torch_float64_with_guidance(converted):
    net, graph, _ = converted
    m = ir.FlowModel(graph=graph)
    vy = torch_v(net, X, 0.4, LABELS)
    v0 = torch_v(net, X, 0.4, np.full(len(X), NULL))
    for w, want in ((1.0, vy), (0.0, v0), (2.5, v0 + 2.5 * (vy - v0)), (-0.5, v0 - 0.5 * (vy - v0))):
        got = R.velocity(C.with_conditioning(m, labels=LABELS, guidance=w), 0.4, X)
        assert rel_err(got, want) < 1e-12, w
    with pytest.raises(ConversionError, match="takes a class label"):
        R.velocity(m, 0.4, X)
    with pytest.raises(ConversionError, match="none was given"):
        R.velocity(C.with_conditioning(m), 0.4, X)


def test_guided_divergence_is_the_guided_fields(converted):
    net, graph, _ = converted
    m = C.with_conditioning(ir.FlowModel(graph=graph), labels=LABELS, guidance=2.0)
    div = R.divergence(m, 0.3, X)
    # Central differences of torch's guided velocity in float64.
    h, fd = 1e-6, np.zeros(len(X))
    for k in range(2):
        e = np.zeros(2)
        e[k] = h
        vp = [torch_v(net, X + s * e, 0.3, lab) for s in (1, -1) for lab in (LABELS, [NULL] * 7)]
        gp = vp[1] + 2.0 * (vp[0] - vp[1])
        gm = vp[3] + 2.0 * (vp[2] - vp[3])
        fd += (gp[:, k] - gm[:, k]) / (2 * h)
    assert np.max(np.abs(div - fd)) < 1e-6


def test_file_round_trip_records_format_1_4_and_test_vector_conditioning(converted):
    _, graph, _ = converted
    m = ir.FlowModel(graph=graph)
    mc = C.with_conditioning(m, labels=LABELS, guidance=2.0)
    v = R.velocity(mc, 0.5, X)
    m.test_vectors = ir.TestVectors(t=np.full(len(X), 0.5), y=X, v=v, velocity_tolerance=1e-5,
                                    labels=LABELS, guidance=2.0)
    data = sif_io.to_bytes(m)
    back = sif_io.from_bytes(data)
    assert sif_io.required_minor(back.graph, back.test_vectors) == 4
    assert list(back.test_vectors.labels) == list(LABELS)
    assert back.test_vectors.guidance == 2.0
    label = next(n for n in back.graph.nodes if n.op == "label_input")
    assert (label.classes, label.null_label) == (CLASSES, NULL)


def test_runtime_agrees(converted, tmp_path):
    cli = siflow_cli()
    net, graph, _ = converted
    m = ir.FlowModel(graph=graph)
    stored = sif_io.stored(m)
    v = R.velocity(C.with_conditioning(stored, labels=LABELS, guidance=2.0), 0.5, X)
    m.test_vectors = ir.TestVectors(t=np.full(len(X), 0.5), y=X, v=v, velocity_tolerance=1e-5,
                                    labels=LABELS, guidance=2.0)
    path = str(tmp_path / "c.sif")
    sif_io.write_sif(m, path)
    run = lambda *a: subprocess.run([cli, *a], capture_output=True, text=True)
    r = run("validate", path)
    assert r.returncode == 0, r.stdout + r.stderr
    np.savetxt(tmp_path / "x.csv", X.astype(np.float32), delimiter=",")
    np.savetxt(tmp_path / "y.csv", LABELS, fmt="%d")
    r = run("velocity", path, "-i", str(tmp_path / "x.csv"), "-t", "0.5", "--labels",
            str(tmp_path / "y.csv"), "--guidance", "2", "-o", str(tmp_path / "v.csv"))
    assert r.returncode == 0, r.stderr
    got = np.loadtxt(tmp_path / "v.csv", delimiter=",", skiprows=1)
    vy = torch_v(net, X.astype(np.float32).astype(np.float64), 0.5, LABELS)
    v0 = torch_v(net, X.astype(np.float32).astype(np.float64), 0.5, [NULL] * 7)
    assert rel_err(got, v0 + 2.0 * (vy - v0)) < 1e-5
    # Guided log-likelihoods: the runtime's exact divergence against the float64 reference.
    r = run("logprob", path, "-i", str(tmp_path / "x.csv"), "--labels", str(tmp_path / "y.csv"),
            "--guidance", "2", "--steps", "40", "-o", str(tmp_path / "lp.csv"))
    assert r.returncode == 0, r.stderr
    lp = np.loadtxt(tmp_path / "lp.csv", skiprows=1)
    ref = R.log_prob(C.with_conditioning(stored, labels=LABELS, guidance=2.0),
                     X.astype(np.float32), method="rk4", steps=40)
    assert np.max(np.abs(lp - ref)) < 5e-3


def _label_graph(label_type=TensorProto.INT64, use="Gather", table_rows=4, label_shape=("B",)):
    vi = lambda name, shape, ty=TensorProto.FLOAT: helper.make_tensor_value_info(name, ty,
                                                                                list(shape))
    init = lambda name, a: numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)
    if use == "Gather":
        use_node = helper.make_node("Gather", ["table", "y"], ["e"], axis=0)
    else:
        use_node = helper.make_node("Cast", ["y"], ["e"], to=TensorProto.FLOAT)
    nodes = [use_node,
             helper.make_node("Add", ["x", "e"], ["s"]),
             helper.make_node("Mul", ["s", "t"], ["v"])]
    g = helper.make_graph(nodes, "net",
                          [vi("x", ("B", 2)), vi("t", ("B", 1)), vi("y", label_shape, label_type)],
                          [vi("v", ("B", 2))], [init("table", np.ones((table_rows, 2)))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_refusals():
    with pytest.raises(ConversionError, match="element type 1; a class label is an integer"):
        from_onnx(_label_graph(label_type=TensorProto.FLOAT))
    with pytest.raises(ConversionError, match="the only supported use of a label is an embedding"):
        from_onnx(_label_graph(use="Cast"))
    with pytest.raises(ConversionError, match="--num-classes 5, but the embedding table has 4"):
        from_onnx(_label_graph(), num_classes=5)
    with pytest.raises(ConversionError, match="--null-label 4 is not a label"):
        from_onnx(_label_graph(), null_label=4)
    with pytest.raises(ConversionError, match=r"unknown label input 'lbl'"):
        from_onnx(_label_graph(), label_input="lbl")
    with pytest.raises(ConversionError, match="must be \\[batch\\] or \\[batch, 1\\]"):
        from_onnx(_label_graph(label_shape=("B", 3)))
    g = from_onnx(_label_graph(), null_label=1, num_classes=4)
    assert [n.op for n in g.nodes][:2] == ["label_input", "embedding"]
    with pytest.raises(ConversionError, match="guidance needs the model's null label"):
        C.with_conditioning(ir.FlowModel(graph=from_onnx(_label_graph())), labels=[0], guidance=2)


def test_cli_converts_and_the_runtime_validates(converted, tmp_path):
    cli = siflow_cli()
    from siflow_convert.cli import main
    _, _, onnx_bytes = converted
    src = tmp_path / "net.onnx"
    src.write_bytes(onnx_bytes)
    out = str(tmp_path / "net.sif")
    assert main([str(src), "-o", out, "--null-label", str(NULL), "--num-classes", str(CLASSES),
                 "--guidance", "2", "--test-vectors", "16"]) == 0
    back = sif_io.read_sif(out)
    assert back.test_vectors.guidance == 2.0
    assert back.test_vectors.labels.shape == (16,)
    assert back.test_vectors.trajectory_labels is not None
    r = subprocess.run([cli, "validate", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "16 points" in r.stdout
    r = subprocess.run([cli, "info", out], capture_output=True, text=True)
    assert "labels        4 classes (0 to 3), null label 3" in r.stdout
    # Without a null label, guided test vectors are refused by name.
    assert main([str(src), "-o", str(tmp_path / "x.sif"), "--guidance", "2"]) == 1
    assert main([str(src), "-o", str(tmp_path / "x.sif"), "--num-classes", "5"]) == 1
