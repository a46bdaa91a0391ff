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


def _conditioning_inputs(torch, label, cond, batch: int = 3):
    """Example tensors, names and dynamic axes of the label ([B] int64) and condition ([B, w])."""
    args, names, axes = [], [], {}
    if label:
        name = label if isinstance(label, str) else "y"
        args.append(torch.zeros(batch, dtype=torch.long))
        names.append(name)
        axes[name] = {0: "B"}
    if cond:
        if isinstance(cond, bool) or not isinstance(cond, int) or cond < 1:
            raise ConversionError(f"cond must be the width of the condition vector (an integer "
                                  f">= 1), not {cond!r}")
        args.append(torch.zeros(batch, cond))
        names.append("c")
        axes["c"] = {0: "B"}
    return args, names, axes


def _layout(names) -> str:
    return "module(" + ", ".join(names) + ")"


def _signature_hint(module, names, time_column) -> str:
    """What to change when the module's call signature does not take `names` ('' if unknown)."""
    hints = []
    if "x" in names and "t" in names and names.index("t") > names.index("x"):
        hints.append("a forward(t, x) module needs argument_order='tx' (--argument-order tx)")
    if time_column is None:
        hints.append("a module taking one [B, d + 1] input needs time_column='first' or 'last' "
                     "(--time-column)")
    if time_column is None and len(names) == 2:
        hints.append("a class label is passed as a third argument with label=True "
                     "(--label-input NAME), a condition vector with cond=W")
    hints.append("check dim (--dim) and the shape of t (time_shape, --time-shape)")
    return "; ".join(hints)


def _check_signature(torch, module, args, names, time_column) -> None:
    """Refuses, with a hint, a module whose forward does not take the arguments the converter
    passes, or whose trial call fails (before the ONNX export's less readable errors)."""
    import inspect
    fwd = getattr(module, "forward", None)
    try:
        sig = inspect.signature(fwd)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        params = list(sig.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                       p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        variadic = any(p.kind == p.VAR_POSITIONAL for p in params)
        if len(required) > len(args) or (len(positional) < len(args) and not variadic):
            takes = ", ".join(p.name for p in positional)
            raise ConversionError(
                f"{type(module).__name__}.forward({takes}) takes {len(required)}"
                f"{'' if len(required) == len(positional) else f' to {len(positional)}'} "
                f"argument(s), but the converter calls {_layout(names)}: "
                f"{_signature_hint(module, names, time_column)}")
    try:
        with torch.no_grad():
            module(*args)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"calling the module as {_layout(names)} with shapes "
                              f"{[list(a.shape) for a in args]} fails ({type(e).__name__}: "
                              f"{first}): {_signature_hint(module, names, time_column)}") \
            from None


def export_onnx(module, dim: int, time_column: Optional[str] = None, time_shape: str = "column",
                argument_order: str = "xt", opset: int = 17, label=False, cond=None) -> bytes:
    """Exports `module` (float32, eval mode, dynamic batch axis) to ONNX bytes.

    The module is called as module(x, t) (argument_order "xt") or module(t, x) ("tx"), or as
    module(xt) with one [B, dim + 1] input when time_column is "first"/"last"; a class label
    ([B] int64, input name `label` if a string, else "y") and a condition vector ([B, cond],
    input "c") follow as further arguments when given.
    """
    torch = _torch()
    shaped = isinstance(dim, (tuple, list)) and 1 <= len(dim) <= 3 and time_column is None and \
        all(isinstance(e, int) and e >= 1 for e in dim)
    if not shaped and (not isinstance(dim, int) or dim < 1):
        raise ConversionError(f"dim must be a positive integer (the width of x) or, for x with "
                              f"two inputs, a per-sample shape such as (C, H, W), not {dim!r}")
    if argument_order not in ("xt", "tx"):
        raise ConversionError(f"argument_order must be 'xt' or 'tx', not {argument_order!r}")
    if time_column is not None and (label or cond):
        raise ConversionError("a label or condition input needs separate x and t inputs (no "
                              "time_column)")
    args, names, axes = _example_inputs(torch, dim, time_column, time_shape)
    if time_column is None and argument_order == "tx":
        args, names = args[::-1], names[::-1]
    extra_args, extra_names, extra_axes = _conditioning_inputs(torch, label, cond)
    args, names = tuple(args) + tuple(extra_args), list(names) + extra_names
    axes.update(extra_axes)
    try:
        module = copy.deepcopy(module)     # .float()/.eval() must not change the caller's module
    except Exception:
        pass
    was_training = getattr(module, "training", False)
    buf = io.BytesIO()
    try:
        module = module.float()
        module.eval()
        _check_signature(torch, module, args, names, time_column)
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
               argument_order: str = "xt", label=False, cond: Optional[int] = None,
               num_classes: Optional[int] = None, null_label: Optional[int] = None,
               null_cond=None, self_check: bool = True) -> Graph:
    """Converts a torch.nn.Module (or TorchScript module) computing v(t, x) into an ir.Graph.

    Layouts: two inputs module(x [B, dim], t) (dim may be a per-sample shape such as (C, H, W):
    x is then [B, C, H, W], format 1.4) with t shaped by `time_shape` ("column" [B, 1],
    "batch" [B], "scalar" [], "one" [1]), argument order "xt" or "tx"; or one input
    module(xt [B, dim + 1]) with t in the first or last column (time_column). `two_inputs`
    defaults to `time_column is None`; giving both two_inputs=True and a time_column is an error.

    A class-conditional module(x, t, y) takes `label=True` (y: int64 [B], read by nn.Embedding;
    `num_classes`, `null_label` as for from_onnx); a module(x, t[, y], c) with a condition
    vector takes `cond=W` (its width) and `null_cond`.

    With `self_check` the float64 copy of the module is evaluated at seeded points and compared
    with the converted graph: a disagreement beyond float32 rounding raises ConversionError; the
    result (passed or skipped, source_check.Result) is kept as `graph.self_check`.
    """
    if two_inputs is None:
        two_inputs = time_column is None
    if two_inputs and time_column is not None:
        raise ConversionError("two_inputs=True contradicts time_column (one concatenated input)")
    if not two_inputs and time_column is None:
        raise ConversionError("a single-input module needs time_column='first' or 'last'")
    data = export_onnx(module, dim, time_column, time_shape, argument_order, opset, label, cond)
    if time_column is not None:
        graph = from_onnx(data, time_column=time_column)
    else:
        graph = from_onnx(data, x_input="x", time_input="t",
                          label_input=(label if isinstance(label, str) else "y") if label
                          else None, cond_input="c" if cond else None,
                          num_classes=num_classes, null_label=null_label, null_cond=null_cond)
    if self_check:
        from .source_check import check_torch
        graph.self_check = check_torch(module, graph, dim, time_column, time_shape,
                                       argument_order, bool(label), bool(cond))
    return graph


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
        hint = ""
        if isinstance(e, (ImportError, AttributeError)):
            hint = ("; a torch.save'd module names its class by module path, so the code that "
                    "defines the class must be importable: put its folder on PYTHONPATH, or save "
                    "the module as TorchScript (torch.jit.save) or export it to ONNX")
        raise ConversionError(f"{os.fspath(path)}: cannot load with torch ({first}){hint}") \
            from None
    if not isinstance(obj, torch.nn.Module):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not an nn.Module (a state "
                              f"dict needs its model class: build the module, load the state "
                              f"dict and call from_torch, or export to ONNX)")
    return obj
