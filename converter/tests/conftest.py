# SPDX-License-Identifier: Apache-2.0
"""Shared helpers for the converter tests: the package on sys.path, torch kept to one thread,
and `velocity(graph, t, y)` evaluating an imported graph with the float64 reference."""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERTER = os.path.dirname(HERE)
REPO = os.path.dirname(CONVERTER)
sys.path.insert(0, CONVERTER)

from siflow_convert.ir import FlowModel  # noqa: E402


def velocity(graph, t, y):
    """v(t, y) of an ir.Graph by siflow_convert.reference (float64), for rows y at scalar t."""
    from siflow_convert import reference
    y = np.asarray(y, dtype=np.float64)
    return np.asarray(reference.velocity(FlowModel(graph=graph), t, y), dtype=np.float64)


def rel_err(got, want):
    return float(np.max(np.abs(np.asarray(got) - want)) / max(np.max(np.abs(want)), 1e-300))


def siflow_cli():
    path = os.environ.get("SIFLOW_CLI", os.path.join(REPO, "build", "runtime", "cli", "siflow"))
    if not os.access(path, os.X_OK):
        pytest.skip(f"siflow CLI not built ({path})")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    yield
