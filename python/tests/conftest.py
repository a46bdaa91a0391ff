# SPDX-License-Identifier: Apache-2.0
# Shared fixtures of the Python module's tests: the repository's models and the CLI to compare
# against (SIFLOW_CLI, set by ctest; tests that need it skip without it).
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import siflow

ROOT = pathlib.Path(__file__).resolve().parents[2]
TWO_MOONS = ROOT / "examples" / "models" / "two_moons.sif"  # d 2, normalised, test vectors
MIXTURE8D = ROOT / "examples" / "models" / "mixture8d.sif"  # d 8
LEARNED = ROOT / "tests" / "bits" / "models" / "learned_normalized.sif"  # learned interpolant
LAYERNORM = ROOT / "tests" / "golden" / "fixtures" / "d_layernorm_gelu.sif"


@pytest.fixture
def model():
    with siflow.load(TWO_MOONS) as m:
        yield m


@pytest.fixture(scope="module")
def uniform_model(tmp_path_factory):
    """converter/examples/fourier_mlp with a uniform base and no test vectors, converted by
    siflow_convert (skips when the converter's Debian packages are missing)."""
    sys.path.insert(0, str(ROOT / "converter"))
    try:
        import siflow_convert
    except ImportError as e:
        pytest.skip(f"siflow_convert cannot be imported ({e}; Debian: python3-onnx, "
                    f"python3-flatbuffers)")
    finally:
        sys.path.pop(0)
    path = tmp_path_factory.mktemp("uniform") / "uniform.sif"
    examples = ROOT / "converter" / "examples"
    siflow_convert.convert(examples / "fourier_mlp.npz", path, arch=examples / "fourier_mlp.json",
                           base="uniform", low=-2.0, high=2.0, test_vectors=0)
    return path


@pytest.fixture(scope="module")
def cli():
    path = os.environ.get("SIFLOW_CLI")
    if not path or not os.path.exists(path):
        pytest.skip("SIFLOW_CLI is not set to the built siflow CLI (ctest sets it)")

    def run(*args):
        result = subprocess.run([path, *map(str, args)], capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"siflow {' '.join(map(str, args))} failed: {result.stderr}")
        return result.stdout

    return run


def bits(a):
    """The exact bit patterns of a float array, for bit-identity checks."""
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)
