# SPDX-License-Identifier: Apache-2.0
"""The committed FlatBuffers code in siflow_convert/_generated/ must be what
converter/tools/regen_fb.py makes from schemas/siflow.fbs today."""
import filecmp
import importlib.util
import os
import shutil

import pytest

from conftest import CONVERTER

GENERATED = os.path.join(CONVERTER, "siflow_convert", "_generated")
TOOL = os.path.join(CONVERTER, "tools", "regen_fb.py")


def _load_tool():
    spec = importlib.util.spec_from_file_location("regen_fb", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _py_files(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".py"))


def test_committed_generated_code_is_fresh(tmp_path):
    if shutil.which("flatc") is None:
        pytest.skip("flatc is not installed (Debian package flatbuffers-compiler); cannot "
                    "regenerate the FlatBuffers code to compare")
    fresh = tmp_path / "_generated"
    _load_tool().generate(str(fresh))
    want, have = _py_files(fresh), _py_files(GENERATED)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    assert not missing, f"_generated/ lacks {missing}; run converter/tools/regen_fb.py"
    assert not extra, f"_generated/ holds stale files {extra}; run converter/tools/regen_fb.py"
    for name in want:
        assert filecmp.cmp(fresh / name, os.path.join(GENERATED, name), shallow=False), \
            f"_generated/{name} differs from flatc's output for schemas/siflow.fbs; run " \
            f"converter/tools/regen_fb.py"


def test_generated_code_has_no_absolute_package_imports():
    for name in _py_files(GENERATED):
        with open(os.path.join(GENERATED, name), encoding="utf-8") as f:
            assert "from siflow.fb" not in f.read(), f"_generated/{name} imports siflow.fb"
