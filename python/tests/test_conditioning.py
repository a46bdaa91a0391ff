# SPDX-License-Identifier: Apache-2.0
# Class labels, condition vectors, classifier-free guidance and the sampling temperature through
# the Python module, on small conditional models built here with the converter's writer:
# per-row labels agree with one-label calls, guidance w = 0 / 1 / 2 gives the null, the
# conditional and 2 v(y) - v(null) velocities, and every bad label comes back as an exception.
import sys

import numpy as np
import pytest

import siflow
from conftest import ROOT, bits

CLASSES, NULL = 3, 2
RNG = np.random.default_rng(11)
X = RNG.normal(size=(6, 2)).astype(np.float32)
LABELS = np.array([0, 1, 2, 1, 0, 1], dtype=np.int64)


def _converter():
    sys.path.insert(0, str(ROOT / "converter"))
    try:
        from siflow_convert import ir, sif_io
    except ImportError as e:
        pytest.skip(f"siflow_convert cannot be imported ({e}; Debian: python3-onnx, "
                    f"python3-flatbuffers)")
    finally:
        sys.path.pop(0)
    return ir, sif_io


def _mlp(ir, g, inputs, rng):
    """v = W2 tanh(W1 concat(inputs) + b1 [+ label embedding]) + b2: nonlinear in the label, so
    2 v(y) - v(null) is not the velocity of any single label."""
    widths = g._widths_so_far()
    cat = g.add(ir.Node("concat", inputs))
    h = g.add(ir.Node("fc", [cat], weight=rng.normal(size=(8, sum(widths[i] for i in inputs))),
                      bias=rng.normal(size=8) * 0.3))
    return h


def label_model(null_label=NULL):
    ir, sif_io = _converter()
    rng = np.random.default_rng(4)
    g = ir.Graph(dim=2)
    label = g.add(ir.Node("label_input", [], name="y", classes=CLASSES, null_label=null_label))
    emb = g.add(ir.Node("embedding", [label], name="emb", classes=CLASSES,
                        weight=rng.normal(size=(CLASSES, 8))))
    h = _mlp(ir, g, [0, 1], rng)
    h = g.add(ir.Node("add", [h, emb]))
    h = g.add(ir.Node("unary", [h], unary="tanh"))
    g.output = g.add(ir.Node("fc", [h], weight=rng.normal(size=(2, 8)) * 0.7,
                             bias=rng.normal(size=2) * 0.1))
    return siflow.load(sif_io.to_bytes(ir.FlowModel(graph=g)))


def cond_model():
    ir, sif_io = _converter()
    rng = np.random.default_rng(5)
    g = ir.Graph(dim=2)
    c = g.add(ir.Node("cond_input", [], name="c", cond_shape=[2], constant=[0.25, -0.5]))
    h = _mlp(ir, g, [0, 1, c], rng)
    h = g.add(ir.Node("unary", [h], unary="tanh"))
    g.output = g.add(ir.Node("fc", [h], weight=rng.normal(size=(2, 8)) * 0.7))
    return siflow.load(sif_io.to_bytes(ir.FlowModel(graph=g)))


@pytest.fixture(scope="module")
def labeled():
    with label_model() as m:
        yield m


@pytest.fixture(scope="module")
def conditioned():
    with cond_model() as m:
        yield m


def close(a, b, tol=2e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b)))


def test_info_tells_what_the_model_takes(labeled, conditioned):
    i = labeled.info
    assert i.takes_labels and i.label_classes == CLASSES and i.null_label == NULL
    assert i.cond_width == 0 and not i.has_null_cond
    c = conditioned.info
    assert not c.takes_labels and c.label_classes == 0 and c.null_label == -1
    assert c.cond_width == 2 and c.has_null_cond
    with siflow.load(ROOT / "examples" / "models" / "two_moons.sif") as plain:
        assert not plain.info.takes_labels and plain.info.cond_width == 0


def test_info_gives_an_image_models_sample_shape():
    with siflow.load(ROOT / "examples" / "models" / "digits.sif") as digits:
        assert digits.info.sample_shape == (1, 8, 8) and digits.info.dim == 64
        x = digits.sample(2, seed=3, label=4)
        assert x.shape == (2, 64)  # rows stay flat; reshape with sample_shape


def test_guidance_weights_give_null_conditional_and_extrapolated_velocities(labeled):
    t = 0.4
    v_y = labeled.velocity(X, t, labels=LABELS)
    v_null = labeled.velocity(X, t, label=NULL)
    assert not close(v_y, v_null, 1e-2)  # the label matters, so the checks below can fail
    assert np.array_equal(bits(labeled.velocity(X, t, labels=LABELS, guidance=1.0)), bits(v_y))
    assert close(labeled.velocity(X, t, labels=LABELS, guidance=0.0), v_null)
    w2 = labeled.velocity(X, t, labels=LABELS, guidance=2.0)
    assert close(w2, 2.0 * v_y.astype(np.float64) - v_null, 1e-5)
    assert not close(w2, v_y, 1e-2)
    wm = labeled.velocity(X, t, labels=LABELS, guidance=-0.5)
    assert close(wm, v_null - 0.5 * (v_y.astype(np.float64) - v_null), 1e-5)


def test_a_labels_array_equals_one_label_per_call(labeled):
    t = np.linspace(0.1, 0.9, len(X)).astype(np.float32)
    v = labeled.velocity(X, t, labels=LABELS)
    x1 = labeled.decode(X, labels=LABELS, steps=6)
    x0 = labeled.encode(X, labels=LABELS, steps=6)
    lp = labeled.log_prob(X, labels=LABELS, steps=6)
    s = labeled.sample(len(X), labels=LABELS, seed=9, steps=6)
    for k in range(CLASSES):
        rows = LABELS == k
        assert np.array_equal(bits(labeled.velocity(X, t, label=k)[rows]), bits(v[rows]))
        assert np.array_equal(bits(labeled.decode(X, label=k, steps=6)[rows]), bits(x1[rows]))
        assert np.array_equal(bits(labeled.encode(X, label=k, steps=6)[rows]), bits(x0[rows]))
        assert np.array_equal(bits(labeled.log_prob(X, label=k, steps=6)[rows]), bits(lp[rows]))
        got = labeled.sample(len(X), label=k, seed=9, steps=6)
        assert np.array_equal(bits(got[rows]), bits(s[rows]))
    # Different labels give different results (the comparison above is not vacuous).
    assert not close(labeled.decode(X, label=0, steps=6), labeled.decode(X, label=1, steps=6),
                     1e-3)


def test_labels_of_any_integer_dtype_and_shape_n_by_1(labeled):
    v = labeled.velocity(X, 0.3, labels=LABELS)
    for labels in (LABELS.astype(np.int32), LABELS.astype(np.uint8), LABELS.tolist(),
                   LABELS.reshape(-1, 1)):
        assert np.array_equal(bits(labeled.velocity(X, 0.3, labels=labels)), bits(v))


def test_guided_sampling_follows_the_guided_ode(labeled):
    # A tiny temperature draws (nearly) the base mean 0 for every row: the sample is decode(0).
    zeros = np.zeros((4, 2), np.float32)
    for w in (1.0, 2.0):
        s = labeled.sample(4, label=1, guidance=w, temperature=1e-30, steps=8)
        d = labeled.decode(zeros, label=1, guidance=w, steps=8)
        assert close(s, d, 1e-6), w
    plain = labeled.sample(4, label=1, steps=8, seed=1)
    guided = labeled.sample(4, label=1, guidance=2.0, steps=8, seed=1)
    assert not close(plain, guided, 1e-3)
    lp = labeled.log_prob(X, label=1, guidance=2.0, steps=6)
    assert np.all(np.isfinite(lp)) and not close(lp, labeled.log_prob(X, label=1, steps=6), 1e-4)
    with pytest.raises(siflow.InvalidArgument, match="temperature 0 must be positive"):
        labeled.sample(2, label=1, temperature=0.0)


def test_temperature_scales_the_base_draws(labeled):
    a = labeled.sample(5, label=0, seed=3, steps=6)
    b = labeled.sample(5, label=0, seed=3, steps=6, temperature=1.0)
    assert np.array_equal(bits(a), bits(b))
    cold = labeled.sample(5, label=0, seed=3, steps=6, temperature=0.5)
    assert not close(a, cold, 1e-3)
    # The base draw of a sample is recovered by encode; at T = 0.5 it is half the T = 1 draw.
    z1 = labeled.encode(a, label=0, steps=64)
    z_half = labeled.encode(cold, label=0, steps=64)
    assert close(z_half, 0.5 * z1.astype(np.float64), 2e-3)
    with pytest.raises(TypeError, match="temperature"):
        labeled.decode(X, label=0, temperature=0.5)


def test_condition_vectors_per_row_and_guidance(conditioned):
    c = RNG.normal(size=(len(X), 2))
    v = conditioned.velocity(X, 0.6, cond=c)
    for r in range(len(X)):
        one = conditioned.velocity(X[r:r + 1], 0.6, cond=c[r:r + 1])
        assert np.array_equal(bits(one), bits(v[r:r + 1]))
    null = conditioned.velocity(X, 0.6, cond=np.tile([0.25, -0.5], (len(X), 1)))
    assert not close(v, null, 1e-2)
    assert close(conditioned.velocity(X, 0.6, cond=c, guidance=0.0), null)
    assert close(conditioned.velocity(X, 0.6, cond=c, guidance=2.0),
                 2.0 * v.astype(np.float64) - null, 1e-5)
    s = conditioned.sample(len(X), cond=c, seed=2, steps=5)
    assert s.shape == X.shape and np.all(np.isfinite(s))


def test_bad_labels_raise_clear_exceptions(labeled):
    with pytest.raises(siflow.InvalidArgument, match="label 3 is outside the model's classes"):
        labeled.velocity(X, 0.5, label=3)
    with pytest.raises(siflow.InvalidArgument, match="label 7 of row 1 is outside"):
        labeled.sample(3, labels=[0, 7, 1])
    with pytest.raises(siflow.InvalidArgument, match=r"labels: shape \(5,\), expected \[6\]"):
        labeled.decode(X, labels=LABELS[:5])
    with pytest.raises(siflow.InvalidArgument, match="labels: dtype float64 is not an integer"):
        labeled.log_prob(X, labels=LABELS.astype(np.float64))
    with pytest.raises(siflow.InvalidArgument, match="labels: dtype bool"):
        labeled.encode(X, labels=np.ones(len(X), bool))
    with pytest.raises(siflow.InvalidArgument, match="label -1 of row 0 is not a class label"):
        labeled.velocity(X, 0.5, labels=-LABELS - 1)
    with pytest.raises(siflow.InvalidArgument, match="label: expected an integer"):
        labeled.velocity(X, 0.5, label=1.0)
    with pytest.raises(siflow.InvalidArgument, match="label: -1 is outside"):
        labeled.velocity(X, 0.5, label=-1)
    with pytest.raises(siflow.InvalidArgument, match="label and labels are mutually exclusive"):
        labeled.velocity(X, 0.5, label=1, labels=LABELS)
    with pytest.raises(siflow.InvalidArgument, match="labels: label 2147483648"):
        labeled.velocity(X, 0.5, labels=np.full(len(X), 1 << 31, np.int64))
    with pytest.raises(siflow.InvalidArgument, match="takes a class label"):
        labeled.sample(2)
    with pytest.raises(siflow.InvalidArgument, match="cond: this model takes no condition"):
        labeled.velocity(X, 0.5, label=0, cond=np.zeros((len(X), 2)))


def test_labels_and_guidance_refused_where_the_model_cannot_take_them(conditioned, model):
    with pytest.raises(siflow.InvalidArgument, match="takes no class label"):
        conditioned.velocity(X, 0.5, label=0, cond=np.zeros((len(X), 2)))
    with pytest.raises(siflow.InvalidArgument, match=r"cond: shape \(6, 3\)"):
        conditioned.velocity(X, 0.5, cond=np.zeros((len(X), 3)))
    with pytest.raises(siflow.InvalidArgument, match="takes no class label"):
        model.sample(2, label=0)
    with label_model(null_label=-1) as no_null:
        assert no_null.info.null_label == -1
        no_null.velocity(X, 0.5, label=1)  # plain conditional evaluation works
        with pytest.raises(siflow.Error, match="null"):
            no_null.velocity(X, 0.5, label=1, guidance=2.0)


def test_guidance_doubles_the_arena(labeled):
    assert labeled.arena_bytes(guidance=2.0) > labeled.arena_bytes()
    with pytest.raises(siflow.InvalidArgument, match="guidance: expected a number"):
        labeled.velocity(X, 0.5, label=0, guidance="2")
