# SPDX-License-Identifier: Apache-2.0
"""PyTorch → ir.Graph, by exporting the module to ONNX in memory and calling from_onnx.

torch is imported only inside these functions, so `import siflow_convert` works without it.
"""
from __future__ import annotations

import copy
import io
import os
import zipfile
from typing import Optional

from .ir import ConversionError, Graph
from .onnx_import import from_onnx

TIME_SHAPES = ("column", "batch", "scalar", "one")   # t as [B, 1], [B], [] or [1]


def _torch():
    try:
        import torch
    except ImportError:
        raise ConversionError("PyTorch is not installed (Debian: python3-torch); it is needed "
                              "only for PyTorch models; export to ONNX elsewhere and convert "
                              "the .onnx file instead") from None
    return torch


def _example_inputs(torch, dim, time_column, time_shape: str, batch: int = 3):
    """Example tensors and the ONNX names/dynamic axes for the chosen input layout."""
    if time_column is not None:
        return ((torch.zeros(batch, dim + 1),), ["xt"], {"xt": {0: "B"}, "v": {0: "B"}})
    if time_shape not in TIME_SHAPES:
        raise ConversionError(f"time_shape must be one of {TIME_SHAPES}, not {time_shape!r}")
    t = {"column": lambda: torch.full((batch, 1), 0.5), "batch": lambda: torch.full((batch,), 0.5),
         "scalar": lambda: torch.tensor(0.5), "one": lambda: torch.tensor([0.5])}[time_shape]()
    axes = {"x": {0: "B"}, "v": {0: "B"}}
    if time_shape in ("column", "batch"):
        axes["t"] = {0: "B"}
    sample = (dim,) if isinstance(dim, int) else tuple(dim)
    return (torch.zeros((batch,) + sample), t), ["x", "t"], axes


def export_onnx(module, dim: int, time_column: Optional[str] = None, time_shape: str = "column",
                argument_order: str = "xt", opset: int = 17) -> bytes:
    """Exports `module` (float32, eval mode, dynamic batch axis) to ONNX bytes.

    The module is called as module(x, t) (argument_order "xt") or module(t, x) ("tx"), or as
    module(xt) with one [B, dim + 1] input when time_column is "first"/"last".
    """
    torch = _torch()
    shaped = isinstance(dim, (tuple, list)) and 1 <= len(dim) <= 3 and time_column is None and \
        all(isinstance(e, int) and e >= 1 for e in dim)
    if not shaped and (not isinstance(dim, int) or dim < 1):
        raise ConversionError(f"dim must be a positive integer (the width of x) or, for x with "
                              f"two inputs, a per-sample shape such as (C, H, W), not {dim!r}")
    if argument_order not in ("xt", "tx"):
        raise ConversionError(f"argument_order must be 'xt' or 'tx', not {argument_order!r}")
    args, names, axes = _example_inputs(torch, dim, time_column, time_shape)
    if time_column is None and argument_order == "tx":
        args, names = args[::-1], names[::-1]
    try:
        module = copy.deepcopy(module)     # .float()/.eval() must not change the caller's module
    except Exception:
        pass
    was_training = getattr(module, "training", False)
    buf = io.BytesIO()
    try:
        module = module.float()
        module.eval()
        with torch.no_grad():
            torch.onnx.export(module, args, buf, input_names=names, output_names=["v"],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    except ConversionError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"torch.onnx.export failed (opset {opset}, inputs {names}): "
                              f"{first}") from None
    finally:
        if was_training and hasattr(module, "train"):
            module.train()
    return buf.getvalue()


def from_torch(module, dim: int, time_column: Optional[str] = None,
               two_inputs: Optional[bool] = None, opset: int = 17, time_shape: str = "column",
               argument_order: str = "xt") -> Graph:
    """Converts a torch.nn.Module (or TorchScript module) computing v(t, x) into an ir.Graph.

    Layouts: two inputs module(x [B, dim], t) (dim may be a per-sample shape such as (C, H, W):
    x is then [B, C, H, W], format 1.4) with t shaped by `time_shape` ("column" [B, 1],
    "batch" [B], "scalar" [], "one" [1]), argument order "xt" or "tx"; or one input
    module(xt [B, dim + 1]) with t in the first or last column (time_column). `two_inputs`
    defaults to `time_column is None`; giving both two_inputs=True and a time_column is an error.
    """
    if two_inputs is None:
        two_inputs = time_column is None
    if two_inputs and time_column is not None:
        raise ConversionError("two_inputs=True contradicts time_column (one concatenated input)")
    if not two_inputs and time_column is None:
        raise ConversionError("a single-input module needs time_column='first' or 'last'")
    data = export_onnx(module, dim, time_column, time_shape, argument_order, opset)
    if time_column is not None:
        return from_onnx(data, time_column=time_column)
    return from_onnx(data, x_input="x", time_input="t")


def detect_format(path: str) -> str:
    """'onnx', 'torchscript', 'torch' (torch.save'd module) or 'npz', judged by content."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ConversionError(f"{path}: cannot read ({e.strerror})") from None
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise ConversionError(f"{path}: looks like a zip archive but is corrupt") from None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise ConversionError(f"{path}: a zip archive that is neither .npz nor a PyTorch file")
    if head[:1] == b"\x80":
        return "torch"                    # legacy (non-zip) torch.save pickle
    if _is_onnx(path):
        return "onnx"
    raise ConversionError(f"{path}: not an ONNX model, TorchScript archive, torch.save'd module "
                          f"or .npz archive")


def _is_onnx(path: str) -> bool:
    try:
        import onnx
        m = onnx.load(path)
    except Exception:
        return False
    return len(m.graph.node) > 0


def load_torch_file(path: str, kind: Optional[str] = None):
    """Loads a TorchScript archive (torch.jit.load) or a torch.save'd nn.Module (torch.load)."""
    torch = _torch()
    kind = kind or detect_format(path)
    try:
        if kind == "torchscript":
            obj = torch.jit.load(path, map_location="cpu")
        elif kind == "torch":
            obj = torch.load(path, map_location="cpu")
        else:
            raise ConversionError(f"{path}: is {kind}, not a PyTorch file")
    except ConversionError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{os.fspath(path)}: cannot load with torch ({first})") from None
    if not isinstance(obj, torch.nn.Module):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not an nn.Module (a state "
                              f"dict needs its model class: build the module, load the state "
                              f"dict and call from_torch, or export to ONNX)")
    return obj
