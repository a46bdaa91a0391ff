# SPDX-License-Identifier: Apache-2.0
"""from_npz / from_arch: the committed example pair, every layer type, and the error paths."""
import json
import math
import os

import numpy as np
import pytest

from conftest import CONVERTER, rel_err, velocity
from siflow_convert import ConversionError, from_arch, from_npz

EXAMPLE_NPZ = os.path.join(CONVERTER, "examples", "fourier_mlp.npz")
EXAMPLE_JSON = os.path.join(CONVERTER, "examples", "fourier_mlp.json")


def _silu(x):
    return x / (1 + np.exp(-x))


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _ln(x, g, b, eps):
    mu = x.mean(1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(1, keepdims=True) + eps) * g + b


def example_forward(a, t, y):
    """The example architecture written out in numpy (float64)."""
    f = a["freqs"].astype(np.float64) * t
    tf = np.broadcast_to(np.concatenate([np.sin(f), np.cos(f)]), (len(y), 2 * f.size))
    h = np.hstack([tf, y]) @ a["w0"].astype(np.float64).T + a["b0"]
    h = _silu(h)
    r = _ln(h, a["ln_g"], a["ln_b"], 1e-5) @ a["w1"].astype(np.float64).T + a["b1"]
    h = h + _gelu(r)
    return h @ a["w2"].astype(np.float64).T + a["b2"]


def test_example_pair_matches_numpy_forward():
    g = from_npz(EXAMPLE_NPZ, EXAMPLE_JSON)
    a = dict(np.load(EXAMPLE_NPZ))
    y = np.random.default_rng(0).normal(size=(9, 2))
    for t in (0.0, 0.25, 1.0):
        assert rel_err(velocity(g, t, y), example_forward(a, t, y)) <= 1e-5


def _arrays(dim=2, width=5, rng=np.random.default_rng(3)):
    return {"w0": rng.normal(size=(width, dim + 1)), "b0": rng.normal(size=width),
            "w1": rng.normal(size=(dim, width)), "k0": rng.normal(size=(dim + 1, width))}


@pytest.mark.parametrize("order", ["first", "last"])
@pytest.mark.parametrize("act,fn", [("relu", lambda x: np.maximum(x, 0)), ("tanh", np.tanh),
                                    ("selu", None), ("leaky_relu", None), ("gelu_tanh", None)])
def test_layer_types_and_time_order(order, act, fn):
    a = _arrays()
    spec = {"type": act}
    if act == "leaky_relu":
        spec["alpha"] = 0.3
        fn = lambda x: np.where(x > 0, x, 0.3 * x)  # noqa: E731
    if act == "selu":
        fn = lambda x: 1.0507009873554805 * np.where(  # noqa: E731
            x > 0, x, 1.6732632423543772 * np.expm1(x))
    if act == "gelu_tanh":
        fn = lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)  # noqa: E731
                                              * (x + 0.044715 * x ** 3)))
    arch = {"dim": 2, "time_input": order, "layers": [
        {"type": "linear", "weight": "w0", "bias": "b0"}, spec,
        {"type": "linear", "weight": "w1"}]}
    g = from_arch(arch, a)
    y = np.random.default_rng(4).normal(size=(6, 2))
    tcol = np.full((6, 1), 0.3)
    inp = np.hstack([tcol, y]) if order == "first" else np.hstack([y, tcol])
    want = fn(inp @ a["w0"].T + a["b0"]) @ a["w1"].T
    assert rel_err(velocity(g, 0.3, y), want) <= 1e-5


def test_in_out_layout_and_include_t():
    a = _arrays()
    a["fr"] = np.array([1.5])
    a["k"] = np.random.default_rng(5).normal(size=(2 + 3, 2))     # [in, out]
    arch = {"dim": 2, "time_input": "last",
            "time_features": {"frequencies": "fr", "include_t": True},
            "layers": [{"type": "linear", "weight": "k", "layout": "in_out"}]}
    g = from_arch(arch, a)
    y = np.random.default_rng(6).normal(size=(4, 2))
    t = 0.7
    inp = np.hstack([y, np.tile([math.sin(1.5 * t), math.cos(1.5 * t), t], (4, 1))])
    assert rel_err(velocity(g, t, y), inp @ a["k"]) <= 1e-5


@pytest.mark.parametrize("arch,arrays,message", [
    ({"dim": 2, "layers": [{"type": "linear", "weight": "nope"}]}, {},
     r"layers\[0\] \(linear\): array 'nope' is not in the .npz"),
    ({"dim": 2, "layers": [{"type": "linear", "weight": "w"}]}, {"w": np.ones((2, 5))},
     r"layers\[0\] \(linear\): shape mismatch, weight is \[2, 5\]"),
    ({"dim": 2, "layers": [{"type": "conv"}]}, {}, r"layers\[0\] \(conv\): unknown layer type"),
    ({"dim": 2, "layers": [{"type": "linear", "weight": "w", "bais": "b"}]},
     {"w": np.ones((2, 3))}, r"unknown keys \['bais'\]"),
    ({"dim": 2, "layers": [{"type": "linear", "weight": "w"}]},
     {"w": np.full((2, 3), np.nan)}, "NaN"),
    ({"dim": 2, "layers": [{"type": "linear", "weight": "w"}]}, {"w": np.ones((4, 3))},
     "last layer has width 4"),
    ({"dim": 2, "layers": [{"type": "linear", "weight": "w"},
                           {"type": "residual", "layers": [{"type": "linear", "weight": "u"}]}]},
     {"w": np.ones((2, 3)), "u": np.ones((3, 2))}, r"residual.*equal widths"),
    ({"layers": []}, {}, "'dim' must be a positive integer"),
    ({"dim": 2, "time_input": "middle", "layers": []}, {}, "'time_input' must be"),
])
def test_errors(arch, arrays, message):
    with pytest.raises(ConversionError, match=message):
        from_arch(arch, arrays)


def test_bad_json_file(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("{not json")
    with pytest.raises(ConversionError, match="a.json: not valid JSON"):
        from_npz(EXAMPLE_NPZ, str(p))


def test_readme_example_is_the_committed_json():
    """converter/README.md documents the committed example verbatim."""
    with open(os.path.join(CONVERTER, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(EXAMPLE_JSON, encoding="utf-8") as f:
        arch = json.load(f)
    start = readme.index("```json\n") + len("```json\n")
    assert json.loads(readme[start:readme.index("```", start)]) == arch
