# SPDX-License-Identifier: Apache-2.0
"""siflow_convert.sif_io: every op and field round-trips, weight vectors are 64-byte aligned in
the file, fp16 rounds to nearest even and refuses overflow, non-finite weights are refused, and
files are written atomically. Files are also loaded by the C++ CLI when it is built."""
import os
import subprocess

import numpy as np
import pytest

from conftest import siflow_cli
from siflow_convert import ir, sif_io
from siflow_convert._generated import Model as fb_model
from siflow_convert.ir import ConversionError

OPERANDS = ("weight", "bias", "constant", "gamma", "beta")


def every_op_model(dim=3, seed=11):
    """A model using every op, every unary kind and every optional field (same seed, same
    model)."""
    rng = np.random.default_rng(seed)
    g = ir.Graph(dim=dim)
    feats = g.add(ir.Node("mul", [1], name="freq", constant=rng.normal(size=4)))
    sin = g.add(ir.Node("unary", [feats], name="sin", unary="sin"))
    cat = g.add(ir.Node("concat", [0, sin, 1], name="cat"))
    h = g.add(ir.Node("fc", [cat], name="fc1", weight=rng.normal(size=(6, dim + 5)),
                      bias=rng.normal(size=6)))
    branches = [g.add(ir.Node("unary", [h], name=k, unary=k, alpha=0.3 + i / 10))
                for i, k in enumerate(ir.UNARY_KINDS[:13])]   # format 1.0's kinds (1.4's:
    # test_onnx_math.py; log/sqrt/reciprocal of these random values would not be finite)
    h = g.add(ir.Node("concat", branches))
    h = g.add(ir.Node("layernorm", [h], name="ln", gamma=rng.normal(size=6 * 13),
                      beta=rng.normal(size=6 * 13), epsilon=1e-3))
    h = g.add(ir.Node("fc", [h], weight=rng.normal(size=(dim, 6 * 13)) * 0.1))
    h = g.add(ir.Node("add", [h], constant=rng.normal(size=dim)))
    h = g.add(ir.Node("mul", [h, 1]))
    g.output = g.add(ir.Node("add", [h, 0]))
    tv = ir.TestVectors(t=rng.uniform(size=5), y=rng.normal(size=(5, dim)),
                        v=rng.normal(size=(5, dim)), velocity_tolerance=1e-5,
                        trajectory_steps=7, trajectory_start=rng.normal(size=(2, dim)),
                        trajectory_end=rng.normal(size=(2, dim)), trajectory_tolerance=2e-5)
    return ir.FlowModel(
        graph=g, name="every op",
        interpolant=ir.Interpolant("learned_fourier", alpha=[0.1, -0.05], beta=[0.02, 0.01]),
        base=ir.Base("normal", mean=rng.normal(size=dim), std=rng.uniform(0.5, 2, dim)),
        normalization=ir.Normalization(mean=rng.normal(size=dim), std=rng.uniform(1, 3, dim)),
        time_start=0.125, time_end=0.875, metadata={"zeta": "last", "alpha": "first", "k": ""},
        test_vectors=tv)


def f32(a):
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def assert_same_model(got, want, rounding=f32):
    """got (read back) equals want with every stored float rounded by `rounding`."""
    assert got.name == want.name and got.dim == want.dim
    assert got.graph.output == want.graph.output
    assert len(got.graph.nodes) == len(want.graph.nodes)
    for k, (a, b) in enumerate(zip(got.graph.nodes, want.graph.nodes)):
        assert (a.op, a.inputs, a.name, a.unary) == (b.op, b.inputs, b.name, b.unary), k
        assert a.alpha == np.float32(b.alpha) and a.epsilon == np.float32(b.epsilon), k
        for f in OPERANDS:
            va, vb = getattr(a, f), getattr(b, f)
            assert (va is None) == (vb is None), (k, f)
            if vb is not None:
                assert va.shape == vb.shape, (k, f)
                np.testing.assert_array_equal(va, rounding(vb), err_msg=f"node {k} {f}")
    assert got.interpolant == want.interpolant
    assert got.base.kind == want.base.kind
    for f in ("mean", "std", "low", "high"):
        a, b = getattr(got.base, f), getattr(want.base, f)
        assert (a is None) == (b is None), f
        if b is not None:
            np.testing.assert_array_equal(a, f32(b))
    assert (got.normalization is None) == (want.normalization is None)
    if want.normalization is not None:
        np.testing.assert_array_equal(got.normalization.mean, f32(want.normalization.mean))
        np.testing.assert_array_equal(got.normalization.std, f32(want.normalization.std))
    assert (got.time_start, got.time_end) == (want.time_start, want.time_end)
    assert got.metadata == want.metadata
    tg, tw = got.test_vectors, want.test_vectors
    assert (tg is None) == (tw is None)
    if tw is not None:
        for f in ("t", "y", "v", "trajectory_start", "trajectory_end"):
            np.testing.assert_array_equal(getattr(tg, f), f32(getattr(tw, f)), err_msg=f)
        assert tg.velocity_tolerance == np.float32(tw.velocity_tolerance)
        assert tg.trajectory_tolerance == np.float32(tw.trajectory_tolerance)
        assert tg.trajectory_steps == tw.trajectory_steps


def test_every_op_and_field_round_trips():
    m = every_op_model()
    assert_same_model(sif_io.from_bytes(sif_io.to_bytes(m)), m)


def test_uniform_base_linear_interpolant_and_defaults_round_trip():
    g = ir.Graph(dim=2)
    g.output = g.add(ir.Node("fc", [0], weight=np.random.default_rng(3).normal(size=(2, 2))))
    m = ir.FlowModel(graph=g, interpolant=ir.Interpolant("linear"),
                     base=ir.Base("uniform", low=[-1, -2], high=[1, 3]))
    got = sif_io.stored(m)
    assert_same_model(got, m)
    assert got.test_vectors is None and got.normalization is None


def _root(data):
    return fb_model.Model.GetRootAs(data, 0)


def _weight_tables(data):
    g = _root(data).Graph()
    for k in range(g.NodesLength()):
        n = g.Nodes(k)
        for f in ("Weight", "Bias", "Constant", "Gamma", "Beta"):
            w = getattr(n, f)()
            if w is not None:
                yield k, f, w


@pytest.mark.parametrize("fp16", [False, True])
def test_every_weight_vector_starts_at_a_multiple_of_64(fp16):
    data = sif_io.to_bytes(every_op_model(), fp16=fp16)
    assert len(data) % 64 == 0
    count = 0
    for k, f, w in _weight_tables(data):
        slot = 10 if fp16 else 8            # vtable offsets of f16 / f32
        other = 8 if fp16 else 10
        off = w._tab.Offset(slot)
        assert off and not w._tab.Offset(other), (k, f)
        start = w._tab.Vector(off)          # file offset of the first value
        assert start % 64 == 0, f"node {k} {f} starts at {start}"
        count += 1
    assert count == 7       # freq, fc1 weight+bias, ln gamma+beta, fc weight, add


def test_version_alpha_and_identifier_are_written_explicitly():
    data = sif_io.to_bytes(every_op_model())
    assert data[4:8] == b"SIFL"
    m = _root(data)
    assert m._tab.Offset(4) and m._tab.Offset(6)          # format_major, format_minor present
    assert (m.FormatMajor(), m.FormatMinor()) == (1, 0)
    g = m.Graph()
    for k in range(g.NodesLength()):
        assert g.Nodes(k)._tab.Offset(12), f"node {k} has no explicit alpha"
    elu = next(g.Nodes(k) for k in range(g.NodesLength()) if g.Nodes(k).Name() == b"elu")
    assert elu.Alpha() == np.float32(0.6)


def test_metadata_is_sorted_by_key_in_the_file():
    m = _root(sif_io.to_bytes(every_op_model()))
    keys = [m.Metadata(k).Key() for k in range(m.MetadataLength())]
    assert keys == [b"alpha", b"k", b"zeta"]


def test_fp16_rounds_the_float32_value_to_nearest_even():
    # Halves near 1 are spaced 2^-10: ties go to the even mantissa.
    values = np.array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -11 + 2 ** -20, -2.5, 65504.0,
                       2 ** -24, 2 ** -26, 0.1])
    want = np.array([1.0, 1 + 2 ** -9, 1 + 2 ** -10, -2.5, 65504.0, 2 ** -24, 0.0,
                     0.0999755859375])
    g = ir.Graph(dim=values.size)
    g.output = g.add(ir.Node("mul", [0], constant=values))
    got = sif_io.stored(ir.FlowModel(graph=g), fp16=True).graph.nodes[0].constant
    np.testing.assert_array_equal(got, want)
    data = sif_io.to_bytes(ir.FlowModel(graph=g), fp16=True)
    w = next(w for _, _, w in _weight_tables(data))
    assert w.Dtype() == sif_io.DTYPE_F16
    assert w.F16AsNumpy()[0] == 0x3C00      # 1.0 as IEEE binary16


def test_fp16_overflow_is_refused_naming_the_node():
    g = ir.Graph(dim=2)
    g.output = g.add(ir.Node("fc", [0], name="big", weight=[[1.0, 0.0], [65520.0, 1.0]]))
    m = ir.FlowModel(graph=g)
    sif_io.to_bytes(m)                      # fine as float32
    with pytest.raises(ConversionError, match=r"node 0 \(fc, big\) operand weight.*fp16"):
        sif_io.to_bytes(m, fp16=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
@pytest.mark.parametrize("operand", ["weight", "bias"])
def test_non_finite_weights_are_refused(bad, operand):
    g = ir.Graph(dim=2)
    node = ir.Node("fc", [0], name="fc9", weight=np.ones((2, 2)), bias=np.zeros(2))
    getattr(node, operand).flat[1] = bad
    g.output = g.add(node)
    with pytest.raises(ConversionError, match=rf"node 0 \(fc, fc9\) operand {operand}"):
        sif_io.to_bytes(ir.FlowModel(graph=g))


def _set(model, path, value):
    """Sets model.<path> (dotted; '[i]' indexes the array) to value."""
    obj, *rest = path.split(".")
    target = getattr(model, obj)
    field, _, index = rest[0].partition("[")
    if index:
        getattr(target, field).flat[int(index[:-1])] = value
    else:
        setattr(target, field, value)


# Each value passes as float64 but is refused by the runtime once stored as float32: the writer
# applies the runtime's rules to the stored value and names the field.
@pytest.mark.parametrize("path, value, message", [
    ("test_vectors.velocity_tolerance", np.nan, r"velocity tolerance is nan"),
    ("test_vectors.trajectory_tolerance", 1e39, r"trajectory tolerance is 1e\+39"),
    ("test_vectors.velocity_tolerance", -1e-6, r"velocity tolerance is -1e-06"),
    ("test_vectors.trajectory_end[3]", 5e38, r"trajectory_end\[3\] = 5e\+38 overflows float32"),
    ("test_vectors.v[0]", -1e39, r"test vectors v\[0\] = -1e\+39 overflows float32"),
    ("test_vectors.y[2]", np.inf, r"test vectors y\[2\] is inf"),
    ("normalization.std[1]", 1e-50, r"normalization std\[1\] = 1e-50 is 0.0 as float32"),
    ("normalization.mean[0]", 4e38, r"normalization mean\[0\] = 4e\+38 overflows"),
    ("base.std[2]", 1e-46, r"base std\[2\] = 1e-46 is 0.0 as float32"),
])
def test_values_the_runtime_would_refuse_after_the_float32_cast_are_refused(path, value, message):
    model = every_op_model()
    for f in ("y", "v", "trajectory_end"):
        setattr(model.test_vectors, f, np.array(getattr(model.test_vectors, f), dtype=np.float64))
    for part in (model.normalization, model.base):
        for f in ("mean", "std"):
            setattr(part, f, np.array(getattr(part, f), dtype=np.float64))
    _set(model, path, value)
    with pytest.raises(ConversionError, match=message):
        sif_io.to_bytes(model)


def test_a_uniform_base_must_stay_ordered_as_float32():
    g = ir.Graph(dim=1)
    g.output = g.add(ir.Node("add", [0, 0]))
    base = ir.Base("uniform", low=np.array([1.0]), high=np.array([1.0 + 1e-12]))
    with pytest.raises(ConversionError, match=r"high\[0\] = 1.0 must exceed low\[0\] = 1.0"):
        sif_io.to_bytes(ir.FlowModel(graph=g, base=base))


def test_reader_refuses_a_foreign_identifier():
    data = bytearray(sif_io.to_bytes(every_op_model()))
    data[4:8] = b"XXXX"
    with pytest.raises(ConversionError, match="identifier"):
        sif_io.from_bytes(bytes(data))


def test_write_sif_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.sif"
    sif_io.write_sif(every_op_model(), str(path))
    first = path.read_bytes()
    assert os.listdir(tmp_path) == ["m.sif"]
    assert_same_model(sif_io.read_sif(str(path)), every_op_model())
    # A model that cannot be written leaves the old file and no temporary behind.
    broken = every_op_model()
    broken.graph.nodes[3].weight[0, 0] = np.nan
    with pytest.raises(ConversionError):
        sif_io.write_sif(broken, str(path))
    # A failure while renaming into place removes the temporary file.

    def failing_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        sif_io.write_sif(every_op_model(), str(path))
    assert os.listdir(tmp_path) == ["m.sif"]
    assert path.read_bytes() == first


@pytest.mark.parametrize("fp16", [False, True])
def test_the_runtime_loads_what_is_written(tmp_path, fp16):
    cli = siflow_cli()
    path = tmp_path / "m.sif"
    sif_io.write_sif(every_op_model(), str(path), fp16=fp16)
    out = subprocess.run([cli, "info", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "every op" in out.stdout
    assert ("fp16 weights" in out.stdout) == fp16
