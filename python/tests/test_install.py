# SPDX-License-Identifier: Apache-2.0
# Installed packages work on their own: `cmake --install` into a scratch prefix, then a bare
# /usr/bin/python3 with only that prefix's dist-packages on its path imports siflow, finds the
# installed libsiflow_c.so and samples the CLI's bits; and `pip install <build>/python` into a
# virtual environment (Debian's PEP 668 route) does the same.
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import TWO_MOONS

SCRIPT = f"""
import sys, numpy as np, siflow
assert siflow.library_path.startswith(sys.argv[1]), siflow.library_path
with siflow.load({str(TWO_MOONS)!r}) as m:
    np.save(sys.argv[2], m.sample(16, seed=3))
"""


def environment(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SIFLOW_LIBRARY")}
    env.update(extra)
    return env


def needed(name):
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (ctest sets it)")
    return value


@pytest.fixture(scope="module")
def scratch():
    path = pathlib.Path(needed("SIFLOW_INSTALL_SCRATCH"))
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    import siflow  # the build tree's package
    with siflow.load(TWO_MOONS) as m:
        return m.sample(16, seed=3)


def test_cmake_install_puts_an_importable_package_in_dist_packages(scratch, reference):
    prefix = scratch / "prefix"
    subprocess.run([needed("SIFLOW_CMAKE"), "--install", needed("SIFLOW_BUILD_DIR"),
                    "--prefix", str(prefix)], check=True, capture_output=True)
    site = prefix / needed("SIFLOW_PYTHON_INSTALL_DIR")
    assert (site / "siflow" / "__init__.py").exists()
    out = scratch / "installed.npy"
    subprocess.run([sys.executable, "-c", SCRIPT, str(prefix), str(out)], check=True,
                   env=environment(PYTHONPATH=str(site)), cwd=scratch)
    np.testing.assert_array_equal(np.load(out).view(np.uint32), reference.view(np.uint32))


def test_pip_installs_the_built_package_into_a_venv(scratch, reference):
    # A copy: setuptools writes build/ and *.egg-info beside the sources.
    build_python = scratch / "package"
    shutil.copytree(pathlib.Path(needed("SIFLOW_BUILD_DIR")) / "python", build_python,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = scratch / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"python3 -m venv failed (Debian: python3-venv): {made.stderr.strip()}")
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation",
                          "--no-deps", "--no-index", str(build_python)],
                         capture_output=True, text=True, cwd=scratch)
    if pip.returncode != 0 and "setuptools" in pip.stdout + pip.stderr:
        pytest.skip("setuptools is missing (Debian: python3-setuptools)")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    out = scratch / "venv.npy"
    subprocess.run([str(venv / "bin" / "python"), "-c", SCRIPT, str(venv), str(out)],
                   check=True, env=environment(), cwd=scratch)
    np.testing.assert_array_equal(np.load(out).view(np.uint32), reference.view(np.uint32))
