# SPDX-License-Identifier: Apache-2.0
"""ONNX elementwise maths, clipping, reductions and softmax onto format 1.4's ops.

Installed into the ONNX importer (install, at the end of onnx_import): Log, Abs, HardSwish, Mish
(also torch's x·Tanh(Softplus(x)) before opset 18, as one node), Clip
(attributes before opset 11, optional constant inputs from 11 on; ReLU6 is Clip(0, 6)), Softmax
over the feature axis, ReduceL2 over the feature axis, and the general cases of Sqrt,
Reciprocal, Div by a tensor and Pow by a constant that the LayerNorm pattern does not claim. A
divisor that is a [B, 1] tensor widened by Expand (F.normalize's `expand_as`) is divided by
directly: the runtime's Div broadcasts [B, 1] against [B, n].
"""
from __future__ import annotations

import math

import numpy as np

from .ir import ConversionError, Node

SUPPORTED = ("Log, Sqrt, Reciprocal, Abs, HardSwish, Mish (format 1.4), Clip (ReLU6), Div by a "
             "tensor, Pow by any constant, ReduceL2 and Softmax (feature axis)")


def _unary(imp, kind, node, ins, where):
    return imp._unary(kind, node, ins, where)


def op_Log(imp, node, ins, where):
    return _unary(imp, "log", node, ins, where)


def op_Abs(imp, node, ins, where):
    return _unary(imp, "abs", node, ins, where)


def op_HardSwish(imp, node, ins, where):
    return _unary(imp, "hard_swish", node, ins, where)


def op_Mish(imp, node, ins, where):
    return _unary(imp, "mish", node, ins, where)


def sqrt(imp, node, ins, where):
    return _unary(imp, "sqrt", node, ins, where)


def reciprocal(imp, node, ins, where):
    return _unary(imp, "reciprocal", node, ins, where)


def _scalar(c, where, what) -> float:
    arr = np.asarray(c.arr, np.float64).reshape(-1)
    if arr.size != 1:
        raise ConversionError(f"{where}: {what} must be a scalar, got {arr.size} values")
    return float(arr[0])


def op_Clip(imp, node, ins, where):
    from .onnx_import import _Const, _attr
    a = imp.need(ins[0], where)
    low, high = _attr(node, "min"), _attr(node, "max")          # opset < 11
    for pos, name in ((1, "min"), (2, "max")):                  # opset >= 11
        if len(ins) > pos and ins[pos] is not None:
            if not isinstance(ins[pos], _Const):
                raise ConversionError(f"{where}: Clip {name} must be a constant")
            value = _scalar(ins[pos], where, f"Clip {name}")
            low, high = (value, high) if name == "min" else (low, value)
    low = -math.inf if low is None else float(low)
    high = math.inf if high is None else float(high)
    if math.isnan(low) or math.isnan(high) or not low <= high:
        raise ConversionError(f"{where}: Clip bounds min {low} and max {high} (need min <= max)")
    if low == -math.inf and high == math.inf:
        return a
    tid = imp.emit(Node("clip", [a.tid], name=node.name, low=low, high=high))
    return _val(tid, a.shape)


def _val(tid, shape):
    from .onnx_import import _Val, _identity_form
    return _Val(tid, shape, _identity_form(tid))


def _feature_axis(a, axis, where, what):
    r = len(a.shape)
    if r == 0 or axis % r != r - 1 or a.shape[-1] == "B":
        shape = ", ".join(map(str, a.shape))
        raise ConversionError(f"{where}: {what} over axis {axis} of a [{shape}] tensor; only "
                              f"the last (feature) axis is supported")


def op_Softmax(imp, node, ins, where):
    from .onnx_import import _attr
    a = imp.need(ins[0], where)
    opset = max([o.version for o in imp.model.opset_import if o.domain in ("", "ai.onnx")] or
                [13])
    axis = _attr(node, "axis", -1 if opset >= 13 else 1)
    r = len(a.shape)
    # Before opset 13 Softmax flattens from `axis` on: axis 1 of a [B, 1, ..., w] row is the row.
    coerced = opset < 13 and r >= 2 and axis % r == 1 and a.shape[0] == "B"
    if not coerced:
        _feature_axis(a, axis, where, "Softmax")
    tid = imp.emit(Node("softmax", [a.tid], name=node.name))
    return _val(tid, a.shape)


def op_ReduceL2(imp, node, ins, where):
    from .onnx_import import _attr, _axes
    a = imp.need(ins[0], where)
    ax = _axes(node, ins, 1)
    if ax is None or len(ax) != 1:
        raise ConversionError(f"{where}: ReduceL2 over axes {ax}; only the last (feature) axis "
                              f"is supported")
    _feature_axis(a, ax[0], where, "ReduceL2")
    tid = imp.emit(Node("reduce", [a.tid], name=node.name, reduce="l2"))
    keep = bool(_attr(node, "keepdims", 1))
    return _val(tid, a.shape[:-1] + ((1,) if keep else ()))


def _unexpanded(imp, b):
    """The [B, 1] tensor an Expand widened into b (a Mul by a constant of ones), or b."""
    if b.tid is None or b.tid < 2:
        return b
    n = imp.graph.nodes[b.tid - 2]
    # A Mul by ones never survives the importer unless it widens a [B, 1] tensor (a Mul by a
    # neutral constant of the input's own width is dropped), so its input is that tensor.
    if n.op == "mul" and n.constant is not None and len(n.inputs) == 1 and \
            n.constant.size > 1 and np.all(n.constant == 1.0):
        return _val(n.inputs[0], b.shape[:-1] + (1,))
    return b


def div(imp, node, ins, where):
    """a / b for a tensor b (a constant divisor is a Mul by its reciprocal, as before)."""
    from .onnx_import import _Const, _broadcast, _check_row_shape
    a, b = ins
    if isinstance(a, _Const):
        arr = np.asarray(a.arr, np.float64).reshape(-1)
        b = imp.need(b, where)
        if arr.size != 1:
            raise ConversionError(f"{where}: a constant dividend must be a scalar")
        # c / b = c * (1 / b).
        r = imp.emit(Node("unary", [b.tid], name=node.name, unary="reciprocal"))
        rv = _val(r, b.shape)
        if arr[0] == 1.0:
            return rv
        return imp._binary_const("mul", rv, _Const.of(np.array(arr[0])), where, node.name)
    a, b = imp.need(a, where), imp.need(b, where)
    shape = _check_row_shape(_broadcast(a.shape, b.shape, where), where)
    b = _unexpanded(imp, b)
    tid = imp.emit(Node("div", [a.tid, b.tid], name=node.name))
    return _val(tid, shape)


def pow_constant(imp, node, a, exponent, where):
    a = imp.need(a, where)
    tid = imp.emit(Node("pow", [a.tid], name=node.name, exponent=float(exponent)))
    return _val(tid, a.shape)


def _mish_base(imp, a, b):
    """X when a is X and b is Tanh(Softplus(X)) (torch's Mish before opset 18), else None."""
    from .onnx_import import _Val
    if not (isinstance(a, _Val) and isinstance(b, _Val)) or a.tid is None or b.tid is None \
            or b.tid < 2:
        return None
    th = imp.graph.nodes[b.tid - 2]
    if th.op != "unary" or th.unary != "tanh" or th.inputs[0] < 2:
        return None
    sp = imp.graph.nodes[th.inputs[0] - 2]
    if sp.op != "unary" or sp.unary != "softplus" or sp.inputs[0] != a.tid:
        return None
    return a


def mish_mul(imp, node, ins, where):
    """x * tanh(softplus(x)) as one Mish node (the Softplus and Tanh nodes, unused otherwise,
    are dropped at the end); None when the Mul is not that pattern."""
    if len(ins) != 2:
        return None
    for a, b in ((ins[0], ins[1]), (ins[1], ins[0])):
        x = _mish_base(imp, a, b)
        if x is not None and x.shape == b.shape:
            tid = imp.emit(Node("unary", [x.tid], name=node.name, unary="mish"))
            return _val(tid, x.shape)
    return None


def install(importer_class):
    """Adds the op_<Type> handlers this module defines to the importer, and the Mish pattern in
    front of its Mul."""
    for name, fn in list(globals().items()):
        if name.startswith("op_") and callable(fn):
            setattr(importer_class, name,
                    (lambda f: lambda self, node, ins, where: f(self, node, ins, where))(fn))
    plain_mul = importer_class.op_Mul

    def op_Mul(self, node, ins, where):
        v = mish_mul(self, node, ins, where)
        return v if v is not None else plain_mul(self, node, ins, where)

    importer_class.op_Mul = op_Mul
