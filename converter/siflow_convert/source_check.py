# SPDX-License-Identifier: Apache-2.0
"""The converter's self-check: the SOURCE model (an ONNX graph, evaluated by onnx_eval in float64,
or a PyTorch module, evaluated as a float64 copy) against the converted graph (the float64
reference interpreter) at seeded test points. A disagreement beyond float32 rounding is a
converter bug and refuses the conversion; a source that cannot be evaluated is reported skipped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from . import conditioning, ir, reference

POINTS = 16
SAFETY_FACTOR = reference.SAFETY_FACTOR
TOLERANCE_FLOOR = reference.TOLERANCE_FLOOR


@dataclass
class Result:
    """passed / skipped; `error` is max |v_source - v_converted| / max(1, max |v_source|)."""
    source: str                   # "ONNX" or "PyTorch"
    status: str                   # "passed" or "skipped"
    error: float = 0.0
    tolerance: float = 0.0
    reason: str = ""              # why it was skipped

    def line(self) -> str:
        if self.status == "skipped":
            return f"self-check against the {self.source} source: SKIPPED ({self.reason})"
        return (f"self-check against the {self.source} source: passed, velocity error "
                f"{self.error:.3g} (float32 rounding allows {self.tolerance:.3g}; {POINTS} "
                f"points, float64)")


def _points(graph: ir.Graph, seed: int):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 1.0, POINTS)
    y = 1.5 * rng.standard_normal((POINTS, graph.dim))
    labels = cond = None
    ln, cn = conditioning.label_node(graph), conditioning.cond_node(graph)
    if ln is not None:
        labels = rng.integers(0, ln.classes, POINTS)
    if cn is not None:
        cond = rng.standard_normal((POINTS, int(np.prod(cn.cond_shape))))
    return t, y, labels, cond


def _converted(graph: ir.Graph, t, y, labels, cond, dtype):
    model = ir.FlowModel(graph=graph)
    if labels is not None or cond is not None:
        model = conditioning.with_conditioning(model, labels, cond)
    return reference.evaluate(model, t, y, dtype=dtype)[0].astype(np.float64)


def _first_disagreeing_node(graph: ir.Graph, t, y, labels, cond, onnx_values, rows, tol):
    """For an ONNX source: the first converted node (in graph order) whose value differs beyond
    `tol` from the ONNX value produced by the node of the same name (the rows of one chunk), as
    "node 'name' (op)", or '' when no named value disagrees."""
    from . import image_ops
    model = ir.FlowModel(graph=graph)
    if labels is not None or cond is not None:
        model = conditioning.with_conditioning(model, labels, cond)
    run = conditioning.runs(model, rows)
    ctx = None if run is None else run[0][1]
    shapes = graph.shapes()
    vals = [y.astype(np.float64), reference._time_column(t, rows, np.float64)]
    tans = [None, None]
    for k, node in enumerate(graph.nodes):
        if node.op in image_ops.IMAGE_OPS:
            a = node.inputs[0]
            v, _ = image_ops.forward(node, vals[a], None, shapes[a], shapes[k + 2], np.float64)
        elif node.op in ir.COND_OPS:
            v, _ = conditioning.forward(node, vals, rows, ctx, np.float64)
        else:
            v, _ = reference._node_forward(node, vals, tans, np.float64, shapes)
        vals.append(v)
        tans.append(None)
        src = onnx_values.get(node.name)
        if src is None or np.asarray(src).size != np.asarray(v).size or \
                np.asarray(src).dtype.kind != "f":
            continue
        a, b = np.asarray(src).reshape(rows, -1), np.asarray(v).reshape(rows, -1)
        if float(np.max(np.abs(a - b))) > tol * max(1.0, float(np.max(np.abs(a)))):
            return f"node '{node.name}' ({node.op if node.op != 'unary' else node.unary})"
    return ""


def _compare(source: str, graph: ir.Graph, t, y, labels, cond, want, locate=None) -> Result:
    got = _converted(graph, t, y, labels, cond, np.float64)
    got32 = _converted(graph, t, y, labels, cond, np.float32)
    scale = max(1.0, float(np.max(np.abs(want))))
    tol = max(SAFETY_FACTOR * float(np.max(np.abs(got32 - got))) / scale, TOLERANCE_FLOOR)
    diff = np.abs(got - want)
    if not np.all(np.isfinite(want)):
        return Result(source, "skipped", reason="the source gives non-finite velocities at the "
                                                "test points")
    err = float(np.max(diff)) / scale if np.all(np.isfinite(diff)) else float("inf")
    if not err <= tol:
        flat = np.nan_to_num(diff, nan=np.inf).reshape(POINTS, -1)
        i, j = np.unravel_index(int(np.argmax(flat)), flat.shape)
        extra = "" if labels is None else f", label {int(labels[i])}"
        node = ""
        if locate is not None:
            try:
                node = locate(i, tol)
            except Exception:      # the localisation is a hint; the refusal stands without it
                node = ""
        if node:
            node = ("; the first converted node that disagrees with the ONNX value of its name: "
                    + node)
        raise ir.ConversionError(
            f"self-check failed: the converted graph disagrees with the {source} source by "
            f"{err:.3g} (max |dv| / max(1, max |v|); float32 rounding allows {tol:.3g}), worst at "
            f"test point {i} (t = {t[i]:.6g}{extra}), coordinate {j}: source "
            f"{want.reshape(POINTS, -1)[i, j]:.9g}, converted {got.reshape(POINTS, -1)[i, j]:.9g}"
            f"{node}. "
            f"This is a converter bug; please report it with the model (self_check=False / "
            f"--no-self-check converts anyway)")
    return Result(source, "passed", err, tol)


# ------------------------------------------------------------------------------ ONNX sources

def _declared(vi):
    return [d.dim_value if d.HasField("dim_value") else None
            for d in vi.type.tensor_type.shape.dim]


def _feed_shape(declared, rows):
    """The declared shape with its batch axis (a symbol, or a fixed batch) set to `rows`."""
    return tuple((rows if d != 1 else 1) if i == 0 else (d or rows)
                 for i, d in enumerate(declared))


def check_onnx(model, graph: ir.Graph, x_input=None, time_input=None, time_column=None,
               dim=None, settings=None, seed: int = 0) -> Result:
    """Evaluates the ONNX `model` (a ModelProto) with onnx_eval at seeded points and compares it
    with `graph`, which from_onnx made from it with these arguments. Raises ConversionError on a
    disagreement beyond float32 rounding; returns a skipped Result if an op cannot be evaluated."""
    from . import onnx_eval, onnx_conditioning
    from .onnx_import import _Importer, _Val
    imp = _Importer(model, x_input, time_input, time_column, dim,
                    settings or onnx_conditioning.Settings())
    inits = {i.name for i in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    names = {}
    for name, v in imp.values.items():
        if name not in inputs:
            continue
        if isinstance(v, onnx_conditioning.LabelRef):
            names["label"] = name
        elif not isinstance(v, _Val):
            continue
        elif time_column is not None:
            names["xt"] = name             # one input [B, d + 1] (no label/condition then)
        elif v.tid == 0:
            names["x"] = name
        elif v.tid == 1:
            names["t"] = name
        else:
            names["cond"] = name
    t, y, labels, cond = _points(graph, seed)
    batch = imp.fixed_batch or POINTS
    per_row_t = "xt" in names or len(imp.values[names["t"]].shape) >= 1 and \
        imp.values[names["t"]].shape[0] == "B"
    chunk = batch if per_row_t else 1
    if not per_row_t and imp.fixed_batch not in (None, 1):
        chunk = batch
        for s in range(0, POINTS, chunk):
            t[s:s + chunk] = t[s]
    if POINTS % chunk:
        return Result("ONNX", "skipped", reason=f"fixed batch {chunk} does not divide {POINTS}")
    outs, chunk_feeds = [], []
    try:
        for s in range(0, POINTS, chunk):
            e = s + chunk
            feeds = {}
            if "xt" in names:
                col = t[s:e, None]
                first = imp.graph.nodes[0].inputs[0] == 1
                feeds[names["xt"]] = np.concatenate([col, y[s:e]] if first else [y[s:e], col], 1)
            else:
                feeds[names["x"]] = y[s:e].reshape((chunk,) + tuple(
                    [graph.dim] if graph.x_shape is None else graph.x_shape))
                tdecl = _declared(inputs[names["t"]])
                tv = t[s:e] if per_row_t else t[s:s + 1]
                feeds[names["t"]] = tv.reshape(_feed_shape(tdecl, len(tv))) if tdecl else \
                    tv.reshape(())
            if "label" in names:
                ldecl = _declared(inputs[names["label"]])
                feeds[names["label"]] = labels[s:e].reshape(_feed_shape(ldecl, chunk))
            if "cond" in names:
                feeds[names["cond"]] = cond[s:e].reshape(_feed_shape(
                    _declared(inputs[names["cond"]]), chunk))
            chunk_feeds.append(feeds)
            outs.append(np.asarray(onnx_eval.run(model, feeds)[0],
                                   dtype=np.float64).reshape(chunk, -1))
    except onnx_eval.Unevaluable as e:
        return Result("ONNX", "skipped", reason=f"the numpy ONNX evaluator cannot run {e}")
    want = np.concatenate(outs, 0)
    if want.shape != (POINTS, graph.dim):
        return Result("ONNX", "skipped", reason=f"the source's output has shape "
                                                f"{list(want.shape)}")

    def locate(i, tol):
        s, values = (i // chunk) * chunk, {}
        onnx_eval.run(model, chunk_feeds[i // chunk], values)
        by_node = {n.name: values.get(n.output[0]) for n in model.graph.node
                   if n.name and n.output and n.output[0] in values}
        pick = slice(s, s + chunk)
        return _first_disagreeing_node(
            graph, t[pick], y[pick], None if labels is None else labels[pick],
            None if cond is None else cond[pick], by_node, chunk, tol)
    return _compare("ONNX", graph, t, y, labels, cond, want, locate)


# ------------------------------------------------------------------------------ PyTorch sources

def check_torch(module, graph: ir.Graph, dim, time_column=None, time_shape: str = "column",
                argument_order: str = "xt", label: bool = False, cond: bool = False,
                seed: int = 0) -> Result:
    """Evaluates a float64 copy of `module` at seeded points, called as from_torch exported it,
    and compares it with `graph`. Raises ConversionError on a disagreement beyond float32
    rounding; returns a skipped Result when the module cannot run in float64."""
    import torch
    t, y, labels, conds = _points(graph, seed)
    try:
        m = copy.deepcopy(module)
        m = m.double().eval()
    except Exception as e:   # a module that cannot be copied or cast
        return Result("PyTorch", "skipped", reason=f"cannot make a float64 copy of the module "
                                                   f"({type(e).__name__}: {e})")
    shape = (dim,) if isinstance(dim, int) else tuple(dim)
    rows = POINTS if time_shape in ("column", "batch") or time_column else 1
    outs = []
    try:
        with torch.no_grad():
            for s in range(0, POINTS, rows):
                e = s + rows
                yt = torch.from_numpy(y[s:e].reshape((rows,) + shape))
                tt = torch.from_numpy(t[s:e].copy())
                if time_column is not None:
                    col = tt.reshape(rows, 1)
                    args = [torch.cat([col, yt] if time_column == "first" else [yt, col], 1)]
                else:
                    tt = tt.reshape({"column": (rows, 1), "batch": (rows,), "scalar": (),
                                     "one": (1,)}[time_shape])
                    args = [yt, tt] if argument_order == "xt" else [tt, yt]
                if label:
                    args.append(torch.from_numpy(labels[s:e].astype(np.int64)))
                if cond:
                    args.append(torch.from_numpy(conds[s:e].copy()))
                out = m(*args)
                outs.append(out.detach().double().numpy().reshape(rows, -1))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Result("PyTorch", "skipped", reason=f"the module fails in float64 ({first})")
    want = np.concatenate(outs, 0)
    if want.shape != (POINTS, graph.dim):
        return Result("PyTorch", "skipped", reason=f"the module's output has shape "
                                                   f"{list(want.shape)}")
    return _compare("PyTorch", graph, t, y, labels, conds, want)
