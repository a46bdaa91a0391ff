# SPDX-License-Identifier: Apache-2.0
"""The siflow-convert command: options, exit codes, messages, atomic output, the end-to-end
check with `siflow validate`, and the offline venv installation."""
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import CONVERTER, rel_err, siflow_cli, velocity
from siflow_convert import ConversionError, convert, from_onnx
from siflow_convert.cli import main

SCRIPT = os.path.join(CONVERTER, "siflow-convert")
D = 2
RNG = np.random.default_rng(5)
W0, B0 = RNG.normal(size=(8, D + 1)), RNG.normal(size=8)
W1, B1 = RNG.normal(size=(D, 8)) * 0.5, RNG.normal(size=D) * 0.1


def onnx_model(act="Tanh", name_x="x", name_t="t"):
    inits = [numpy_helper.from_array(a.astype(np.float32), n)
             for n, a in (("W0", W0), ("B0", B0), ("W1", W1), ("B1", B1))]
    nodes = [helper.make_node("Concat", [name_x, name_t], ["h"], axis=1, name="cat"),
             helper.make_node("Gemm", ["h", "W0", "B0"], ["a"], transB=1, name="fc0"),
             helper.make_node(act, ["a"], ["b"], name="act"),
             helper.make_node("Gemm", ["b", "W1", "B1"], ["v"], transB=1, name="fc1")]
    g = helper.make_graph(nodes, "net", [
        helper.make_tensor_value_info(name_x, TensorProto.FLOAT, ["B", D]),
        helper.make_tensor_value_info(name_t, TensorProto.FLOAT, ["B", 1])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["B", D])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def onnx_file(tmp_path):
    p = tmp_path / "net.onnx"
    onnx.save(onnx_model(), str(p))
    return str(p)


def run(*args):
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def validate(path):
    r = subprocess.run([siflow_cli(), "validate", str(path)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


# ------------------------------------------------------------------------------ usage

def test_help_prints_defaults():
    r = run("--help")
    assert r.returncode == 0
    for text in ("(default: trig)", "(default: normal)", "(default: 64)", "(default: 17)",
                 "--negate-velocity", "--reverse-time", "--time-column"):
        assert text in r.stdout


@pytest.mark.parametrize("args,message", [
    ((), "the following arguments are required"),
    (("--time-column", "middle"), "invalid choice"),
    (("--base", "uniform"), "--base uniform needs --low and --high"),
    (("--low", "0"), "--low/--high need --base uniform"),
    (("--time-scale", "0"), "--time-scale must be > 0"),
    (("--time-scale", "nan"), "not finite"),
    (("--test-vectors", "-1"), "must be in [0, 65536]"),
    (("--interpolant", "linear", "--interpolant-coeffs", "c.json"), "exclude each other"),
    (("--time-column", "first", "--time-input", "t"), "exclude each other"),
])
def test_usage_errors_exit_2(onnx_file, tmp_path, args, message):
    r = run(onnx_file, "-o", tmp_path / "o.sif", *args) if args else run(onnx_file)
    assert r.returncode == 2
    assert "siflow-convert: error:" in r.stderr and message in r.stderr
    assert "Traceback" not in r.stderr


def test_conversion_error_exits_1_with_named_cause(tmp_path):
    p = tmp_path / "sign.onnx"
    onnx.save(onnx_model(act="Sign"), str(p))
    out = tmp_path / "o.sif"
    r = run(p, "-o", out)
    assert r.returncode == 1
    assert r.stderr.startswith("siflow-convert: error: node 'act' (Sign): op Sign is not supported")
    assert "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (("--base-mean", "1,2,3"), "--base-mean: 3 values given, the model has dim 2"),
    (("--base-std", "0"), "every standard deviation must be > 0"),
    (("--base", "uniform", "--low", "1", "--high", "0"), "--high must exceed --low"),
    (("--meta", "novalue"), "expected key=value"),
    (("--time-input", "tau"), "unknown input name 'tau'"),
    (("--dim", "5"), "width 2 but dim=5"),
])
def test_bad_option_values_exit_1(onnx_file, tmp_path, args, message):
    r = run(onnx_file, "-o", tmp_path / "o.sif", "--test-vectors", "0", *args)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_missing_input_file(tmp_path):
    r = run(tmp_path / "none.onnx", "-o", tmp_path / "o.sif")
    assert r.returncode == 1 and "none.onnx: no such file" in r.stderr


def test_normalize_refuses_constant_feature(onnx_file, tmp_path):
    data = RNG.normal(size=(50, D))
    data[:, 1] = 3.0
    np.save(tmp_path / "d.npy", data)
    r = run(onnx_file, "-o", tmp_path / "o.sif", "--normalize", tmp_path / "d.npy")
    assert r.returncode == 1 and "feature(s) [1] are constant" in r.stderr


# ------------------------------------------------------------------------------ conversions

def test_convert_with_options_round_trips(onnx_file, tmp_path):
    from siflow_convert.sif_io import read_sif
    data = RNG.normal(size=(100, D)) * [2.0, 0.5] + [1.0, -1.0]
    np.save(tmp_path / "d.npy", data)
    out = tmp_path / "m.sif"
    r = run(onnx_file, "-o", out, "--interpolant", "linear", "--base-mean", "0.5",
            "--base-std", "1,2", "--normalize", tmp_path / "d.npy", "--name", "demo",
            "--meta", "a=1", "--meta", "b=x=y", "--test-vectors", "16", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "dim 2" in r.stdout and "test vectors: 16" in r.stdout
    m = read_sif(str(out))
    assert m.name == "demo" and m.interpolant.kind == "linear"
    assert m.metadata["a"] == "1" and m.metadata["b"] == "x=y"
    np.testing.assert_allclose(m.base.mean, [0.5, 0.5])
    np.testing.assert_allclose(m.base.std, [1.0, 2.0])
    np.testing.assert_allclose(m.normalization.mean, data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(m.normalization.std, data.std(0), rtol=1e-6)
    assert len(m.test_vectors.t) == 16
    y = RNG.normal(size=(4, D))
    want = velocity(from_onnx(onnx_file), 0.4, y)
    assert rel_err(velocity(m.graph, 0.4, y), want) <= 1e-6
    validate(out)


@pytest.mark.parametrize("extra", [(), ("--fp16",), ("--base", "uniform", "--low", "-2",
                                                     "--high", "2,3"),
                                   ("--reverse-time", "--time-scale", "2", "--negate-velocity")])
def test_validate_passes(onnx_file, tmp_path, extra):
    out = tmp_path / "m.sif"
    r = run(onnx_file, "-o", out, *extra)
    assert r.returncode == 0, r.stderr
    validate(out)


def test_learned_interpolant_coeffs(onnx_file, tmp_path):
    from siflow_convert.sif_io import read_sif
    (tmp_path / "c.json").write_text('{"alpha": [0.1, -0.05], "beta": [0.2, 0.0]}')
    out = tmp_path / "m.sif"
    r = run(onnx_file, "-o", out, "--interpolant-coeffs", tmp_path / "c.json")
    assert r.returncode == 0, r.stderr
    m = read_sif(str(out))
    assert m.interpolant.kind == "learned_fourier"
    np.testing.assert_allclose(m.interpolant.alpha, [0.1, -0.05])
    validate(out)


def test_npz_input(tmp_path):
    out = tmp_path / "m.sif"
    ex = os.path.join(CONVERTER, "examples")
    r = run(os.path.join(ex, "fourier_mlp.npz"), "--arch", os.path.join(ex, "fourier_mlp.json"),
            "-o", out)
    assert r.returncode == 0, r.stderr
    validate(out)
    r = run(os.path.join(ex, "fourier_mlp.npz"), "-o", out)
    assert r.returncode == 1 and "needs --arch" in r.stderr


def test_torch_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(D + 1, 8), torch.nn.SiLU(),
                              torch.nn.Linear(8, D))
    torch.save(net, str(tmp_path / "m.pt"))
    torch.jit.script(net).save(str(tmp_path / "m.ts"))
    for src in ("m.pt", "m.ts"):
        out = tmp_path / (src + ".sif")
        r = run(tmp_path / src, "-o", out, "--time-column", "last")
        assert r.returncode == 1 and "needs --dim" in r.stderr
        r = run(tmp_path / src, "-o", out, "--dim", D, "--time-column", "last")
        assert r.returncode == 0, r.stderr
        validate(out)


def test_a_file_the_runtime_would_refuse_is_not_written(tmp_path):
    # Weights x1e3 with ReLU: the float64 reference trajectories overflow float32 (and their
    # tolerance becomes NaN); the runtime would refuse the file, so the converter does, naming
    # the field, with a non-zero exit.
    m = onnx_model(act="Relu")
    for init in m.graph.initializer:
        big = numpy_helper.to_array(init).astype(np.float64) * 1e3
        init.CopyFrom(numpy_helper.from_array(big.astype(np.float32), init.name))
    src, out = tmp_path / "big.onnx", tmp_path / "big.sif"
    onnx.save(m, str(src))
    r = run(src, "-o", out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "test vectors trajectory_end[" in r.stderr and "overflows float32" in r.stderr
    assert not out.exists()
    r = run(src, "-o", out, "--test-vectors", "0")  # without test vectors the model is valid
    assert r.returncode == 0, r.stderr
    info = subprocess.run([siflow_cli(), "info", str(out)], capture_output=True,
                         text=True, timeout=300)
    assert info.returncode == 0, info.stderr


def test_failed_conversion_leaves_existing_output_untouched(tmp_path):
    p = tmp_path / "sign.onnx"
    onnx.save(onnx_model(act="Sign"), str(p))
    out = tmp_path / "o.sif"
    out.write_bytes(b"previous")
    assert main([str(p), "-o", str(out)]) == 1
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["o.sif", "sign.onnx"]


def test_output_is_written_atomically(onnx_file, tmp_path, monkeypatch):
    out = tmp_path / "o.sif"
    out.write_bytes(b"previous")

    def boom(src, dst):
        raise OSError("rename refused")
    monkeypatch.setattr(os, "replace", boom)
    assert main([onnx_file, "-o", str(out), "--test-vectors", "0"]) == 1
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["net.onnx", "o.sif"]


def test_convert_api_and_torch_not_imported():
    code = ("import sys; sys.path.insert(0, %r); import siflow_convert; "
            "print('torch' in sys.modules)" % CONVERTER)
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr
    m = convert(onnx_model(), test_vectors=0)
    assert m.dim == D and m.test_vectors is None
    with pytest.raises(ConversionError, match="unknown base"):
        convert(onnx_model(), test_vectors=0, base="cauchy")


def test_module_entry_point(onnx_file, tmp_path):
    env = dict(os.environ, PYTHONPATH=CONVERTER)
    r = subprocess.run(["/usr/bin/python3", "-m", "siflow_convert", onnx_file, "-o",
                        str(tmp_path / "m.sif"), "--test-vectors", "0"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(os.environ.get("SIFLOW_SKIP_VENV") == "1", reason="SIFLOW_SKIP_VENV=1")
def test_offline_venv_install(tmp_path, onnx_file):
    venv = tmp_path / "V"
    r = subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip("python3-venv is not installed: " + r.stderr.strip()[-200:])
    src = tmp_path / "src"
    shutil.copytree(CONVERTER, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                   "build", "tests"))
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation",
                        "--no-deps", "--no-index", str(src)], capture_output=True, text=True,
                       timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = tmp_path / "m.sif"
    r = subprocess.run([str(venv / "bin" / "siflow-convert"), onnx_file, "-o", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import siflow_convert._generated, siflow_convert; "
                        "print(siflow_convert.__file__)"], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert str(venv) in r.stdout, r.stdout + r.stderr
    validate(out)


def _golden_torch_log_prob():
    """The PyTorch-only float64 log-likelihood oracle of tests/golden/roundtrip_torch.py (classic
    RK4 backwards on (y, l), exact divergence by autograd, N(0, I) base), for nets that take one
    input [x, t]."""
    import importlib.util
    path = os.path.join(os.path.dirname(CONVERTER), "tests", "golden", "roundtrip_torch.py")
    spec = importlib.util.spec_from_file_location("golden_roundtrip_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.torch_log_prob


def test_torch_round_trip_validate_and_logprob(tmp_path):
    """PyTorch module → torch.save → siflow-convert → siflow validate → siflow logprob, which
    matches the PyTorch float64 log-likelihood (RK4, 32 steps, exact divergence)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(D + 1, 16), torch.nn.SiLU(),
                              torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, D))
    torch.save(net, str(tmp_path / "net.pt"))
    out = tmp_path / "net.sif"
    r = run(tmp_path / "net.pt", "-o", out, "--dim", D, "--time-column", "last")
    assert r.returncode == 0, r.stderr
    validate(out)
    x = np.random.default_rng(8).normal(size=(20, D))
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([siflow_cli(), "logprob", str(out), "-i", str(tmp_path / "x.npy"), "-o",
                        str(tmp_path / "lp.npy"), "--method", "rk4", "--steps", "32"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "lp.npy")
    want = _golden_torch_log_prob()(net.double(), torch.from_numpy(x), 32).numpy()
    print("logprob max abs diff vs torch float64:", np.max(np.abs(got - want)))
    assert np.max(np.abs(got - want)) <= 1e-3, np.max(np.abs(got - want))
