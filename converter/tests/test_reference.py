# SPDX-License-Identifier: Apache-2.0
"""siflow_convert.reference: ops against independent formulas, JVPs against finite
differences, integrator orders, likelihood signs, Philox known answers, and agreement with the
C++ runtime's CLI (velocity, decode, logprob, sample --seed, validate)."""
import math
import os
import subprocess

import numpy as np
import pytest

from conftest import REPO, siflow_cli
from siflow_convert import ir, sif_io
from siflow_convert import reference as R

# ------------------------------------------------------------------------------ randomness


@pytest.mark.parametrize("counter,key,want", [
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([0xffffffff] * 4, [0xffffffff] * 2, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
     [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
])
def test_philox_known_answers(counter, key, want):
    assert R.philox4x32_10(counter, key).tolist() == want


def test_random_block_layout_is_block_sample_lo_hi_stream_keyed_by_seed():
    seed, sample = 0x0123456789abcdef, 0xfedcba9876543210
    want = R.philox4x32_10([7, 0x76543210, 0xfedcba98, 2], [0x89abcdef, 0x01234567])
    assert R.random_blocks(seed, 7, sample, 2).tolist() == want.tolist()
    # the witness of tests/unit/test_random.cc: seed 0, sample 5150801, block 0, lane 0
    assert R.random_blocks(0, 0, 5150801, 0)[0] == 0xffffff88


def test_lane_uniform_and_box_muller_layout():
    assert R.lane_uniform(0) == 2.0 ** -25
    assert R.lane_uniform(0xffffffff) == 1 - 2.0 ** -25
    z = R.standard_normals(99, 3, 7, first_index=12345, dtype=np.float64)
    for i in range(3):
        for k in range(7):
            lanes = R.philox4x32_10([k // 4, 12345 + i, 0, 0], [99, 0])
            pair = (k % 4) // 2
            ua, ub = (((int(lanes[2 * pair + j]) >> 8) + 0.5) / 2 ** 24 for j in (0, 1))
            r = math.sqrt(-2 * math.log(ua))
            want = r * (math.cos(2 * math.pi * ub) if k % 2 == 0 else math.sin(2 * math.pi * ub))
            assert z[i, k] == pytest.approx(want, rel=1e-14, abs=1e-14)


def test_sample_i_is_the_same_whatever_the_first_index():
    m = mixed_model()
    m.base = ir.Base("uniform", low=[-1.0, -1.0, -1.0], high=[1.0, 2.0, 3.0])
    np.testing.assert_array_equal(R.base_draws(m, 9, 77)[4:], R.base_draws(m, 5, 77, 4))
    m.base = ir.Base("normal")
    np.testing.assert_array_equal(R.base_draws(m, 9, 77)[4:], R.base_draws(m, 5, 77, 4))
    assert not np.array_equal(R.base_draws(m, 5, 77), R.base_draws(m, 5, 78))


def test_uniform_base_draw_never_reaches_the_upper_bound():
    g = ir.Graph(dim=1)
    g.output = g.add(ir.Node("fc", [0], weight=[[0.0]]))
    m = ir.FlowModel(graph=g, base=ir.Base("uniform", low=[0.0], high=[1.0]))
    x = R.base_draws(m, 1, 0, first_index=5150801)
    assert 0.0 < x[0, 0] < 1.0


# ------------------------------------------------------------------------------------- ops

def _scalar_unary(kind, x, alpha):
    """Independent scalar formulas from docs/format.md (math module)."""
    lam, al = 1.0507009873554805, 1.6732632423543772
    return {
        "identity": x, "relu": max(x, 0.0), "leaky_relu": x if x > 0 else alpha * x,
        "elu": x if x > 0 else alpha * (math.exp(x) - 1),
        "selu": lam * (x if x > 0 else al * (math.exp(x) - 1)), "tanh": math.tanh(x),
        "sigmoid": 1 / (1 + math.exp(-x)), "silu": x / (1 + math.exp(-x)),
        "gelu_erf": 0.5 * x * (1 + math.erf(x / math.sqrt(2))),
        "gelu_tanh": 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
        "softplus": math.log(1 + math.exp(x)), "sin": math.sin(x), "cos": math.cos(x),
        "log": (math.log(x) if x > 0 else -math.inf if x == 0 else math.nan),
        "sqrt": math.sqrt(x) if x >= 0 else math.nan,
        "reciprocal": 1 / x if x != 0 else math.inf, "abs": abs(x),
        "hard_swish": x * min(max(x + 3, 0.0), 6.0) / 6,
        "mish": x * math.tanh(math.log(1 + math.exp(x)))}[kind]


XS = np.array([-7.5, -2.0, -0.3, -1e-3, 0.0, 1e-3, 0.4, 1.7, 6.0])


@pytest.mark.parametrize("kind", ir.UNARY_KINDS)
def test_unary_forward_matches_the_documented_formula(kind):
    got = R.unary_forward(kind, XS, 0.2)
    want = [_scalar_unary(kind, float(x), 0.2) for x in XS]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ir.UNARY_KINDS)
def test_unary_derivative_matches_central_differences(kind):
    x = XS[XS != 0.0]
    if kind in ("log", "sqrt", "reciprocal"):     # away from their pole or edge at 0
        x = x[np.abs(x) >= 0.3] if kind == "reciprocal" else x[x >= 0.3]
    h = 1e-6
    fd = (R.unary_forward(kind, x + h, 0.2) - R.unary_forward(kind, x - h, 0.2)) / (2 * h)
    np.testing.assert_allclose(R.unary_derivative(kind, x, 0.2), fd, rtol=1e-6, atol=1e-8)
    left = {"relu": 0.0, "leaky_relu": 0.2, "elu": 0.2, "selu": 1.0507009873554805 *
            1.6732632423543772}
    if kind in left:
        assert R.unary_derivative(kind, np.array([0.0]), 0.2)[0] == pytest.approx(left[kind])


def test_layernorm_and_broadcasting_forms():
    rng = np.random.default_rng(2)
    g = ir.Graph(dim=4)
    ln = g.add(ir.Node("layernorm", [0], gamma=rng.normal(size=4), beta=rng.normal(size=4),
                       epsilon=0.01))
    tb = g.add(ir.Node("mul", [1], constant=[1.0, 2.0, 3.0, 4.0]))     # [B,1] x [1,n]
    s = g.add(ir.Node("add", [ln, 1]))                                  # [B,n] + [B,1]
    p = g.add(ir.Node("mul", [s, tb]))
    g.output = g.add(ir.Node("add", [p], constant=[0.5, -0.5, 1.0, 0.0]))
    m = ir.FlowModel(graph=g)
    y, t = rng.normal(size=(5, 4)), rng.uniform(size=5)
    n0 = g.nodes[0]
    mu, var = y.mean(1, keepdims=True), y.var(1, keepdims=True)       # numpy var is biased
    lnv = (y - mu) / np.sqrt(var + 0.01) * n0.gamma + n0.beta
    want = (lnv + t[:, None]) * (t[:, None] * [1, 2, 3, 4]) + [0.5, -0.5, 1.0, 0.0]
    np.testing.assert_allclose(R.velocity(m, t, y), want, rtol=1e-13)


def mixed_model(dim=3, seed=4, hidden=5):
    """Every op and unary kind in one net: Fourier time features, 13 activation branches,
    layer norm, a residual add and products with t."""
    rng = np.random.default_rng(seed)
    g = ir.Graph(dim=dim)
    tf = g.add(ir.Node("mul", [1], name="freq", constant=rng.normal(size=3) * 3))
    sin = g.add(ir.Node("unary", [tf], unary="sin"))
    cos = g.add(ir.Node("unary", [tf], unary="cos"))
    cat = g.add(ir.Node("concat", [0, sin, cos, 1]))
    h = g.add(ir.Node("fc", [cat], name="fc1", weight=rng.normal(size=(hidden, dim + 7)),
                      bias=rng.normal(size=hidden) * 0.3))
    kinds = ir.UNARY_KINDS[:13]     # format 1.0's (log of these values would not be finite)
    br = [g.add(ir.Node("unary", [h], name=k, unary=k, alpha=0.2 + 0.1 * i))
          for i, k in enumerate(kinds)]
    h = g.add(ir.Node("concat", br))
    w = hidden * len(kinds)
    h = g.add(ir.Node("layernorm", [h], gamma=rng.uniform(0.5, 1.5, w), beta=rng.normal(size=w)
                      * 0.1))
    h = g.add(ir.Node("fc", [h], name="out", weight=rng.normal(size=(dim, w)) / math.sqrt(w),
                      bias=rng.normal(size=dim) * 0.1))
    th = g.add(ir.Node("mul", [h, 1]))
    res = g.add(ir.Node("mul", [0], constant=rng.normal(size=dim) * 0.3))
    g.output = g.add(ir.Node("add", [th, res]))
    return ir.FlowModel(graph=g)


def test_jvp_divergence_matches_central_differences():
    m = mixed_model()
    rng = np.random.default_rng(0)
    y, t = rng.normal(size=(4, 3)), rng.uniform(size=4)
    _, jac = R.evaluate(m, t, y, tangents=True)
    h = 1e-6
    for p in range(3):
        e = np.zeros(3)
        e[p] = h
        fd = (R.velocity(m, t, y + e) - R.velocity(m, t, y - e)) / (2 * h)
        np.testing.assert_allclose(jac[:, p, :], fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(R.divergence(m, t, y), np.trace(jac, axis1=1, axis2=2))


# ------------------------------------------------------------------------------ integrators

def linear_model(a_matrix, **kw):
    g = ir.Graph(dim=len(a_matrix))
    g.output = g.add(ir.Node("fc", [0], weight=a_matrix))
    return ir.FlowModel(graph=g, **kw)


A = np.array([[-0.5, 1.2], [-0.8, 0.3]])


def _expm(a):
    w, v = np.linalg.eig(a)
    return (v @ np.diag(np.exp(w)) @ np.linalg.inv(v)).real


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("midpoint", 2),
                                          ("rk4", 4), ("rk4-38", 4)])
def test_integrator_orders_on_a_linear_ode(method, order):
    m = linear_model(A)
    z = np.array([[1.0, -0.5]])
    exact = z @ _expm(A).T
    errs = [np.abs(R.decode(m, z, method, k, round_time=False) - exact).max() for k in (8, 16)]
    assert abs(math.log2(errs[0] / errs[1]) - order) < 0.3, errs
    back = R.encode(m, exact, method, 16, round_time=False)
    assert np.abs(back - z).max() < 4 * errs[1]


def test_likelihood_signs_on_a_linear_flow():
    m = linear_model(A)
    z = np.array([[0.3, -0.7], [1.0, 2.0]])
    x, logp = R.decode(m, z, "rk4", 64, with_logp=True)
    base = -0.5 * (z ** 2).sum(1) - math.log(2 * math.pi)
    np.testing.assert_allclose(logp, base - np.trace(A), rtol=1e-12)
    np.testing.assert_allclose(R.log_prob(m, x, "rk4", 64), logp, atol=1e-9)


def test_normalisation_and_uniform_base_log_density():
    m = linear_model(np.zeros((2, 2)), base=ir.Base("uniform", low=[-1, 0], high=[1, 4]),
                     normalization=ir.Normalization(mean=[10, 20], std=[2, 0.5]))
    lp = R.log_prob(m, [[10, 21], [13, 21], [10, 22]], steps=4)
    np.testing.assert_allclose(lp[[0, 2]], -math.log(8) - math.log(2 * 0.5))
    assert lp[1] == -np.inf


# ---------------------------------------------------------------------- against the runtime

def _run(cli, *args):
    out = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, f"siflow {' '.join(map(str, args))}: {out.stderr}"
    return out


def _rel(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)


CASES = {
    "normal": dict(),
    "normalised": dict(normalization=ir.Normalization(mean=[1.0, -2.0, 0.5],
                                                      std=[0.5, 3.0, 1.5]),
                       base=ir.Base("normal", mean=[0.1, 0.0, -0.2], std=[1.0, 0.7, 1.3])),
    "uniform": dict(base=ir.Base("uniform", low=[-2.0, -1.0, -3.0], high=[2.0, 1.5, 3.0]),
                    time_start=0.1, time_end=0.9,
                    interpolant=ir.Interpolant("linear")),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fp16", [False, True])
def test_runtime_agrees_with_the_reference(tmp_path, case, fp16):
    cli = siflow_cli()
    m = mixed_model()
    for k, v in CASES[case].items():
        setattr(m, k, v)
    path = str(tmp_path / "m.sif")
    sif_io.write_sif(m, path, fp16=fp16)
    ms = sif_io.read_sif(path)
    rng = np.random.default_rng(1)
    # velocity at per-row times, flow coordinates
    y = rng.normal(size=(40, 3)).astype(np.float32)
    t = rng.uniform(ms.time_start, ms.time_end, 40).astype(np.float32)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "t.npy", t)
    _run(cli, "velocity", path, "-i", tmp_path / "y.npy", "-t", tmp_path / "t.npy",
         "-o", tmp_path / "v.npy")
    assert _rel(np.load(tmp_path / "v.npy"), R.velocity(ms, t, y)) <= 1e-5
    # decode from given base points, classic RK4, 32 steps
    z = R.base_draws(ms, 30, seed=3)
    np.save(tmp_path / "z.npy", z)
    _run(cli, "decode", path, "-i", tmp_path / "z.npy", "-o", tmp_path / "x.npy",
         "--method", "rk4", "--steps", 32)
    x = np.load(tmp_path / "x.npy")
    assert _rel(x, R.decode(ms, z, "rk4", 32)) <= 1e-5
    # sample --seed with log p, reproduced draw for draw, then logprob of those samples
    _run(cli, "sample", path, "-n", 30, "--seed", 12345, "--steps", 32, "-o",
         tmp_path / "s.npy", "--logprob-out", tmp_path / "slp.npy")
    s = np.load(tmp_path / "s.npy")
    xr, lpr = R.sample(ms, 30, 12345, "rk4", 32, with_logp=True)
    assert _rel(s, xr) <= 1e-5
    np.testing.assert_allclose(np.load(tmp_path / "slp.npy"), lpr, atol=2e-5)
    _run(cli, "logprob", path, "-i", tmp_path / "s.npy", "-o", tmp_path / "lp.npy",
         "--steps", 32, "--divergence", "exact")
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy"),
                               R.log_prob(ms, s.astype(np.float64), "rk4", 32), atol=2e-5)


@pytest.mark.parametrize("method", ["euler", "heun", "midpoint", "rk4-38"])
def test_runtime_agrees_for_every_method(tmp_path, method):
    cli = siflow_cli()
    path = str(tmp_path / "m.sif")
    sif_io.write_sif(mixed_model(), path)
    ms = sif_io.read_sif(path)
    _run(cli, "sample", path, "-n", 10, "--seed", 9, "--method", method, "--steps", 10,
         "-o", tmp_path / "s.npy", "--logprob-out", tmp_path / "lp.npy")
    x, lp = R.sample(ms, 10, 9, method, 10, with_logp=True)
    assert _rel(np.load(tmp_path / "s.npy"), x) <= 1e-5
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy"), lp, atol=2e-5)


def test_embedded_test_vectors_pass_validate_and_a_perturbed_weight_fails(tmp_path):
    cli = siflow_cli()
    m = mixed_model(dim=4, seed=8, hidden=8)
    m.normalization = ir.Normalization(mean=[0.0, 1.0, 2.0, 3.0], std=[1.0, 2.0, 0.5, 1.5])
    m.test_vectors = R.make_test_vectors(m)
    tv = m.test_vectors
    assert 0 < tv.velocity_tolerance < 1e-4 and 0 < tv.trajectory_tolerance < 1e-4
    good = str(tmp_path / "good.sif")
    sif_io.write_sif(m, good)
    _run(cli, "validate", good)
    for node in ("fc1", "out"):
        bad = sif_io.stored(m)
        w = next(n for n in bad.graph.nodes if n.name == node).weight
        w.flat[np.argmax(np.abs(w))] *= 1 + 1e-3
        path = str(tmp_path / f"bad_{node}.sif")
        sif_io.write_sif(bad, path)
        out = subprocess.run([cli, "validate", path], capture_output=True, text=True)
        assert out.returncode == 1, f"perturbed {node} still validates:\n{out.stdout}"


def test_fp16_test_vectors_validate(tmp_path):
    cli = siflow_cli()
    m = mixed_model(dim=3, seed=5, hidden=6)
    m.test_vectors = R.make_test_vectors(m, fp16=True)
    path = str(tmp_path / "h.sif")
    sif_io.write_sif(m, path, fp16=True)
    _run(cli, "validate", path)


def test_bundled_gaussian_ring_model(tmp_path):
    cli = siflow_cli()
    path = os.path.join(REPO, "examples", "models", "gaussian_ring.sif")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not present")
    m = sif_io.read_sif(path)
    _run(cli, "validate", path)
    if m.test_vectors is not None and len(m.test_vectors.t):
        tv = m.test_vectors
        assert _rel(R.velocity(m, tv.t, tv.y), tv.v) < 1e-5
    _run(cli, "sample", path, "-n", 20, "--seed", 4, "--steps", 32, "-o", tmp_path / "s.npy",
         "--logprob-out", tmp_path / "lp.npy")
    x, lp = R.sample(m, 20, 4, "rk4", 32, with_logp=True)
    assert _rel(np.load(tmp_path / "s.npy"), x) <= 1e-5
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy"), lp, atol=2e-5)
    _run(cli, "logprob", path, "-i", tmp_path / "s.npy", "-o", tmp_path / "lp2.npy",
         "--steps", 32)
    np.testing.assert_allclose(np.load(tmp_path / "lp2.npy"),
                               R.log_prob(m, np.load(tmp_path / "s.npy"), "rk4", 32), atol=2e-5)


def test_runtime_agrees_on_encode_and_log_prob_at_an_inner_time(tmp_path):
    cli = siflow_cli()
    m = mixed_model(seed=6)
    m.normalization = ir.Normalization(mean=[0.5, 0.0, -1.0], std=[2.0, 1.0, 0.25])
    path = str(tmp_path / "m.sif")
    sif_io.write_sif(m, path)
    ms = sif_io.read_sif(path)
    x = R.sample(ms, 12, 21, "rk4", 16).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    _run(cli, "encode", path, "-i", tmp_path / "x.npy", "-o", tmp_path / "z.npy",
         "--method", "heun", "--steps", 24)
    assert _rel(np.load(tmp_path / "z.npy"), R.encode(ms, x, "heun", 24)) <= 1e-5
    _run(cli, "logprob", path, "-i", tmp_path / "x.npy", "-o", tmp_path / "lp.npy",
         "--time", 0.6, "--steps", 20, "--method", "midpoint")
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy"),
                               R.log_prob(ms, x, "midpoint", 20, time=0.6), atol=2e-5)


def test_with_logprob_is_an_alias_of_with_logp():
    m = linear_model(A)
    z = np.array([[0.3, -0.7]])
    a, b = R.decode(m, z, with_logp=True), R.decode(m, z, with_logprob=True)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(R.sample(m, 3, 1, with_logprob=True)[1],
                                  R.sample(m, 3, 1, with_logp=True)[1])


@pytest.mark.parametrize("options", [
    dict(epsilon=0.5, schedule="a", sde_method="heun"),
    dict(epsilon=0.3, schedule="a", sde_method="em"),
    dict(epsilon=0.4, schedule="constant", stop=0.1, sde_method="heun", method="midpoint"),
])
def test_runtime_agrees_on_sde_samples(tmp_path, options):
    cli = siflow_cli()
    m = mixed_model(seed=7)
    m.base = ir.Base("normal", mean=[0.2, -0.1, 0.0], std=[1.0, 0.8, 1.2])
    m.normalization = ir.Normalization(mean=[1.0, 0.0, -1.0], std=[2.0, 1.0, 0.5])
    path = str(tmp_path / "m.sif")
    sif_io.write_sif(m, path)
    ms = sif_io.read_sif(path)
    args = ["--sde", options["epsilon"], "--sde-schedule", options["schedule"],
            "--sde-method", options["sde_method"], "--method", options.get("method", "rk4")]
    if "stop" in options:
        args += ["--sde-stop", options["stop"]]
    _run(cli, "sample", path, "-n", 16, "--seed", 5, "--steps", 40, "-o", tmp_path / "s.npy",
         *args)
    want = R.sample_sde(ms, 16, 5, steps=40, **options)
    assert _rel(np.load(tmp_path / "s.npy"), want) <= 1e-5
