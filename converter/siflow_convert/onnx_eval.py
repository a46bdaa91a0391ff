# SPDX-License-Identifier: Apache-2.0
"""An independent float64 numpy evaluator of ONNX graphs, node by node, with ONNX semantics.

The converter's self-check (source_check.py) runs the SOURCE model with it and compares the
result with the converted graph. It shares no code with the importer or the .sif reference
interpreter (onnx 1.13 has no onnx.reference). An op it cannot evaluate raises Unevaluable, and
the self-check then reports itself as skipped for that model.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np


class Unevaluable(Exception):
    """The graph holds an op (or an attribute of one) this evaluator does not implement."""


def _attrs(node) -> dict:
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _array(t) -> np.ndarray:
    from onnx import numpy_helper
    arr = numpy_helper.to_array(t)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return arr


_CAST = {1: np.float64, 10: np.float64, 11: np.float64, 16: np.float64, 2: np.int64, 3: np.int64,
         4: np.int64, 5: np.int64, 6: np.int64, 7: np.int64, 12: np.int64, 13: np.int64,
         9: np.bool_}


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _softplus(a):
    return np.logaddexp(0.0, a)


_erf = np.vectorize(math.erf, otypes=[np.float64])

_UNARY = {
    "Identity": lambda a, at: a, "Neg": lambda a, at: -a, "Abs": lambda a, at: np.abs(a),
    "Sqrt": lambda a, at: np.sqrt(a), "Exp": lambda a, at: np.exp(a),
    "Log": lambda a, at: np.log(a), "Reciprocal": lambda a, at: 1.0 / a,
    "Sin": lambda a, at: np.sin(a), "Cos": lambda a, at: np.cos(a),
    "Tanh": lambda a, at: np.tanh(a), "Sigmoid": lambda a, at: _sigmoid(a),
    "Relu": lambda a, at: np.maximum(a, 0.0), "Erf": lambda a, at: _erf(a),
    "Floor": lambda a, at: np.floor(a), "Ceil": lambda a, at: np.ceil(a),
    "Not": lambda a, at: np.logical_not(a), "Softplus": lambda a, at: _softplus(a),
    "LeakyRelu": lambda a, at: np.where(a >= 0, a, at.get("alpha", 0.01) * a),
    "Elu": lambda a, at: np.where(a > 0, a, at.get("alpha", 1.0) * np.expm1(np.minimum(a, 0))),
    "Selu": lambda a, at: at.get("gamma", 1.0507009873554805) * np.where(
        a > 0, a, at.get("alpha", 1.6732632423543772) * np.expm1(np.minimum(a, 0))),
    "HardSigmoid": lambda a, at: np.clip(at.get("alpha", 0.2) * a + at.get("beta", 0.5), 0, 1),
    "HardSwish": lambda a, at: a * np.clip(a / 6.0 + 0.5, 0, 1),
    "Mish": lambda a, at: a * np.tanh(_softplus(a)),
    "Dropout": lambda a, at: a,
}

_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power, "Equal": np.equal,
    "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or,
}


def _axes(at, ins, pos):
    ax = at.get("axes")
    if ax is None and len(ins) > pos and ins[pos] is not None:
        ax = ins[pos].reshape(-1).tolist()
    return None if ax is None else [int(a) for a in ax]


def _reduce(op, at, ins, opset):
    x = ins[0]
    pos_axes = op == "ReduceSum" and opset >= 13 or opset >= 18
    ax = _axes(at, ins, 1) if pos_axes else at.get("axes")
    keep = bool(at.get("keepdims", 1))
    if ax is not None and len(ax) == 0:
        ax = None
    if ax is None and at.get("noop_with_empty_axes", 0):
        return x
    axis = None if ax is None else tuple(a % x.ndim for a in ax)
    if op == "ReduceL2":
        return np.sqrt(np.sum(x * x, axis=axis, keepdims=keep))
    f = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min,
         "ReduceProd": np.prod}[op]
    return f(x, axis=axis, keepdims=keep)


def _softmax(x, at, opset):
    if opset >= 13:
        ax = at.get("axis", -1) % x.ndim
        e = np.exp(x - x.max(axis=ax, keepdims=True))
        return e / e.sum(axis=ax, keepdims=True)
    ax = at.get("axis", 1) % x.ndim       # older opsets: coerced to 2-D at axis
    flat = x.reshape(int(np.prod(x.shape[:ax])), -1)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(x.shape)


def _pads2(at, ndim_sp):
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise Unevaluable(f"auto_pad {at['auto_pad']}")
    p = list(at.get("pads", [0] * (2 * ndim_sp)))
    return p[:ndim_sp], p[ndim_sp:]


def _conv(x, w, b, at):
    if x.ndim != 4:
        raise Unevaluable("Conv of a tensor that is not [N, C, H, W]")
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    g = int(at.get("group", 1))
    sh, sw = at.get("strides", [1, 1])
    dh, dw = at.get("dilations", [1, 1])
    (pt, pl), (pb, pr) = _pads2(at, 2)
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, oc, oh, ow))
    ocg = oc // g
    for gi in range(g):
        xs = xp[:, gi * icg:(gi + 1) * icg]
        ws = w[gi * ocg:(gi + 1) * ocg]
        for i in range(kh):
            for j in range(kw):
                tap = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                         j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, gi * ocg:(gi + 1) * ocg] += np.einsum("nchw,oc->nohw", tap, ws[:, :, i, j])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def _conv_transpose(x, w, b, at):
    if x.ndim != 4 or "output_shape" in at:
        raise Unevaluable("ConvTranspose other than 2-D without output_shape")
    n, c, h, wd = x.shape
    _, ocg, kh, kw = w.shape
    g = int(at.get("group", 1))
    sh, sw = at.get("strides", [1, 1])
    dh, dw = at.get("dilations", [1, 1])
    oph, opw = at.get("output_padding", [0, 0])
    (pt, pl), (pb, pr) = _pads2(at, 2)
    fh = sh * (h - 1) + dh * (kh - 1) + 1 + oph
    fw = sw * (wd - 1) + dw * (kw - 1) + 1 + opw
    full = np.zeros((n, ocg * g, fh, fw))
    icg = c // g
    for gi in range(g):
        xs = x[:, gi * icg:(gi + 1) * icg]
        ws = w[gi * icg:(gi + 1) * icg]
        for i in range(kh):
            for j in range(kw):
                full[:, gi * ocg:(gi + 1) * ocg, i * dh:i * dh + sh * (h - 1) + 1:sh,
                     j * dw:j * dw + sw * (wd - 1) + 1:sw] += \
                    np.einsum("nchw,co->nohw", xs, ws[:, :, i, j])
    out = full[:, :, pt:fh - pb, pl:fw - pr]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out


def _pool(x, at, kind):
    if x.ndim != 4:
        raise Unevaluable("pooling of a tensor that is not [N, C, H, W]")
    n, c, h, wd = x.shape
    kh, kw = at["kernel_shape"]
    sh, sw = at.get("strides", [1, 1])
    dh, dw = at.get("dilations", [1, 1])
    (pt, pl), (pb, pr) = _pads2(at, 2)
    rnd = math.ceil if at.get("ceil_mode", 0) else math.floor
    oh = int(rnd((h + pt + pb - (dh * (kh - 1) + 1)) / sh)) + 1
    ow = int(rnd((wd + pl + pr - (dw * (kw - 1) + 1)) / sw)) + 1
    fill = -np.inf if kind == "max" else 0.0
    H, W = max(h + pt + pb, (oh - 1) * sh + dh * (kh - 1) + 1), \
        max(wd + pl + pr, (ow - 1) * sw + dw * (kw - 1) + 1)
    xp = np.full((n, c, H, W), fill)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    inside = np.zeros((H, W))
    padded = np.zeros((H, W))
    inside[pt:pt + h, pl:pl + wd] = 1
    padded[:h + pt + pb, :wd + pl + pr] = 1
    taps = []
    cnt_in, cnt_pad = 0, 0
    for i in range(kh):
        for j in range(kw):
            sl = (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                  slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
            taps.append(xp[(slice(None), slice(None)) + sl])
            cnt_in = cnt_in + inside[sl]
            cnt_pad = cnt_pad + padded[sl]
    if kind == "max":
        return np.max(np.stack(taps), axis=0)
    total = np.sum(np.stack(taps), axis=0)
    return total / (cnt_pad if at.get("count_include_pad", 0) else cnt_in)


def _resize_axis(x, axis, out_len, scale, mode, ctm, nearest):
    n_in = x.shape[axis]
    o = np.arange(out_len, dtype=np.float64)
    if ctm == "half_pixel":
        src = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        src = (o + 0.5) / scale - 0.5 if out_len > 1 else np.zeros(out_len)
    elif ctm == "align_corners":
        src = o * (n_in - 1) / (out_len - 1) if out_len > 1 else np.zeros(out_len)
    elif ctm == "asymmetric":
        src = o / scale
    elif ctm == "tf_half_pixel_for_nn":
        src = (o + 0.5) / scale
    else:
        raise Unevaluable(f"Resize coordinate_transformation_mode {ctm}")
    if mode == "nearest":
        f = {"round_prefer_floor": lambda s: np.ceil(s - 0.5),
             "round_prefer_ceil": lambda s: np.floor(s + 0.5),
             "floor": np.floor, "ceil": np.ceil}.get(nearest)
        if f is None:
            raise Unevaluable(f"Resize nearest_mode {nearest}")
        idx = np.clip(f(src), 0, n_in - 1).astype(np.int64)
        return np.take(x, idx, axis=axis)
    if mode != "linear":
        raise Unevaluable(f"Resize mode {mode}")
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    shape = [1] * x.ndim
    shape[axis] = out_len
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _resize(x, scales, sizes, at):
    if at.get("antialias", 0) or at.get("exclude_outside", 0):
        raise Unevaluable("Resize with antialias/exclude_outside")
    mode = at.get("mode", "nearest")
    ctm = at.get("coordinate_transformation_mode", "half_pixel")
    nearest = at.get("nearest_mode", "round_prefer_floor")
    if sizes is not None and sizes.size:
        out = [int(v) for v in sizes.reshape(-1)]
        sc = [o / i for o, i in zip(out, x.shape)]
    elif scales is not None and scales.size:
        sc = [float(v) for v in scales.reshape(-1)]
        out = [int(math.floor(i * s)) for i, s in zip(x.shape, sc)]
    else:
        raise Unevaluable("Resize without scales or sizes")
    for ax in range(x.ndim):
        if out[ax] != x.shape[ax] or sc[ax] != 1.0:
            x = _resize_axis(x, ax, out[ax], sc[ax], mode, ctm, nearest)
    return x


def _instance_norm(x, scale, bias, eps):
    ax = tuple(range(2, x.ndim))
    m = x.mean(axis=ax, keepdims=True)
    v = ((x - m) ** 2).mean(axis=ax, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - m) / np.sqrt(v + eps) * scale.reshape(shape) + bias.reshape(shape)


def _group_norm(x, scale, bias, groups, eps):
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    m = xg.mean(axis=2, keepdims=True)
    v = ((xg - m) ** 2).mean(axis=2, keepdims=True)
    y = ((xg - m) / np.sqrt(v + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if scale.size == groups and groups != c:
        scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
    return y * scale.reshape(shape) + bias.reshape(shape)


def _layer_norm(x, scale, bias, at):
    ax = at.get("axis", -1) % x.ndim
    axes = tuple(range(ax, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
    y = (x - m) / np.sqrt(v + at.get("epsilon", 1e-5)) * scale
    return y + bias if bias is not None else y


def _slice(x, at, ins):
    if "starts" in at:
        starts, ends = at["starts"], at["ends"]
        axes = at.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = ins[1].tolist(), ins[2].tolist()
        axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else \
            list(range(len(starts)))
        steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        idx[int(a) % x.ndim] = slice(int(s), int(e), int(st))
    return x[tuple(idx)]


def _split(x, at, ins, count):
    ax = at.get("axis", 0) % x.ndim
    parts = at.get("split")
    if parts is None and len(ins) > 1 and ins[1] is not None:
        parts = ins[1].reshape(-1).tolist()
    if parts is None:
        k = at.get("num_outputs", count)
        size = -(-x.shape[ax] // k)
        parts = [min(size, x.shape[ax] - i * size) for i in range(k)]
    return list(np.split(x, np.cumsum(parts)[:-1].astype(np.int64), axis=ax))


def _reshape(x, shape, at):
    target = [int(v) for v in shape.reshape(-1)]
    target = [x.shape[i] if v == 0 and not at.get("allowzero", 0) else v
              for i, v in enumerate(target)]
    return x.reshape(target)


def _clip(x, at, ins):
    lo = at.get("min", -np.inf)
    hi = at.get("max", np.inf)
    if len(ins) > 1 and ins[1] is not None:
        lo = ins[1].item()
    if len(ins) > 2 and ins[2] is not None:
        hi = ins[2].item()
    return np.minimum(np.maximum(x, lo), hi)


def _pad(x, at, ins):
    mode = at.get("mode", "constant")
    pads = at.get("pads")
    if pads is None:
        pads = ins[1].reshape(-1).tolist()
    value = at.get("value", 0.0)
    if len(ins) > 2 and ins[2] is not None and ins[2].size:
        value = ins[2].item()
    if len(ins) > 3 and ins[3] is not None or mode != "constant":
        raise Unevaluable(f"Pad mode {mode} or with axes")
    r = x.ndim
    width = [(int(pads[i]), int(pads[i + r])) for i in range(r)]
    if min(min(p) for p in width) < 0:
        raise Unevaluable("Pad with negative pads")
    return np.pad(x, width, constant_values=value)


def _node(node, ins: List[Optional[np.ndarray]], opset: int) -> list:
    op = node.op_type
    at = _attrs(node)
    x = ins[0] if ins else None
    if op == "Constant":
        for k in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if k in at:
                v = at[k]
                return [_array(v) if k == "value" else
                        np.asarray(v, dtype=np.float64 if "float" in k else np.int64)]
        raise Unevaluable("Constant without a numeric value")
    if op in _UNARY:
        return [_UNARY[op](x, at)]
    if op in _BINARY:
        return [_BINARY[op](ins[0], ins[1])]
    if op == "Div":
        a, b = ins
        if a.dtype.kind in "iu" and b.dtype.kind in "iu":
            return [np.trunc(a / b).astype(np.int64)]
        return [a / b]
    if op in ("Max", "Min", "Sum", "Mean"):
        f = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add, "Mean": np.add}[op]
        r = ins[0]
        for a in ins[1:]:
            r = f(r, a)
        return [r / len(ins) if op == "Mean" else r]
    if op == "Where":
        return [np.where(ins[0], ins[1], ins[2])]
    if op == "Cast":
        to = _CAST.get(int(at["to"]))
        if to is None:
            raise Unevaluable(f"Cast to type {at['to']}")
        return [x.astype(to)]
    if op == "Clip":
        return [_clip(x, at, ins)]
    if op == "Gemm":
        a = ins[0].T if at.get("transA", 0) else ins[0]
        b = ins[1].T if at.get("transB", 0) else ins[1]
        r = at.get("alpha", 1.0) * (a @ b)
        if len(ins) > 2 and ins[2] is not None:
            r = r + at.get("beta", 1.0) * ins[2]
        return [r]
    if op == "MatMul":
        return [np.matmul(ins[0], ins[1])]
    if op == "Einsum":
        return [np.einsum(at["equation"], *ins)]
    if op == "Softmax":
        return [_softmax(x, at, opset)]
    if op in ("ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceProd"):
        return [_reduce(op, at, ins, opset)]
    if op == "LayerNormalization":
        return [_layer_norm(x, ins[1], ins[2] if len(ins) > 2 else None, at)]
    if op == "InstanceNormalization":
        return [_instance_norm(x, ins[1], ins[2], at.get("epsilon", 1e-5))]
    if op == "GroupNormalization":
        return [_group_norm(x, ins[1], ins[2], int(at["num_groups"]), at.get("epsilon", 1e-5))]
    if op == "Concat":
        return [np.concatenate([a for a in ins if a is not None], axis=at["axis"])]
    if op == "Split":
        return _split(x, at, ins, len(node.output))
    if op == "Slice":
        return [_slice(x, at, ins)]
    if op == "Gather":
        return [np.take(x, ins[1].astype(np.int64), axis=at.get("axis", 0))]
    if op == "Shape":
        return [np.asarray(x.shape, dtype=np.int64)[at.get("start", 0):at.get("end", None)]]
    if op == "Size":
        return [np.asarray(x.size, dtype=np.int64)]
    if op == "ConstantOfShape":
        v = at.get("value")
        fill = _array(v).reshape(-1) if v is not None else np.zeros(1)
        return [np.full([int(d) for d in x.reshape(-1)], fill[0], dtype=fill.dtype)]
    if op == "Expand":
        shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in ins[1].reshape(-1)))
        return [np.broadcast_to(x, shape).copy()]
    if op == "Tile":
        return [np.tile(x, ins[1].astype(np.int64))]
    if op == "Range":
        return [np.arange(ins[0].item(), ins[1].item(), ins[2].item())]
    if op == "Reshape":
        return [_reshape(x, ins[1], at)]
    if op == "Flatten":
        ax = at.get("axis", 1) % max(x.ndim, 1) if x.ndim else 0
        return [x.reshape(int(np.prod(x.shape[:ax])), -1)]
    if op == "Squeeze":
        ax = _axes(at, ins, 1)
        return [np.squeeze(x, axis=None if ax is None else tuple(a % x.ndim for a in ax))]
    if op == "Unsqueeze":
        ax = _axes(at, ins, 1)
        r = x.ndim + len(ax)
        for a in sorted(a % r for a in ax):
            x = np.expand_dims(x, a)
        return [x]
    if op == "Transpose":
        return [np.transpose(x, at.get("perm"))]
    if op == "Conv":
        return [_conv(x, ins[1], ins[2] if len(ins) > 2 else None, at)]
    if op == "ConvTranspose":
        return [_conv_transpose(x, ins[1], ins[2] if len(ins) > 2 else None, at)]
    if op in ("AveragePool", "MaxPool"):
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            raise Unevaluable("MaxPool's index output")
        return [_pool(x, at, "max" if op == "MaxPool" else "average")]
    if op == "GlobalAveragePool":
        return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)]
    if op == "Pad":
        return [_pad(x, at, ins)]
    if op == "Resize":
        if opset < 11:
            return [_resize(x, ins[1], None, at)]
        return [_resize(x, ins[2] if len(ins) > 2 else None, ins[3] if len(ins) > 3 else None,
                        at)]
    if op == "Upsample":
        scales = ins[1] if len(ins) > 1 else np.asarray(at["scales"], dtype=np.float64)
        if at.get("mode", "nearest") != "nearest":
            raise Unevaluable(f"Upsample mode {at.get('mode')}")
        return [_resize(x, scales, None, dict(at, coordinate_transformation_mode="asymmetric",
                                              nearest_mode="floor"))]
    raise Unevaluable(f"op {op}")


def run(model, feeds: Dict[str, np.ndarray], values: Optional[dict] = None) -> List[np.ndarray]:
    """The graph's outputs for `feeds` (name -> array), every value in float64 (integers int64).
    Raises Unevaluable naming the first op that cannot be evaluated. `values`, when given, receives
    every value of the graph by name."""
    g = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=17)
    vals: Dict[str, np.ndarray] = {i.name: _array(i) for i in g.initializer}
    for name, arr in feeds.items():
        arr = np.asarray(arr)
        vals[name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr.astype(np.int64)
    for node in g.node:
        where = f"node '{node.name or '(unnamed)'}' ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise Unevaluable(f"{where}: op domain {node.domain!r}")
        ins = [vals[n] if n else None for n in node.input]
        try:
            with np.errstate(all="ignore"):
                outs = _node(node, ins, opset)
        except Unevaluable as e:
            raise Unevaluable(f"{where}: {e}") from None
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise Unevaluable(f"{where}: {type(e).__name__}: {e}") from None
        for name, v in zip(node.output, outs):
            if name:
                vals[name] = np.asarray(v)
    if values is not None:
        values.update(vals)
    return [vals[o.name] for o in g.output]
