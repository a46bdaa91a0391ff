# SPDX-License-Identifier: Apache-2.0
"""npz + JSON → ir.Graph, for frameworks without an ONNX exporter.

The weights live in an .npz archive; a small JSON file describes the architecture (documented
with a complete example in converter/README.md):

    {
      "dim": 2,
      "time_input": "first",                      # t joins x as the first|last column(s)
      "time_features": {"frequencies": "freqs", "include_t": false},   # optional
      "layers": [
        {"type": "linear", "weight": "w0", "bias": "b0"},
        {"type": "silu"},
        {"type": "residual", "layers": [{"type": "linear", "weight": "w1", "bias": "b1"},
                                        {"type": "tanh"}]},
        {"type": "layernorm", "weight": "g", "bias": "b", "eps": 1e-5},
        {"type": "linear", "weight": "w2", "bias": "b2"}
      ]
    }

Linear weights are [out, in] (PyTorch); `"layout": "in_out"` takes [in, out] kernels (JAX/Flax,
Keras) and transposes them. Time features are sin(f·t) then cos(f·t) for each frequency f (f in
radians per unit time; multiply 2π in yourself), optionally followed by t itself.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from .ir import UNARY_KINDS, ConversionError, Graph, Node

ACTIVATIONS = {k: k for k in UNARY_KINDS}
ACTIVATIONS["gelu"] = "gelu_erf"
LAYER_TYPES = ("linear", "layernorm", "residual") + tuple(sorted(ACTIVATIONS))
_KEYS = {"linear": {"type", "weight", "bias", "layout"},
         "layernorm": {"type", "weight", "bias", "eps"},
         "residual": {"type", "layers"}}
_TOP_KEYS = {"dim", "time_input", "time_features", "layers", "name"}


class _Builder:
    """Turns the JSON layer list into ir nodes, fetching arrays from the archive."""

    def __init__(self, arrays, dim: int):
        self.arrays = arrays
        self.g = Graph(dim=dim)
        self.widths = [dim, 1]

    def add(self, node: Node, width: int) -> int:
        tid = self.g.add(node)
        self.widths.append(width)
        return tid

    def array(self, where: str, key: str, spec: dict, required: bool = True) -> Optional[np.ndarray]:
        name = spec.get(key)
        if name is None:
            if required:
                raise ConversionError(f"{where}: missing {key!r} (name of an array in the .npz)")
            return None
        if isinstance(name, list):
            arr = np.asarray(name, dtype=np.float64)
        elif name not in self.arrays:
            raise ConversionError(f"{where}: array {name!r} is not in the .npz (it holds "
                                  f"{sorted(self.arrays)})")
        else:
            arr = np.asarray(self.arrays[name], dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ConversionError(f"{where}: array {name if isinstance(name, str) else key!r} "
                                  f"holds NaN or Inf values")
        return arr

    def layers(self, specs, h: int, path: str) -> int:
        if not isinstance(specs, list) or not specs:
            raise ConversionError(f"{path}: 'layers' must be a non-empty list")
        for i, spec in enumerate(specs):
            h = self.layer(spec, h, f"{path}[{i}]")
        return h

    def layer(self, spec, h: int, where: str) -> int:
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConversionError(f"{where}: a layer must be an object with a 'type'")
        kind = spec["type"]
        where = f"{where} ({kind})"
        if kind not in LAYER_TYPES:
            raise ConversionError(f"{where}: unknown layer type; supported: {list(LAYER_TYPES)}")
        allowed = _KEYS.get(kind, {"type", "alpha"})
        unknown = set(spec) - allowed
        if unknown:
            raise ConversionError(f"{where}: unknown keys {sorted(unknown)}; allowed "
                                  f"{sorted(allowed)}")
        w_in = self.widths[h]
        if kind == "linear":
            w = self.array(where, "weight", spec)
            if spec.get("layout", "out_in") not in ("out_in", "in_out"):
                raise ConversionError(f"{where}: layout must be 'out_in' or 'in_out'")
            if spec.get("layout") == "in_out":
                w = w.T
            b = self.array(where, "bias", spec, required=False)
            if w.ndim != 2 or w.shape[1] != w_in:
                raise ConversionError(f"{where}: shape mismatch, weight is {list(w.shape)} "
                                      f"[out, in] but the input has width {w_in}")
            if b is not None and b.size != w.shape[0]:
                raise ConversionError(f"{where}: bias has {b.size} values, expected "
                                      f"{w.shape[0]}")
            return self.add(Node("fc", [h], name=where, weight=w,
                                 bias=None if b is None else b.reshape(-1)), w.shape[0])
        if kind == "layernorm":
            gamma = self.array(where, "weight", spec, required=False)
            beta = self.array(where, "bias", spec, required=False)
            for p, what in ((gamma, "weight"), (beta, "bias")):
                if p is not None and p.size != w_in:
                    raise ConversionError(f"{where}: {what} has {p.size} values, expected {w_in}")
            eps = float(spec.get("eps", 1e-5))
            if not eps > 0:
                raise ConversionError(f"{where}: eps must be > 0")
            return self.add(Node("layernorm", [h], name=where, epsilon=eps,
                                 gamma=None if gamma is None else gamma.reshape(-1),
                                 beta=None if beta is None else beta.reshape(-1)), w_in)
        if kind == "residual":
            out = self.layers(spec.get("layers"), h, where)
            if self.widths[out] != w_in:
                raise ConversionError(f"{where}: the block maps width {w_in} to "
                                      f"{self.widths[out]}; a residual needs equal widths")
            return self.add(Node("add", [h, out], name=where), w_in)
        unary = ACTIVATIONS[kind]
        alpha = spec.get("alpha", 1.0 if unary == "elu" else 0.01)
        return self.add(Node("unary", [h], name=where, unary=unary, alpha=float(alpha)), w_in)

    def time_part(self, tf) -> list:
        """Tensor ids of the time columns: t, or sin/cos Fourier features [+ t]."""
        if tf is None:
            return [1]
        where = "time_features"
        if not isinstance(tf, dict) or set(tf) - {"frequencies", "include_t"}:
            raise ConversionError(f"{where}: expected {{'frequencies': NAME or list, "
                                  f"'include_t': bool}}")
        f = self.array(where, "frequencies", tf).reshape(-1)
        if f.size == 0:
            raise ConversionError(f"{where}: no frequencies")
        ft = self.add(Node("mul", [1], name="time frequencies", constant=f), f.size)
        s = self.add(Node("unary", [ft], name="time sin", unary="sin"), f.size)
        c = self.add(Node("unary", [ft], name="time cos", unary="cos"), f.size)
        return [s, c] + ([1] if tf.get("include_t") else [])


def from_arch(arch: dict, arrays) -> Graph:
    """Builds the graph for an architecture dict and a mapping name → array."""
    if not isinstance(arch, dict):
        raise ConversionError("the architecture must be a JSON object")
    unknown = set(arch) - _TOP_KEYS
    if unknown:
        raise ConversionError(f"architecture: unknown keys {sorted(unknown)}; allowed "
                              f"{sorted(_TOP_KEYS)}")
    dim = arch.get("dim")
    if not isinstance(dim, int) or dim < 1:
        raise ConversionError(f"architecture: 'dim' must be a positive integer, not {dim!r}")
    order = arch.get("time_input", "last")
    if order not in ("first", "last"):
        raise ConversionError(f"architecture: 'time_input' must be 'first' or 'last', not "
                              f"{order!r}")
    b = _Builder(arrays, dim)
    tparts = b.time_part(arch.get("time_features"))
    ids = tparts + [0] if order == "first" else [0] + tparts
    h = b.add(Node("concat", ids, name="input"), sum(b.widths[i] for i in ids))
    b.g.output = b.layers(arch.get("layers"), h, "layers")
    if b.widths[b.g.output] != dim:
        raise ConversionError(f"the last layer has width {b.widths[b.g.output]}; the velocity "
                              f"needs dim = {dim}")
    b.g.widths()
    return b.g


def from_npz(npz_path, arch) -> Graph:
    """Reads weights from `npz_path` and the architecture from `arch` (dict or JSON file path)."""
    if not isinstance(arch, dict):
        try:
            with open(arch, encoding="utf-8") as f:
                arch = json.load(f)
        except OSError as e:
            raise ConversionError(f"{arch}: cannot read the architecture ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise ConversionError(f"{arch}: not valid JSON ({e})") from None
    try:
        with np.load(os.fspath(npz_path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except OSError as e:
        raise ConversionError(f"{npz_path}: cannot read the .npz ({e})") from None
    except ValueError as e:
        raise ConversionError(f"{npz_path}: not a plain .npz archive ({e})") from None
    return from_arch(arch, arrays)
