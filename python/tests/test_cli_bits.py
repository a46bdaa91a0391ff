# SPDX-License-Identifier: Apache-2.0
# The module gives the CLI's bits: the same model, options and seed through `siflow sample`,
# `logprob`, `encode`, `decode`, `velocity` and `validate` and through Python must produce
# identical float32/float64 bit patterns (both call the same runtime with the same options).
import numpy as np
import pytest

import siflow
from conftest import LAYERNORM, LEARNED, MIXTURE8D, TWO_MOONS, bits


def npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


@pytest.mark.parametrize("method", ["euler", "heun", "midpoint", "rk4", "rk4-38"])
def test_sample_matches_cli_for_every_method(cli, tmp_path, method):
    out = tmp_path / "x.npy"
    cli("sample", TWO_MOONS, "-n", 37, "--seed", 11, "--method", method, "--steps", 9,
        "-o", out)
    with siflow.load(TWO_MOONS) as m:
        x = m.sample(37, seed=11, method=method, steps=9)
    assert x.dtype == np.float32 and x.shape == (37, 2)
    np.testing.assert_array_equal(bits(x), bits(np.load(out)))


@pytest.mark.parametrize("method,grid_kind", [("ab2", "uniform"), ("ab3", "power:2"),
                                              ("ab4", "cosine"), ("rk4", "shift:3")])
def test_sample_matches_cli_for_multistep_methods_and_grid_kinds(cli, tmp_path, method,
                                                                 grid_kind):
    out = tmp_path / "x.npy"
    cli("sample", TWO_MOONS, "-n", 37, "--seed", 11, "--method", method, "--steps", 9,
        "--grid-kind", grid_kind, "-o", out)
    with siflow.load(TWO_MOONS) as m:
        x = m.sample(37, seed=11, method=method, steps=9, grid_kind=grid_kind)
    np.testing.assert_array_equal(bits(x), bits(np.load(out)))


def test_tuned_solver_with_coefficients_matches_cli(cli, tmp_path):
    # At 4 NFE tune-solver keeps ab2 with per-step coefficients on this model (it says so); the
    # module selects the stored solver by name and gets the CLI's bits.
    tuned = tmp_path / "tuned.sif"
    report = cli("tune-solver", TWO_MOONS, "--nfe", 4, "--draws", 256, "--sweeps", 2,
                 "-o", tuned)
    assert "coefficients  6 per-step" in report
    out = tmp_path / "x.npy"
    cli("sample", tuned, "-n", 37, "--seed", 11, "--solver", "tuned-4", "-o", out)
    with siflow.load(tuned) as m:
        x = m.sample(37, seed=11, solver="tuned-4")
    np.testing.assert_array_equal(bits(x), bits(np.load(out)))


def test_dopri5_log_prob_matches_cli(cli, tmp_path):
    data, out = npy(tmp_path, "x.npy", np.array([[0.1, 0.2], [1.0, -0.5]], np.float32)), \
        tmp_path / "lp.npy"
    cli("logprob", TWO_MOONS, "-i", data, "--method", "dopri5", "--rtol", 1e-7, "--atol", 1e-7,
        "-o", out)
    with siflow.load(TWO_MOONS) as m:
        lp = m.log_prob(np.load(data), method="dopri5", rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(bits(lp), bits(np.load(out)))


@pytest.mark.parametrize("path", [LEARNED, LAYERNORM, MIXTURE8D])
def test_sample_with_log_prob_matches_cli_on_other_models(cli, tmp_path, path):
    out, lp_out = tmp_path / "x.npy", tmp_path / "lp.npy"
    cli("sample", path, "-n", 300, "--seed", 3, "--steps", 7, "--max-batch", 64, "-o", out,
        "--logprob-out", lp_out)
    with siflow.load(path) as m:
        x, lp = m.sample(300, seed=3, steps=7, max_batch=64, log_prob=True)
    np.testing.assert_array_equal(bits(x), bits(np.load(out)))
    assert lp.dtype == np.float64
    np.testing.assert_array_equal(bits(lp), bits(np.load(lp_out)))


def test_sample_with_grid_threads_and_reference_backend_matches_cli(cli, tmp_path):
    grid = np.array([0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
    out = tmp_path / "x.npy"
    cli("sample", TWO_MOONS, "-n", 50, "--seed", 5, "--grid", npy(tmp_path, "g.npy", grid),
        "--threads", 2, "--backend", "reference", "--method", "heun", "-o", out)
    with siflow.load(TWO_MOONS) as m:
        x = m.sample(50, seed=5, grid=grid, threads=2, backend="reference", method="heun")
    np.testing.assert_array_equal(bits(x), bits(np.load(out)))


@pytest.mark.parametrize("sde", [
    dict(sde_epsilon=0.5),
    dict(sde_epsilon=0.3, sde_method="em", sde_schedule="constant", sde_stop_delta=0.05),
    dict(sde_epsilon=1.0, sde_method="heun", sde_schedule="a"),
])
def test_sde_sample_matches_cli(cli, tmp_path, sde):
    flags = {"sde_epsilon": "--sde", "sde_method": "--sde-method",
             "sde_schedule": "--sde-schedule", "sde_stop_delta": "--sde-stop"}
    args = [a for k, v in sde.items() for a in (flags[k], v)]
    out = tmp_path / "x.npy"
    cli("sample", TWO_MOONS, "-n", 40, "--seed", 9, "--steps", 20, *args, "-o", out)
    with siflow.load(TWO_MOONS) as m:
        x = m.sample(40, seed=9, steps=20, **sde)
    np.testing.assert_array_equal(bits(x), bits(np.load(out)))


@pytest.mark.parametrize("divergence,extra_cli,extra_py", [
    ("exact", [], {}),
    ("hutchinson", [], {}),
    ("hutchinson:4", ["--probe", "gaussian", "--seed", 77],
     dict(probes=4, probe="gaussian", seed=77)),
    ("exact", ["--time", 0.5, "--method", "midpoint"], dict(time=0.5, method="midpoint")),
])
def test_log_prob_matches_cli(cli, tmp_path, divergence, extra_cli, extra_py):
    x = np.random.default_rng(1).normal(size=(70, 2)).astype(np.float32)
    out = tmp_path / "lp.npy"
    cli("logprob", TWO_MOONS, "-i", npy(tmp_path, "x.npy", x), "--divergence", divergence,
        "--steps", 8, "--max-batch", 32, *extra_cli, "-o", out)
    with siflow.load(TWO_MOONS) as m:
        lp = m.log_prob(x, divergence=divergence.split(":")[0], steps=8, max_batch=32,
                        **extra_py)
    assert lp.dtype == np.float64 and lp.shape == (70,)
    np.testing.assert_array_equal(bits(lp), bits(np.load(out)))


def test_encode_and_decode_match_cli(cli, tmp_path):
    x = np.random.default_rng(2).normal(size=(33, 8))  # float64 input, as the CLI reads it
    x_path = npy(tmp_path, "x.npy", x)
    cli("encode", MIXTURE8D, "-i", x_path, "--steps", 6, "--method", "rk4-38", "-o",
        tmp_path / "z.npy")
    cli("decode", MIXTURE8D, "-i", x_path, "--steps", 6, "--logprob-out", tmp_path / "lp.npy",
        "--divergence", "hutchinson:2", "--seed", 4, "-o", tmp_path / "y.npy")
    with siflow.load(MIXTURE8D) as m:
        z = m.encode(x, steps=6, method="rk4-38")
        y, lp = m.decode(x, steps=6, log_prob=True, divergence="hutchinson", probes=2, seed=4)
    np.testing.assert_array_equal(bits(z), bits(np.load(tmp_path / "z.npy")))
    np.testing.assert_array_equal(bits(y), bits(np.load(tmp_path / "y.npy")))
    np.testing.assert_array_equal(bits(lp), bits(np.load(tmp_path / "lp.npy")))


def test_velocity_matches_cli_for_a_time_and_per_row_times(cli, tmp_path):
    rng = np.random.default_rng(3)
    y = rng.normal(size=(25, 2)).astype(np.float32)
    t = rng.uniform(size=25)
    y_path = npy(tmp_path, "y.npy", y)
    cli("velocity", TWO_MOONS, "-i", y_path, "--times", 0.3, "-o", tmp_path / "v1.npy")
    cli("velocity", TWO_MOONS, "-i", y_path, "--times", npy(tmp_path, "t.npy", t),
        "-o", tmp_path / "v2.npy")
    with siflow.load(TWO_MOONS) as m:
        v1 = m.velocity(y, 0.3)
        v2 = m.velocity(y, t)
        v3 = m.velocity(y, t.reshape(25, 1).astype(np.float32))
    np.testing.assert_array_equal(bits(v1), bits(np.load(tmp_path / "v1.npy")))
    np.testing.assert_array_equal(bits(v2), bits(np.load(tmp_path / "v2.npy")))
    np.testing.assert_array_equal(bits(v3), bits(v2))


def test_validate_reports_the_cli_numbers(cli):
    text = cli("validate", TWO_MOONS)
    with siflow.load(TWO_MOONS) as m:
        r = m.validate()
    assert r.ok and r.velocity_count == 64 and r.trajectory_count == 8
    assert f"max relative error {r.velocity_max_error:.3g}" in text
    assert f"{r.trajectory_count} of {r.trajectory_steps} RK4 steps: max relative error " \
           f"{r.trajectory_max_error:.3g}" in text


def test_info_matches_cli_info(cli):
    text = cli("info", TWO_MOONS)
    with siflow.load(TWO_MOONS) as m:
        i = m.info
        kernels = m.kernels()
    assert f"dim           {i.dim}\n" in text
    assert f"nodes         {i.node_count}\n" in text
    assert f"parameters    {i.parameter_count} " in text
    assert f"test vectors  {i.test_vector_count} velocity points, " \
           f"{i.test_trajectory_count} trajectories" in text
    for key, value in i.metadata.items():
        assert f"  {key} = {value}\n" in text
    for node, (op, _, _) in enumerate(i.nodes):
        assert f"node {node:<3} {op:<18}" in text
        assert text.split(f"node {node:<3} {op:<18}")[1].split("\n")[0].rstrip().endswith(
            kernels[node])
