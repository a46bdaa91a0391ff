# SPDX-License-Identifier: Apache-2.0
"""ONNX → ir.Graph: maps an exported velocity net onto the .sif op set.

The importer walks the ONNX nodes in order and gives every ONNX value one of three meanings:

* a constant (`_Const`): initializers, Constant nodes and everything computed from them only
  (folded with numpy). Shape vectors that depend on the batch size carry the marker `BSYM` in
  place of B, so torch's Shape/Gather/Concat/Where chains fold like any other constant;
* a runtime tensor (`_Val` with a tensor id): a [B, w] tensor of the .sif graph. Its ONNX shape
  is tracked symbolically ('B' for the batch axis) so that reshapes, Unsqueeze and the
  scalar-time broadcasting wrappers (t repeated or expanded over the batch) cost nothing; an op
  that reads per-sample axes (Transpose, Slice of an inner axis) first gets the tensor with its
  ONNX per-sample shape (`_shaped`: a Reshape node when the .sif shape differs, free at run time);
* a pattern value (`_Val` without a tensor id): a piece of a GELU, SiLU or decomposed LayerNorm
  pattern (e.g. Erf(x/√2)) that only becomes a tensor when the pattern is complete.

Every value derived from a tensor X by elementwise arithmetic also carries a symbolic `form`
(a sum of monomials c·X^k·f(X), f ∈ {1, erf(X/√2), tanh(√(2/π)(X + 0.044715X³)), sigmoid(X)}),
which is how the GELU/SiLU patterns are recognised in whatever order an exporter writes them.
Nodes made unnecessary by a recognised pattern are removed at the end (dead-code elimination),
and a MatMul followed by a bias Add, or a LayerNorm followed by Mul γ / Add β, is fused.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import onnx_attention
from . import onnx_broadcast
from . import onnx_image
from . import onnx_math
from . import onnx_conditioning
from .ir import ConversionError, Graph, Node

BSYM = 1_000_003          # stands for the batch size B inside folded integer shape vectors

SUPPORTED_OPS = (
    "Gemm, MatMul(+Add bias), Relu, LeakyRelu, Elu, Selu (default alpha/gamma), Tanh, Sigmoid, "
    "Softplus, Sin, Cos, Exp (format 1.1), Slice/Split/Gather of a contiguous feature range "
    "(a Slice node, format 1.4), SiLU (x*Sigmoid(x)), GELU (erf pattern and "
    "tanh-approximation pattern), "
    "Concat (feature axis), Add, Sub, Mul, Div and Neg (tensor with constant; Add/Mul/Sub/Div of "
    "two tensors), Pow (constant exponent), ReduceMean/ReduceSum/ReduceL2 (last axis), Log, Sqrt, "
    "Reciprocal, Abs, HardSwish, Mish, Clip, Softmax (last axis), Slice/Gather (feature "
    "axis), LayerNormalization (last axis) and its decomposed pattern, no-op Identity/Dropout/"
    "Flatten/Reshape/Unsqueeze/Squeeze/Cast/Expand/Tile, Shape/Gather/ConstantOfShape/Concat/"
    "Equal/Where shape arithmetic, and any op on constants only (folded); format 1.4: x of shape "
    "[B, C, H, W] or [B, T, C], Reshape/Flatten to any per-sample shape of rank <= 3 (free), "
    "Transpose of the per-sample axes, Slice/Split of one per-sample axis, fixed-batch exports; "
    "on image tensors [B, C, H, W]: " + onnx_image.SUPPORTED + "; attention: " +
    onnx_attention.SUPPORTED)

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_GELU_C = math.sqrt(2.0 / math.pi)
_SELU_ALPHA = 1.6732632423543772
_SELU_GAMMA = 1.0507009873554805


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


# ----------------------------------------------------------------------------------- values

@dataclass
class _Const:
    """A value known at conversion time; `shape` may hold 'B' where arr has size 1."""
    arr: np.ndarray
    shape: tuple

    @staticmethod
    def of(arr) -> "_Const":
        arr = np.asarray(arr)
        return _Const(arr, tuple(arr.shape))

    @property
    def batched(self) -> bool:
        return "B" in self.shape


@dataclass
class _Val:
    """A runtime tensor (tid set) or a pattern piece (tid None), with its symbolic ONNX shape."""
    tid: Optional[int]
    shape: tuple
    form: Optional[tuple] = None     # (base tid, {(power, func): coef})
    ln: Optional[tuple] = None       # decomposed-LayerNorm state: (stage, base tid[, eps])
    origin: str = ""                 # for pattern pieces: the node that made them


def _width(shape: tuple) -> int:
    return int(np.prod([d for d in shape if d != "B"], dtype=np.int64))


def _identity_form(tid: int) -> tuple:
    return (tid, {(1, "1"): 1.0})


# ------------------------------------------------------------------------------ symbolic forms

def _form_add(fa, fb):
    if fa is None or fb is None or fa[0] != fb[0]:
        return None
    out = dict(fa[1])
    for k, c in fb[1].items():
        out[k] = out.get(k, 0.0) + c
    return (fa[0], {k: c for k, c in out.items() if c != 0.0})


def _form_scale(f, c: float, offset: float = 0.0):
    if f is None:
        return None
    out = {k: v * c for k, v in f[1].items()}
    if offset:
        out[(0, "1")] = out.get((0, "1"), 0.0) + offset
    return (f[0], {k: v for k, v in out.items() if v != 0.0})


def _form_mul(fa, fb):
    if fa is None or fb is None or fa[0] != fb[0]:
        return None
    out: Dict[tuple, float] = {}
    for (ka, ga), ca in fa[1].items():
        for (kb, gb), cb in fb[1].items():
            if ga != "1" and gb != "1":
                return None
            k = (ka + kb, gb if ga == "1" else ga)
            if k[0] > 3:
                return None
            out[k] = out.get(k, 0.0) + ca * cb
    return (fa[0], {k: v for k, v in out.items() if v != 0.0})


def _form_is(f, want: Dict[tuple, float]) -> bool:
    return (f is not None and set(f[1]) == set(want)
            and all(_close(f[1][k], c) for k, c in want.items()))


# ------------------------------------------------------------------------------ shapes

def _broadcast(a: tuple, b: tuple, where: str) -> tuple:
    """numpy broadcasting with a symbolic batch axis 'B'."""
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ConversionError(f"{where}: shape mismatch, {_fmt(a)} and {_fmt(b)} cannot "
                                  f"broadcast")
    return tuple(out)


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_row_shape(shape: tuple, where: str) -> tuple:
    """A runtime tensor must be [B, 1, …, 1, w], [B] or batch-free [1, …, 1, w]."""
    rest = shape[1:] if shape and shape[0] == "B" else shape
    ok = "B" not in rest and all(d == 1 for d in rest[:-1])
    if not ok:
        raise ConversionError(f"{where}: tensor shape {_fmt(shape)} is not a [batch, features] "
                              f"layout the .sif format can hold")
    return shape


def _shape_from_vector(vec, where: str) -> tuple:
    out = []
    for v in np.asarray(vec).reshape(-1).tolist():
        v = int(v)
        if v == BSYM:
            out.append("B")
        elif v > 1 << 19:
            raise ConversionError(f"{where}: a shape depends on the batch size in a way this "
                                  f"converter cannot follow")
        else:
            out.append(v)
    return tuple(out)


# ------------------------------------------------------------------------------ folding

def _attr(node, name, default=None):
    from onnx import helper
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _tensor_to_numpy(t) -> np.ndarray:
    from onnx import numpy_helper
    arr = numpy_helper.to_array(t)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
    return arr


def _np_erf(a):
    return np.vectorize(math.erf, otypes=[np.float64])(a)


_ONNX_TO_NP = {1: np.float64, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float64, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _axes(node, inputs, pos: int):
    """Axes from the attribute (older opsets) or from input `pos` (newer opsets)."""
    ax = _attr(node, "axes")
    if ax is None and len(inputs) > pos and inputs[pos] is not None:
        ax = np.asarray(inputs[pos].arr).reshape(-1).tolist()
    return None if ax is None else [int(a) for a in ax]


def _fold(node, ins: List[Optional[_Const]], where: str) -> List[_Const]:
    """Evaluates a node whose inputs are all constants."""
    op = node.op_type
    arrs = [None if c is None else c.arr for c in ins]
    elementwise = {
        "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power,
        "Equal": np.equal, "Less": np.less, "Greater": np.greater, "And": np.logical_and,
        "Or": np.logical_or, "Max": np.maximum, "Min": np.minimum,
    }
    unary = {
        "Neg": np.negative, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Abs": np.abs,
        "Reciprocal": np.reciprocal, "Sin": np.sin, "Cos": np.cos, "Tanh": np.tanh,
        "Sigmoid": lambda a: 1 / (1 + np.exp(-a)), "Relu": lambda a: np.maximum(a, 0),
        "Erf": _np_erf, "Floor": np.floor, "Ceil": np.ceil, "Not": np.logical_not,
        "Softplus": lambda a: np.log1p(np.exp(a)), "Identity": lambda a: a,
    }
    if op in elementwise or op == "Div":
        shape = _broadcast(ins[0].shape, ins[1].shape, where)
        a, b = arrs[0], arrs[1]
        if op == "Div":
            r = a // b if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b
        else:
            r = elementwise[op](a, b)
        return [_Const(np.asarray(r), shape)]
    if op == "Where":
        shape = _broadcast(_broadcast(ins[0].shape, ins[1].shape, where), ins[2].shape, where)
        return [_Const(np.where(arrs[0], arrs[1], arrs[2]), shape)]
    if op in unary:
        return [_Const(np.asarray(unary[op](arrs[0])), ins[0].shape)]
    if op == "Cast":
        to = _ONNX_TO_NP.get(int(_attr(node, "to")), np.float64)
        return [_Const(arrs[0].astype(to), ins[0].shape)]
    if op == "Shape":
        vec = np.array([BSYM if d == "B" else d for d in ins[0].shape], dtype=np.int64)
        return [_Const.of(vec[_attr(node, "start", 0):_attr(node, "end", None)])]
    if op == "ConstantOfShape":
        shape = _shape_from_vector(arrs[0], where)
        value = _attr(node, "value")
        fill = _tensor_to_numpy(value).reshape(-1) if value is not None else np.zeros(1)
        concrete = tuple(1 if d == "B" else d for d in shape)
        return [_Const(np.full(concrete, fill[0], dtype=fill.dtype), shape)]
    if op == "Expand":
        target = _shape_from_vector(arrs[1], where)
        shape = _broadcast(ins[0].shape, target, where)
        concrete = tuple(1 if d == "B" else d for d in shape)
        return [_Const(np.broadcast_to(arrs[0], concrete).copy(), shape)]
    if any(c is not None and c.batched for c in ins):
        raise ConversionError(f"{where}: folding a batch-shaped constant through {op} is not "
                              f"supported")
    if op == "Gather":
        return [_Const.of(np.take(arrs[0], arrs[1].astype(np.int64), axis=_attr(node, "axis", 0)))]
    if op == "Unsqueeze":
        out = arrs[0]
        for ax in sorted(a % (out.ndim + len(_axes(node, ins, 1))) for a in _axes(node, ins, 1)):
            out = np.expand_dims(out, ax)
        return [_Const.of(out)]
    if op == "Squeeze":
        ax = _axes(node, ins, 1)
        return [_Const.of(np.squeeze(arrs[0], axis=None if ax is None else tuple(ax)))]
    if op == "Concat":
        parts = [a for a in arrs if a is not None and a.size > 0] or [arrs[0]]
        return [_Const.of(np.concatenate(parts, axis=_attr(node, "axis", 0)))]
    if op == "Reshape":
        target = [int(v) for v in arrs[1].reshape(-1)]
        target = [arrs[0].shape[i] if v == 0 and not _attr(node, "allowzero", 0) else v
                  for i, v in enumerate(target)]
        return [_Const.of(arrs[0].reshape(target))]
    if op == "Flatten":
        ax = _attr(node, "axis", 1) % max(arrs[0].ndim, 1)
        return [_Const.of(arrs[0].reshape(int(np.prod(arrs[0].shape[:ax])), -1))]
    if op == "Transpose":
        return [_Const.of(np.transpose(arrs[0], _attr(node, "perm")))]
    if op == "MatMul":
        return [_Const.of(np.matmul(arrs[0], arrs[1]))]
    if op == "Gemm":
        a = arrs[0].T if _attr(node, "transA", 0) else arrs[0]
        b = arrs[1].T if _attr(node, "transB", 0) else arrs[1]
        r = _attr(node, "alpha", 1.0) * (a @ b)
        if len(arrs) > 2 and arrs[2] is not None:
            r = r + _attr(node, "beta", 1.0) * arrs[2]
        return [_Const.of(r)]
    if op == "Slice":
        return [_Const.of(_slice(arrs[0], node, ins))]
    if op == "Tile":
        return [_Const.of(np.tile(arrs[0], arrs[1].astype(np.int64)))]
    if op == "Range":
        return [_Const.of(np.arange(arrs[0].item(), arrs[1].item(), arrs[2].item()))]
    if op in ("ReduceMean", "ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin"):
        ax = _axes(node, ins, 1)
        f = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceProd": np.prod,
             "ReduceMax": np.max, "ReduceMin": np.min}[op]
        keep = bool(_attr(node, "keepdims", 1))
        return [_Const.of(f(arrs[0], axis=None if ax is None else tuple(ax), keepdims=keep))]
    if op == "Dropout":
        return [_Const.of(arrs[0])]
    raise ConversionError(f"{where}: cannot fold constant op {op}; supported: {SUPPORTED_OPS}")


def _slice(arr, node, ins):
    if _attr(node, "starts") is not None:        # opset < 10
        starts, ends = _attr(node, "starts"), _attr(node, "ends")
        axes = _attr(node, "axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = ins[1].arr.tolist(), ins[2].arr.tolist()
        axes = ins[3].arr.tolist() if len(ins) > 3 and ins[3] is not None else \
            list(range(len(starts)))
        steps = ins[4].arr.tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx = [slice(None)] * arr.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        idx[int(a)] = slice(int(s), int(e), int(st))
    return arr[tuple(idx)]


# ------------------------------------------------------------------------------ refusals

_REFUSED = object()   # the outputs of a node that was refused (nodes reading them are skipped)


def _refusal_message(refusals: List[str], fixed_batch: Optional[int]) -> str:
    """One message naming every refused node (name, op type, cause); the list of supported ops
    once at the end, and the dynamic-batch hint for a fixed-batch export."""
    hint = ""
    if fixed_batch is not None and not any("dynamic batch axis" in r for r in refusals):
        hint = (f" (the graph was exported with a fixed batch of {fixed_batch}; if a refusal "
                f"comes from that, export it with a dynamic batch axis: torch.onnx.export(..., "
                f"dynamic_axes={{'x': {{0: 'B'}}, 't': {{0: 'B'}}, 'v': {{0: 'B'}}}}))")
    if len(refusals) == 1:
        return refusals[0] + hint
    listed = any(SUPPORTED_OPS in r for r in refusals)
    short = [r.split("; supported", 1)[0] if SUPPORTED_OPS in r else r for r in refusals]
    return (f"{len(refusals)} nodes cannot be converted:\n  " + "\n  ".join(short) +
            (f"\nsupported: {SUPPORTED_OPS}" if listed else "") + hint)


# ------------------------------------------------------------------------------ the importer

class _Importer:
    """Holds the ONNX graph being converted and the ir.Graph being built."""

    def __init__(self, model, x_input, time_input, time_column, dim, cond_settings=None):
        self.model = model
        self.g = model.graph
        self.values: Dict[str, object] = {}
        self.graph: Graph = None
        self.cond_settings = cond_settings or onnx_conditioning.Settings()
        self._setup_inputs(x_input, time_input, time_column, dim)

    # -- inputs -------------------------------------------------------------------------
    def _input_shape(self, vi) -> Tuple[list, int]:
        tt = vi.type.tensor_type
        if tt.elem_type not in (1, 10, 11):
            raise ConversionError(f"input '{vi.name}' has element type {tt.elem_type}; only "
                                  f"floating-point inputs are supported")
        if not tt.HasField("shape"):
            return None, tt.elem_type
        return [d.dim_value if d.HasField("dim_value") else "B" for d in tt.shape.dim], \
            tt.elem_type

    def _setup_inputs(self, x_input, time_input, time_column, dim):
        self.fixed_batch = None
        inits = {i.name for i in self.g.initializer}
        inputs = [vi for vi in self.g.input if vi.name not in inits]
        names = [vi.name for vi in inputs]
        by_name = {vi.name: vi for vi in inputs}
        # A class label and a condition vector (onnx_conditioning) are set aside first.
        names, label_name, cond_name = onnx_conditioning.split_inputs(names, self.cond_settings)
        for given in (x_input, time_input):
            if given is not None and given not in by_name:
                raise ConversionError(f"unknown input name {given!r}; the graph's inputs are "
                                      f"{names}")
        if time_column is not None and time_column not in ("first", "last"):
            raise ConversionError(f"time_column must be 'first' or 'last', not {time_column!r}")
        if time_column is not None:
            if time_input is not None:
                raise ConversionError("give either a time input or a time column, not both")
            xname = x_input or (names[0] if len(names) == 1 else None)
            if xname is None:
                raise ConversionError(f"time_column needs one graph input (or x_input); the graph "
                                      f"has {names}")
            self._setup_concatenated(by_name[xname], time_column, dim)
            return
        if x_input is None and time_input is None:
            if len(names) == 1:
                raise ConversionError(
                    f"missing time input: the graph has one input {names[0]!r}; if it holds t "
                    f"in a column pass time_column='first' or 'last' (--time-column), or give "
                    f"the time input's name")
            if "x" in by_name and "t" in by_name and len(names) == 2:
                x_input, time_input = "x", "t"
            else:
                raise ConversionError(f"cannot tell x and t apart among the inputs {names}; pass "
                                      f"x_input and time_input (--x-input/--time-input)")
        elif time_input is None:
            rest = [n for n in names if n != x_input]
            if len(rest) != 1:
                raise ConversionError(f"missing time input: the graph's inputs are {names}; "
                                      f"pass time_input (--time-input) or time_column")
            time_input = rest[0]
        elif x_input is None:
            rest = [n for n in names if n != time_input]
            if len(rest) != 1:
                raise ConversionError(f"cannot find x among the inputs {names}; pass x_input")
            x_input = rest[0]
        extra = [n for n in names if n not in (x_input, time_input)]
        if extra:
            raise ConversionError(f"the graph has inputs {extra} besides x {x_input!r} and t "
                                  f"{time_input!r}; only these two are supported")
        xshape, _ = self._input_shape(by_name[x_input])
        xshape = self._batch_axis(x_input, xshape)
        if xshape is not None and len(xshape) in (3, 4):
            # An image [B, C, H, W] or sequence [B, T, C] input: x_shape (format 1.4).
            sample = xshape[1:]
            if any(d == "B" or not d for d in sample):
                raise ConversionError(f"input {x_input!r} has shape {_fmt(xshape)}; every axis "
                                      f"but the batch must be fixed")
            d = int(np.prod(sample))
            if dim is not None and dim != d:
                raise ConversionError(f"input {x_input!r} has {d} values per sample "
                                      f"({_fmt(xshape)}) but dim={dim} was given")
            self.graph = Graph(dim=d, x_shape=[int(e) for e in sample])
            self.values[x_input] = _Val(0, ("B",) + tuple(int(e) for e in sample),
                                        _identity_form(0))
        else:
            d = self._x_dim(x_input, xshape, dim)
            self.graph = Graph(dim=d)
            self.values[x_input] = _Val(0, ("B", d), _identity_form(0))
        if label_name is not None:
            onnx_conditioning.check_label_input(by_name[label_name])
            self.values[label_name] = onnx_conditioning.LabelRef(label_name)
        if cond_name is not None:
            node, w = onnx_conditioning.cond_node(by_name[cond_name], self.cond_settings)
            self.values[cond_name] = _Val(self.emit(node), ("B", w), None)
        self.values[time_input] = _Val(1, self._t_shape(time_input, by_name[time_input],
                                                        xshape), _identity_form(1))

    def _batch_axis(self, name, shape):
        """x's declared shape with its batch axis as 'B'. A fixed-batch export (torch.onnx.export
        without dynamic_axes) declares a number there: it is read as the batch, and a reshape
        that writes that number as its leading extent keeps the batch (`fixed_batch`); a graph
        that uses it in any other way is refused with a hint to export a dynamic batch axis."""
        self.fixed_batch = None
        if shape is None or not shape or shape[0] == "B":
            return shape
        self.fixed_batch = int(shape[0])
        return ["B"] + list(shape[1:])

    def _x_dim(self, name, shape, dim) -> int:
        if shape is not None and len(shape) not in (2, 3, 4):
            raise ConversionError(f"input {name!r} has shape {_fmt(shape)}; x must be [batch, d], "
                                  f"[batch, T, C] or [batch, C, H, W]")
        declared = shape[1] if shape is not None and shape[1] != "B" else None
        if declared is not None and dim is not None and declared != dim:
            raise ConversionError(f"input {name!r} has width {declared} but dim={dim} was given")
        d = declared if declared is not None else dim
        if not d:
            raise ConversionError(f"the width of input {name!r} is not fixed in the graph; give "
                                  f"dim (--dim)")
        return int(d)

    def _t_shape(self, name, vi, xshape) -> tuple:
        shape, _ = self._input_shape(vi)
        if shape is None:
            raise ConversionError(f"time input {name!r} has no declared shape")
        batch = xshape[0] if xshape else "B"
        if self.fixed_batch is not None and shape and shape[0] == self.fixed_batch:
            shape = ["B"] + list(shape[1:])   # t of a fixed-batch export: one per row
        if len(shape) == 0:
            return ()
        if len(shape) == 1:
            return ("B",) if shape[0] == "B" or (shape[0] == batch and batch != 1) else \
                self._t_fixed(name, shape)
        if len(shape) == 2 and shape[1] == 1:
            return ("B", 1) if shape[0] == "B" or (shape[0] == batch and batch != 1) else \
                self._t_fixed(name, shape)
        raise ConversionError(f"time input {name!r} has shape {_fmt(shape)}; supported: [B, 1], "
                              f"[B], [1] or a scalar")

    @staticmethod
    def _t_fixed(name, shape) -> tuple:
        if all(d == 1 for d in shape):
            return tuple(shape)
        raise ConversionError(f"time input {name!r} has shape {_fmt(shape)}; supported: [B, 1], "
                              f"[B], [1] or a scalar")

    def _setup_concatenated(self, vi, column, dim):
        shape, _ = self._input_shape(vi)
        total = self._x_dim(vi.name, shape, None if dim is None else dim + 1)
        if total < 2:
            raise ConversionError(f"input {vi.name!r} has width {total}; with a time column it "
                                  f"needs at least 2")
        self.graph = Graph(dim=total - 1)
        ids = [1, 0] if column == "first" else [0, 1]
        tid = self.graph.add(Node("concat", ids, name=f"{vi.name} (t {column})"))
        self.values[vi.name] = _Val(tid, ("B", total), _identity_form(tid))

    # -- helpers ------------------------------------------------------------------------
    def emit(self, node: Node) -> int:
        return self.graph.add(node)

    def val(self, name: str, where: str):
        if name == "":
            return None
        if name not in self.values:
            raise ConversionError(f"{where}: input {name!r} is not defined (missing initializer "
                                  f"or graph input?)")
        return self.values[name]

    @staticmethod
    def need(v, where: str) -> _Val:
        if isinstance(v, _Val) and v.tid is None:
            raise ConversionError(f"{where}: reads the output of {v.origin}, which is supported "
                                  f"only inside a GELU (x*0.5*(1+Erf(x/sqrt2)) or tanh form) or "
                                  f"LayerNorm pattern")
        return v

    def const_tensor(self, arr: np.ndarray, shape: tuple, where: str) -> _Val:
        """A runtime tensor holding a constant row: t·0 + c (t is finite, so t·0 = 0)."""
        row = np.asarray(arr, dtype=np.float64).reshape(-1)
        z = self.emit(Node("mul", [1], name=f"{where} const", constant=np.zeros(row.size)))
        tid = self.emit(Node("add", [z], name=f"{where} const", constant=row))
        return _Val(tid, shape, _identity_form(tid))

    # -- main loop ----------------------------------------------------------------------
    def run(self) -> Graph:
        for init in self.g.initializer:
            arr = _tensor_to_numpy(init)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                users = [n.name or n.op_type for n in self.g.node if init.name in n.input]
                raise ConversionError(f"initializer {init.name!r} (used by {users}) holds NaN or "
                                      f"Inf values")
            if init.name not in self.values:
                self.values[init.name] = _Const.of(arr)
        refusals = []   # every node that cannot be converted, reported together
        for node in self.g.node:
            where = f"node '{node.name or '(unnamed)'}' ({node.op_type})"
            ins = [self.val(n, where) for n in node.input]
            if any(v is _REFUSED for v in ins):
                outs = [_REFUSED] * len(node.output)   # downstream of a refusal: not judged
            else:
                try:
                    if node.domain not in ("", "ai.onnx"):
                        raise ConversionError(f"{where}: op domain {node.domain!r} is not "
                                              f"supported; supported ops: {SUPPORTED_OPS}")
                    outs = self.node(node, ins, where)
                except ConversionError as e:
                    refusals.append(str(e))
                    outs = [_REFUSED] * len(node.output)
            for name, v in zip(node.output, outs):
                if name:
                    self.values[name] = v
        if refusals:
            raise ConversionError(_refusal_message(refusals, self.fixed_batch))
        return self.finish()

    def node(self, node, ins, where) -> list:
        op = node.op_type
        if op == "Constant":
            return [_Const.of(self._constant_attr(node, where))]
        if all(v is None or isinstance(v, _Const) for v in ins) and ins:
            if op in ("Dropout",):
                return [ins[0]]
            return _fold(node, ins, where)
        if any(isinstance(v, onnx_conditioning.LabelRef) for v in ins):
            tid, width = onnx_conditioning.embedding(self, node, ins, where)
            return [_Val(tid, ("B", width), _identity_form(tid))]
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            raise ConversionError(f"{where}: op {op} is not supported; supported: "
                                  f"{SUPPORTED_OPS}")
        out = handler(node, ins, where)
        return out if isinstance(out, list) else [out]

    @staticmethod
    def _constant_attr(node, where):
        for a in node.attribute:
            if a.name == "value":
                return _tensor_to_numpy(a.t)
            if a.name in ("value_float", "value_floats"):
                return np.asarray(_attr(node, a.name), dtype=np.float64)
            if a.name in ("value_int", "value_ints"):
                return np.asarray(_attr(node, a.name), dtype=np.int64)
        raise ConversionError(f"{where}: Constant without a supported value attribute")

    # -- finishing ----------------------------------------------------------------------
    def finish(self) -> Graph:
        if len(self.g.output) != 1:
            raise ConversionError(f"the graph has {len(self.g.output)} outputs; exactly one "
                                  f"(the velocity) is supported")
        name = self.g.output[0].name
        v = self.values.get(name)
        where = f"graph output {name!r}"
        if v is None:
            raise ConversionError(f"{where} is not produced by any node")
        if isinstance(v, _Const):
            raise ConversionError(f"{where} is a constant; it does not depend on x or t")
        v = self.need(v, where)
        w = _width(v.shape)
        if w != self.graph.dim or (len(v.shape) > 2 and v.shape[0] != "B") or \
                (len(v.shape) == 1 and v.shape != ("B",)):
            raise ConversionError(f"{where} has shape {_fmt(v.shape)} (width {w}); the velocity "
                                  f"must be [batch, {self.graph.dim}] like x")
        tid = v.tid
        if tid < 2:
            tid = self.emit(Node("unary", [tid], name="output", unary="identity"))
        self.graph.output = tid
        return finalize(self.graph)

    # -- elementwise ----------------------------------------------------------------------
    def _binary_const(self, op, a: _Val, c: _Const, where, name) -> _Val:
        """a (op) c for op in add/mul, c a constant row; drops identity operations."""
        shape, arr = onnx_image.broadcast_constant(a.shape, c, where)
        w = _width(shape)
        if arr.size > 1 and any(d != 1 for d in arr.shape[:-1]):
            raise ConversionError(f"{where}: constant of shape {_fmt(arr.shape)} is not a row "
                                  f"the .sif format can broadcast")
        row = arr.reshape(-1)
        if not np.all(np.isfinite(row)):
            raise ConversionError(f"{where}: constant holds NaN or Inf values")
        uniform = bool(np.all(row == row[0]))
        neutral = 0.0 if op == "add" else 1.0
        aw = _width(a.shape)
        if uniform and row[0] == neutral and aw == w:
            return _Val(a.tid, shape, a.form, a.ln, a.origin)
        form = None
        if uniform and aw == w:
            form = _form_scale(a.form, 1.0, row[0]) if op == "add" else \
                _form_scale(a.form, row[0])
        if a.tid is None:
            ln = a.ln
            if op == "add" and ln is not None and ln[0] == "var" and row.size == 1:
                return _Val(None, shape, None, ("var_eps", ln[1], float(row[0])), where)
            return self._pattern(form, shape, where)
        if row.size == 1 and w > 1:
            row = np.full(w, row[0])
        tid = self.emit(Node(op, [a.tid], name=name, constant=row))
        ln = None
        if op == "add" and a.ln is not None and a.ln[0] == "var" and row.size == 1:
            ln = ("var_eps", a.ln[1], float(row[0]))
        return self._complete(_Val(tid, shape, form, ln), where, name)

    def _pattern(self, form, shape, where) -> _Val:
        v = _Val(None, shape, form, None, where)
        return self._complete(v, where, where)

    def _complete(self, v: _Val, where, name) -> _Val:
        """Replaces a value whose form is a GELU/SiLU of its base by the unary node."""
        if v.tid is not None and v.form is None:
            v.form = _identity_form(v.tid)
        f = v.form
        kind = None
        if f is not None and (f[0], 1) != (v.tid, 1):
            if _form_is(f, {(1, "1"): 0.5, (1, "E"): 0.5}):
                kind = "gelu_erf"
            elif _form_is(f, {(1, "1"): 0.5, (1, "T"): 0.5}):
                kind = "gelu_tanh"
            elif _form_is(f, {(1, "S"): 1.0}):
                kind = "silu"
        if kind is None:
            return v
        tid = self.emit(Node("unary", [f[0]], name=name, unary=kind))
        return _Val(tid, v.shape, _identity_form(tid))

    def _tensor_tensor(self, op, a: _Val, b: _Val, where, name) -> _Val:
        shape = onnx_image.broadcast_flat(a.shape, b.shape, where)
        form = _form_add(a.form, b.form) if op == "add" else _form_mul(a.form, b.form)
        ln = None
        if op == "mul" and a.ln is not None and a is b and a.ln[0] == "centered":
            ln = ("sq", a.ln[1])
        if op == "mul" and a.ln is not None and b.ln is not None and a.ln[0] == "centered" \
                and b.ln[0] == "rstd" and a.ln[1] == b.ln[1]:
            return self._layernorm(b.ln[1], b.ln[2], shape, name)
        if a.tid is None or b.tid is None:
            v = self._pattern(form, shape, where)
            if v.tid is None and v.form is None:
                self.need(a if a.tid is None else b, where)
            return v
        tid = self.emit(Node(op, [a.tid, b.tid], name=name))
        return self._complete(_Val(tid, shape, form, ln), where, name)

    def _layernorm(self, base: int, eps: float, shape, name) -> _Val:
        tid = self.emit(Node("layernorm", [base], name=name, epsilon=eps))
        return _Val(tid, shape, _identity_form(tid))

    def _elementwise(self, op, node, ins, where):
        a, b = ins[0], ins[1]
        name = node.name
        if isinstance(a, _Const) and op in ("add", "mul"):
            a, b = b, a
        if isinstance(b, _Const):
            return self._binary_const(op, a, b, where, name)
        if isinstance(a, _Const):
            raise ConversionError(f"{where}: constant first operand is not supported here")
        return self._tensor_tensor(op, a, b, where, name)

    def op_Add(self, node, ins, where):
        return self._elementwise("add", node, ins, where)

    def op_Mul(self, node, ins, where):
        return self._elementwise("mul", node, ins, where)

    def op_Sub(self, node, ins, where):
        a, b = ins
        if isinstance(b, _Const):
            return self._binary_const("add", a, _Const(-np.asarray(b.arr, np.float64), b.shape),
                                      where, node.name)
        if isinstance(b, _Val) and b.ln is not None and b.ln[0] == "mean" \
                and isinstance(a, _Val) and a.tid == b.ln[1]:
            nb = self._binary_const("mul", b, _Const.of(np.array(-1.0)), where, node.name)
            v = self._tensor_tensor("add", a, nb, where, node.name)
            v.ln = ("centered", a.tid)
            return v
        if isinstance(a, _Const):
            nb = self._binary_const("mul", b, _Const.of(np.array(-1.0)), where, node.name)
            return self._binary_const("add", nb, a, where, node.name)
        nb = self._binary_const("mul", self.need(b, where), _Const.of(np.array(-1.0)), where,
                                node.name)
        return self._tensor_tensor("add", a, nb, where, node.name)

    def op_Div(self, node, ins, where):
        a, b = ins
        if isinstance(b, _Const):
            arr = np.asarray(b.arr, np.float64)
            if np.any(arr == 0):
                raise ConversionError(f"{where}: division by a constant holding 0")
            return self._binary_const("mul", a, _Const(1.0 / arr, b.shape), where, node.name)
        if isinstance(a, _Val) and isinstance(b, _Val) and a.ln is not None \
                and b.ln is not None and a.ln[0] == "centered" and b.ln[0] == "std" \
                and a.ln[1] == b.ln[1]:
            return self._layernorm(a.ln[1], b.ln[2], a.shape, node.name)
        return onnx_math.div(self, node, ins, where)

    def op_Neg(self, node, ins, where):
        return self._binary_const("mul", ins[0], _Const.of(np.array(-1.0)), where, node.name)

    def op_Pow(self, node, ins, where):
        a, b = ins
        if not isinstance(b, _Const) or b.arr.size != 1:
            raise ConversionError(f"{where}: Pow needs a constant scalar exponent")
        e = float(np.asarray(b.arr).reshape(-1)[0])
        if e == 1.0:
            return a
        if e == 0.5 and isinstance(a, _Val) and a.ln is not None and a.ln[0] == "var_eps":
            return _Val(None, a.shape, None, ("std",) + a.ln[1:], where)
        if e not in (2.0, 3.0):
            return onnx_math.pow_constant(self, node, a, e, where)
        a = self.need(a, where)
        sq = self._tensor_tensor("mul", a, a, where, node.name)
        return sq if e == 2.0 else self._tensor_tensor("mul", sq, a, where, node.name)

    def op_Sqrt(self, node, ins, where):
        a = ins[0]
        if isinstance(a, _Val) and a.ln is not None and a.ln[0] == "var_eps":
            return _Val(None, a.shape, None, ("std",) + a.ln[1:], where)
        return onnx_math.sqrt(self, node, ins, where)

    def op_Reciprocal(self, node, ins, where):
        a = ins[0]
        if isinstance(a, _Val) and a.ln is not None and a.ln[0] == "std":
            return _Val(None, a.shape, None, ("rstd",) + a.ln[1:], where)
        return onnx_math.reciprocal(self, node, ins, where)

    # -- activations --------------------------------------------------------------------
    def _unary(self, kind, node, ins, where, alpha=None, form=None):
        a = self.need(ins[0], where)
        kw = {} if alpha is None else {"alpha": float(alpha)}
        tid = self.emit(Node("unary", [a.tid], name=node.name, unary=kind, **kw))
        return _Val(tid, a.shape, form if form is not None else _identity_form(tid))

    def op_Relu(self, node, ins, where):
        return self._unary("relu", node, ins, where)

    def op_LeakyRelu(self, node, ins, where):
        return self._unary("leaky_relu", node, ins, where, alpha=_attr(node, "alpha", 0.01))

    def op_Elu(self, node, ins, where):
        return self._unary("elu", node, ins, where, alpha=_attr(node, "alpha", 1.0))

    def op_Selu(self, node, ins, where):
        alpha, gamma = _attr(node, "alpha", _SELU_ALPHA), _attr(node, "gamma", _SELU_GAMMA)
        if not (_close(alpha, _SELU_ALPHA) and _close(gamma, _SELU_GAMMA)):
            raise ConversionError(f"{where}: Selu with alpha={alpha} gamma={gamma}; only the "
                                  f"defaults ({_SELU_ALPHA}, {_SELU_GAMMA}) are supported")
        return self._unary("selu", node, ins, where)

    def op_Softplus(self, node, ins, where):
        return self._unary("softplus", node, ins, where)

    def op_Sin(self, node, ins, where):
        return self._unary("sin", node, ins, where)

    def op_Cos(self, node, ins, where):
        return self._unary("cos", node, ins, where)

    def op_Exp(self, node, ins, where):
        a = self.need(ins[0], where)
        tid = self.emit(Node("exp", [a.tid], name=node.name))
        return _Val(tid, a.shape, _identity_form(tid))

    def op_Sigmoid(self, node, ins, where):
        a = self.need(ins[0], where)
        form = (a.tid, {(0, "S"): 1.0})
        return self._unary("sigmoid", node, ins, where, form=form)

    def op_Tanh(self, node, ins, where):
        a = self.need(ins[0], where)
        form = None
        f = a.form
        if f is not None and _form_is(f, {(1, "1"): _GELU_C, (3, "1"): _GELU_C * 0.044715}):
            form = (f[0], {(0, "T"): 1.0})
        v = self._unary("tanh", node, ins, where)
        if form is not None:
            v.form = form
        return v

    def op_Erf(self, node, ins, where):
        a = ins[0]
        f = a.form if isinstance(a, _Val) else None
        if f is None or not _form_is(f, {(1, "1"): _INV_SQRT2}):
            raise ConversionError(f"{where}: Erf is supported only in the GELU pattern "
                                  f"x*0.5*(1+Erf(x/sqrt(2))); its input is not x/sqrt(2) of one "
                                  f"tensor")
        return _Val(None, a.shape, (f[0], {(0, "E"): 1.0}), None, where)

    def op_Identity(self, node, ins, where):
        return ins[0]

    def op_Dropout(self, node, ins, where):
        return [ins[0]]

    def op_Cast(self, node, ins, where):
        to = int(_attr(node, "to"))
        if to not in (1, 10, 11):
            raise ConversionError(f"{where}: Cast of a tensor to a non-float type ({to}) is not "
                                  f"supported")
        return ins[0]

    # -- linear layers ------------------------------------------------------------------
    def _fc(self, a: _Val, weight, bias, where, name) -> _Val:
        a = self.need(a, where)
        if len(a.shape) == 0 or (a.shape[-1] == "B"):
            raise ConversionError(f"{where}: the tensor input has shape {_fmt(a.shape)}; a "
                                  f"linear layer needs [batch, features]")
        if weight.shape[1] != _width(a.shape):
            raise ConversionError(f"{where}: shape mismatch, weight is {_fmt(weight.shape)} "
                                  f"[out, in] but the input has width {_width(a.shape)}")
        for arr, what in ((weight, "weight"), (bias, "bias")):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ConversionError(f"{where}: {what} holds NaN or Inf values")
        tid = self.emit(Node("fc", [a.tid], name=name, weight=weight, bias=bias))
        return _Val(tid, a.shape[:-1] + (weight.shape[0],), _identity_form(tid))

    def op_Gemm(self, node, ins, where):
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        if not isinstance(b, _Const) or (c is not None and not isinstance(c, _Const)):
            raise ConversionError(f"{where}: Gemm needs constant B and C (weights)")
        if _attr(node, "transA", 0):
            raise ConversionError(f"{where}: Gemm with transA=1 on a batch tensor is not "
                                  f"supported")
        bm = np.asarray(b.arr, np.float64)
        if bm.ndim != 2:
            raise ConversionError(f"{where}: Gemm weight must be 2-D, got {_fmt(bm.shape)}")
        w = (bm if _attr(node, "transB", 0) else bm.T) * _attr(node, "alpha", 1.0)
        bias = None
        if c is not None:
            carr = np.asarray(c.arr, np.float64)
            if carr.size not in (1, w.shape[0]) or (carr.ndim == 2 and carr.shape[0] != 1):
                raise ConversionError(f"{where}: shape mismatch, C is {_fmt(carr.shape)} but "
                                      f"the layer has {w.shape[0]} outputs")
            bias = np.broadcast_to(carr.reshape(-1), (w.shape[0],)) * _attr(node, "beta", 1.0)
        return self._fc(a, w, bias, where, node.name)

    def op_MatMul(self, node, ins, where):
        a, b = ins
        if not isinstance(b, _Const):
            raise ConversionError(f"{where}: MatMul needs a constant right operand (weights)")
        bm = np.asarray(b.arr, np.float64)
        if bm.ndim == 1:
            v = self._fc(a, bm.reshape(1, -1), None, where, node.name)
            v.shape = v.shape[:-1]
            return v
        if bm.ndim != 2:
            raise ConversionError(f"{where}: MatMul weight must be 1-D or 2-D, got "
                                  f"{_fmt(bm.shape)}")
        if isinstance(a, _Val) and len(a.shape) == 1 and a.shape != ("B",):
            a = _Val(a.tid, (1,) + a.shape, a.form, a.ln, a.origin)
            v = self._fc(a, bm.T, None, where, node.name)
            v.shape = v.shape[1:]
            return v
        return self._fc(a, bm.T, None, where, node.name)

    def _reduce(self, node, ins, where, mean: bool):
        a = self.need(ins[0], where)
        ax = _axes(node, ins, 1)
        r = len(a.shape)
        if r == 0 or ax is None or [x % r for x in ax] != [r - 1] or a.shape[-1] == "B":
            raise ConversionError(f"{where}: reduction over axes {ax} of a {_fmt(a.shape)} "
                                  f"tensor; only the last (feature) axis is supported")
        w = _width(a.shape)
        v = self._fc(a, np.full((1, w), 1.0 / w if mean else 1.0), None, where, node.name)
        keep = bool(_attr(node, "keepdims", 1))
        v.shape = a.shape[:-1] + ((1,) if keep else ())
        if mean and keep and len(a.shape) == 2 and a.shape[0] == "B":
            if a.ln is not None and a.ln[0] == "sq":
                v.ln = ("var", a.ln[1])
            elif a.ln is None:
                v.ln = ("mean", a.tid)
        return v

    def op_ReduceMean(self, node, ins, where):
        return self._reduce(node, ins, where, True)

    def op_ReduceSum(self, node, ins, where):
        return self._reduce(node, ins, where, False)

    def op_LayerNormalization(self, node, ins, where):
        a = self.need(ins[0], where)
        axis = _attr(node, "axis", -1)
        if axis % max(len(a.shape), 1) != len(a.shape) - 1:
            raise ConversionError(f"{where}: LayerNormalization over axis {axis}; only the last "
                                  f"axis is supported")
        w = _width(a.shape)
        params = []
        for p, what in ((ins[1] if len(ins) > 1 else None, "scale"),
                        (ins[2] if len(ins) > 2 else None, "bias")):
            if p is None:
                params.append(None)
                continue
            if not isinstance(p, _Const) or p.arr.size != w:
                raise ConversionError(f"{where}: LayerNormalization {what} must be a constant "
                                      f"with {w} values")
            params.append(np.asarray(p.arr, np.float64).reshape(-1))
        tid = self.emit(Node("layernorm", [a.tid], name=node.name, gamma=params[0],
                             beta=params[1], epsilon=float(_attr(node, "epsilon", 1e-5))))
        return [_Val(tid, a.shape, _identity_form(tid))]

    # -- structure ----------------------------------------------------------------------
    def op_Concat(self, node, ins, where):
        axis = _attr(node, "axis")
        shapes = [v.shape for v in ins if v is not None]
        r = len(shapes[0])
        if any(len(s) != r for s in shapes) or r == 0:
            raise ConversionError(f"{where}: shape mismatch, inputs have shapes "
                                  f"{[_fmt(s) for s in shapes]}")
        if axis % r != r - 1:
            raise ConversionError(f"{where}: Concat along axis {axis} of rank-{r} tensors; only "
                                  f"the last (feature) axis is supported")
        if r == 1 and any(s == ("B",) for s in shapes):
            raise ConversionError(f"{where}: Concat along the batch axis is not supported")
        lead = shapes[0][:-1]
        if any(s[:-1] != lead for s in shapes):
            raise ConversionError(f"{where}: shape mismatch, inputs have shapes "
                                  f"{[_fmt(s) for s in shapes]}")
        ids = []
        for v in ins:
            if v is None:
                continue
            if isinstance(v, _Const):
                if v.arr.size == 0:
                    continue
                v = self.const_tensor(v.arr, v.shape, where)
            ids.append(self.need(v, where).tid)
        shape = lead + (sum(s[-1] for s in shapes),)
        _check_row_shape(shape, where)
        tid = self.emit(Node("concat", ids, name=node.name))
        return _Val(tid, shape, _identity_form(tid))

    def _reshaped(self, a: _Val, shape: tuple, where) -> _Val:
        """The same values with another ONNX shape. Free: the .sif tensor is unchanged until an
        op reads its axes (`_shaped` then writes a Reshape node)."""
        a = self.need(a, where)
        if _width(shape) != _width(a.shape) or ("B" in shape) != ("B" in a.shape) or \
                ("B" in shape and (shape[0] != "B" or a.shape[0] != "B")):
            hint = ""
            if self.fixed_batch is not None:
                hint = (f"; the graph was exported with a fixed batch of {self.fixed_batch}: "
                        f"export it with a dynamic batch axis (torch.onnx.export(..., "
                        f"dynamic_axes={{'x': {{0: 'B'}}, ...}}))")
            raise ConversionError(f"{where}: reshaping {_fmt(a.shape)} to {_fmt(shape)} moves "
                                  f"values across the batch axis{hint}")
        if shape[:1] == ("B",) and len(shape) > 4:
            raise ConversionError(f"{where}: shape {_fmt(shape)} has {len(shape) - 1} axes per "
                                  f"sample; the .sif format holds at most 3")
        return _Val(a.tid, shape, a.form, a.ln, a.origin)

    def _shaped(self, a: _Val, where) -> int:
        """The id of a .sif tensor holding `a` with its ONNX per-sample shape: `a` itself when the
        graph already gives it that shape, else a Reshape node (free in the runtime)."""
        a = self.need(a, where)
        if a.shape[:1] != ("B",):
            raise ConversionError(f"{where}: the tensor of shape {_fmt(a.shape)} has no leading "
                                  f"batch axis")
        sample = [int(e) for e in a.shape[1:]] or [1]
        if len(sample) > 3:
            raise ConversionError(f"{where}: shape {_fmt(a.shape)} has {len(sample)} axes per "
                                  f"sample; the .sif format holds at most 3")
        shapes = self.graph._shapes_so_far()
        if shapes[a.tid] == sample:
            return a.tid
        return self.emit(Node("reshape", [a.tid], name=f"{where} shape", shape=sample))

    def op_Transpose(self, node, ins, where):
        a = self.need(ins[0], where)
        perm = _attr(node, "perm")
        rank = len(a.shape)
        perm = list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]
        if rank == 0 or a.shape[0] != "B" or perm[0] != 0:
            raise ConversionError(
                f"{where}: Transpose {perm} of {_fmt(a.shape)} moves the batch axis off axis 0 "
                f"(as nn.MultiheadAttention does with batch_first=False); the .sif format keeps "
                f"the batch first: use batch_first=True or permute only the per-sample axes")
        shape = tuple(a.shape[p] for p in perm)
        if perm == list(range(rank)):
            return _Val(a.tid, shape, a.form, a.ln, a.origin)
        src = self._shaped(a, where)
        tid = self.emit(Node("transpose", [src], name=node.name, perm=[p - 1 for p in perm[1:]]))
        return _Val(tid, shape, _identity_form(tid))

    def op_Unsqueeze(self, node, ins, where):
        a = ins[0]
        axes = _axes(node, ins, 1)
        shape = list(a.shape)
        for ax in sorted(x % (len(shape) + len(axes)) for x in axes):
            shape.insert(ax, 1)
        return self._reshaped(a, tuple(shape), where) if a.tid is not None else \
            _Val(None, tuple(shape), a.form, a.ln, a.origin)

    def op_Squeeze(self, node, ins, where):
        a = ins[0]
        axes = _axes(node, ins, 1)
        r = len(a.shape)
        axes = [i for i, d in enumerate(a.shape) if d == 1] if axes is None else \
            [x % r for x in axes]
        if any(a.shape[i] != 1 for i in axes):
            raise ConversionError(f"{where}: squeezing axes {axes} of {_fmt(a.shape)}: they are "
                                  f"not of size 1")
        shape = tuple(d for i, d in enumerate(a.shape) if i not in axes)
        return self._reshaped(a, shape, where)

    def op_Flatten(self, node, ins, where):
        a = ins[0]
        ax = _attr(node, "axis", 1) % (len(a.shape) + 1) if a.shape else 0

        def prod(ds):
            if "B" in ds:
                return "B" if all(d == 1 or d == "B" for d in ds) and ds.count("B") == 1 \
                    else None
            return int(np.prod(ds, dtype=np.int64))
        shape = (prod(a.shape[:ax]), prod(a.shape[ax:]))
        if None in shape:
            raise ConversionError(f"{where}: Flatten of {_fmt(a.shape)} at axis {ax} mixes the "
                                  f"batch with features")
        return self._reshaped(a, shape, where)

    def op_Reshape(self, node, ins, where):
        a, s = ins
        if not isinstance(s, _Const):
            raise ConversionError(f"{where}: Reshape target shape must be computable at "
                                  f"conversion time")
        raw = [int(v) for v in np.asarray(s.arr).reshape(-1)]
        target = []
        for i, v in enumerate(raw):
            if v == 0 and not _attr(node, "allowzero", 0):
                if i >= len(a.shape):
                    raise ConversionError(f"{where}: Reshape copies axis {i} of {_fmt(a.shape)}")
                target.append(a.shape[i])
            elif v == BSYM or (i == 0 and v == self.fixed_batch and a.shape[:1] == ("B",)):
                target.append("B")
            else:
                target.append(v)
        if target.count(-1) > 1:
            raise ConversionError(f"{where}: Reshape with more than one -1")
        if -1 in target:
            known = _width(tuple(d for d in target if d != -1))
            w = _width(a.shape)
            batch_left = "B" in a.shape and "B" not in target
            if batch_left and w != known:
                raise ConversionError(f"{where}: reshaping {_fmt(a.shape)} to {raw} merges the "
                                      f"batch axis with features")
            if w % known:
                raise ConversionError(f"{where}: cannot reshape {_fmt(a.shape)} to {raw}")
            target[target.index(-1)] = "B" if batch_left else w // known
        return self._reshaped(a, tuple(target), where)

    def op_Expand(self, node, ins, where):
        a, s = ins
        if not isinstance(s, _Const):
            raise ConversionError(f"{where}: Expand target shape must be computable at "
                                  f"conversion time")
        shape = _check_row_shape(_broadcast(a.shape, _shape_from_vector(s.arr, where), where),
                                 where)
        return self._widen(self.need(a, where), shape, where, node.name)

    def _widen(self, a: _Val, shape: tuple, where, name) -> _Val:
        w, aw = _width(shape), _width(a.shape)
        if w == aw:
            return _Val(a.tid, shape, a.form, a.ln, a.origin)
        if aw != 1:
            raise ConversionError(f"{where}: cannot broadcast width {aw} to {w}")
        tid = self.emit(Node("mul", [a.tid], name=name, constant=np.ones(w)))
        return _Val(tid, shape, a.form)

    def op_Tile(self, node, ins, where):
        a, r = ins
        if not isinstance(r, _Const):
            raise ConversionError(f"{where}: Tile repeats must be computable at conversion time")
        a = self.need(a, where)
        reps = [int(v) for v in np.asarray(r.arr).reshape(-1)]
        if len(reps) != len(a.shape):
            raise ConversionError(f"{where}: Tile repeats {reps} do not match rank of "
                                  f"{_fmt(a.shape)}")
        shape, copies = [], 1
        for i, (d, k) in enumerate(zip(a.shape, reps)):
            if k == 1:
                shape.append(d)
            elif k == BSYM and d == 1:
                shape.append("B")
            elif k < BSYM and d != "B" and i == len(reps) - 1:
                shape.append(d * k)
                copies = k
            else:
                raise ConversionError(f"{where}: Tile {reps} of {_fmt(a.shape)} is not supported "
                                      f"(only repeating over the batch or the feature axis)")
        shape = _check_row_shape(tuple(shape), where)
        if copies == 1:
            return _Val(a.tid, shape, a.form, a.ln, a.origin)
        tid = self.emit(Node("concat", [a.tid] * copies, name=node.name))
        return _Val(tid, shape, _identity_form(tid))

    def op_Shape(self, node, ins, where):
        return _fold(node, [_Const(np.zeros(0), ins[0].shape)], where)

    def op_Slice(self, node, ins, where):
        a = self.need(ins[0], where)
        if any(not isinstance(v, _Const) for v in ins[1:] if v is not None):
            raise ConversionError(f"{where}: Slice bounds must be constants")
        inner = self._inner_slice(a, node, ins, where)
        if inner is not None:
            return inner
        return self._select(a, node, where, lambda idx: _slice(idx, node, ins))

    def _inner_slice(self, a: _Val, node, ins, where):
        """A step-1 Slice of one per-sample axis other than the last (a channel range of
        [B, C, H, W], say): a Slice node on the tensor with its ONNX shape; None otherwise."""
        rank = len(a.shape)
        if rank < 3 or a.shape[0] != "B":
            return None
        probe = np.arange(_width(a.shape)).reshape(tuple(1 if d == "B" else d for d in a.shape))
        out = _slice(probe, node, ins)
        changed = [i for i in range(rank) if out.shape[i] != probe.shape[i]]
        if len(changed) != 1 or changed[0] in (0, rank - 1) or out.size == 0:
            return None
        axis = changed[0]
        first = np.take(probe, [0], axis=axis)
        start = int((out.reshape(-1)[0] - first.reshape(-1)[0]) //
                    int(np.prod(probe.shape[axis + 1:])))
        end = start + out.shape[axis]
        want = np.take(probe, np.arange(start, end), axis=axis)
        if out.shape != want.shape or not np.array_equal(out, want):
            return None
        src = self._shaped(a, where)
        tid = self.emit(Node("slice", [src], name=node.name, axis=axis - 1, start=start, end=end))
        return _Val(tid, a.shape[:axis] + (end - start,) + a.shape[axis + 1:], _identity_form(tid))

    def op_Gather(self, node, ins, where):
        a, i = self.need(ins[0], where), ins[1]
        if not isinstance(i, _Const):
            raise ConversionError(f"{where}: Gather indices must be constants")
        ax = _attr(node, "axis", 0)
        return self._select(a, node, where,
                            lambda idx: np.take(idx, i.arr.astype(np.int64), axis=ax))

    def op_Split(self, node, ins, where):
        """torch's chunk/split: consecutive ranges of the feature axis, each a Slice node."""
        a = self.need(ins[0], where)
        rank = len(a.shape)
        axis = _attr(node, "axis", 0) % max(rank, 1)
        inner = rank >= 3 and a.shape[0] == "B" and 0 < axis < rank - 1
        if rank == 0 or (axis != rank - 1 and not inner) or a.shape[axis] == "B":
            raise ConversionError(f"{where}: Split of {_fmt(a.shape)} on axis {axis}: only a "
                                  f"per-sample axis can be split, not the batch")
        size = int(a.shape[axis])
        parts = _attr(node, "split")
        if parts is None and len(ins) > 1 and ins[1] is not None:
            if not isinstance(ins[1], _Const):
                raise ConversionError(f"{where}: Split sizes must be constants")
            parts = np.asarray(ins[1].arr).reshape(-1).tolist()
        count = len(node.output)
        if parts is None:
            # Equal parts (the last smaller when the size does not divide, as opset 18).
            step = -(-size // count)
            parts = [min(step, size - i * step) for i in range(count)]
        parts = [int(p) for p in parts]
        if len(parts) != count or sum(parts) != size or min(parts) < 1:
            raise ConversionError(f"{where}: Split sizes {parts} do not cover the {size} "
                                  f"features in {count} parts")
        outs, start = [], 0
        src = self._shaped(a, where) if inner else None
        for i, p in enumerate(parts):
            name = f"{node.name or 'split'}[{i}]"
            if inner:
                tid = self.emit(Node("slice", [src], name=name, axis=axis - 1, start=start,
                                     end=start + p))
                outs.append(_Val(tid, a.shape[:axis] + (p,) + a.shape[axis + 1:],
                                 _identity_form(tid)))
            else:
                outs.append(self._slice_columns(a, start, start + p, where, name))
            start += p
        return outs

    def _slice_columns(self, a: _Val, start: int, end: int, where, name) -> _Val:
        """Columns [start, end) of the feature axis: a Slice node (format 1.4), no weights."""
        if start == 0 and end == _width(a.shape):
            return a
        # On the tensor with its ONNX shape (the .sif tensor may hold another, e.g. a matmul's).
        src = self._shaped(a, where) if a.shape[:1] == ("B",) and len(a.shape) <= 4 else a.tid
        tid = self.emit(Node("slice", [src], name=name, axis=-1, start=start, end=end))
        shape = _check_row_shape(a.shape[:-1] + (end - start,), where)
        return _Val(tid, shape, _identity_form(tid))

    def _select(self, a: _Val, node, where, pick) -> _Val:
        """Column selection on the feature axis: a Slice node for a contiguous range of columns
        (chunk, split, x[:, i:j]); any other selection as an fc with a 0/1 weight matrix."""
        if not a.shape or a.shape[-1] == "B":
            raise ConversionError(f"{where}: selection from {_fmt(a.shape)} is supported only on "
                                  f"the feature axis")
        probe_shape = tuple(1 if d == "B" else d for d in a.shape)
        idx = np.arange(_width(a.shape)).reshape(probe_shape)
        out = pick(idx)
        lead_in = probe_shape[:-1]
        if out.ndim == 0 or out.shape[:len(lead_in)] != lead_in or out.ndim > len(probe_shape):
            raise ConversionError(f"{where}: selection changes the batch axis of "
                                  f"{_fmt(a.shape)}; only feature columns can be selected")
        cols = out.reshape(-1)
        shape = a.shape[:-1] + tuple(out.shape[len(lead_in):])
        if cols.size and np.array_equal(cols, np.arange(cols[0], cols[0] + cols.size)):
            v = self._slice_columns(a, int(cols[0]), int(cols[0]) + cols.size, where, node.name)
            return _Val(v.tid, _check_row_shape(shape, where), v.form, v.ln, v.origin)
        w = np.zeros((cols.size, _width(a.shape)))
        w[np.arange(cols.size), cols] = 1.0
        v = self._fc(a, w, None, where, node.name)
        v.shape = _check_row_shape(shape, where)
        return v

    def op_ConstantOfShape(self, node, ins, where):
        raise ConversionError(f"{where}: ConstantOfShape needs a constant shape")


# ------------------------------------------------------------------------------ finishing pass

def finalize(graph: Graph) -> Graph:
    """Fuses fc+bias and layernorm+γ/β, drops nodes the output does not need, renumbers ids."""
    nodes = graph.nodes
    alias: Dict[int, int] = {}

    def res(i):
        while i in alias:
            i = alias[i]
        return i

    for n in nodes:
        n.inputs = [res(i) for i in n.inputs]
    users: Dict[int, int] = {}
    for n in nodes:
        for i in n.inputs:
            users[i] = users.get(i, 0) + 1
    out = graph.output
    for k, n in enumerate(nodes):
        n.inputs = [res(i) for i in n.inputs]
        own = k + 2
        if n.constant is None or len(n.inputs) != 1 or n.inputs[0] < 2:
            continue
        src = n.inputs[0]
        p = nodes[src - 2]
        if users.get(src, 0) != 1 or res(out) == src:
            continue
        width = p.weight.shape[0] if p.op == "fc" else None
        if n.op == "add" and p.op == "fc" and p.bias is None and n.constant.size == width:
            p.bias = n.constant.copy()
        elif n.op == "mul" and p.op == "layernorm" and p.gamma is None and p.beta is None \
                and n.constant.size > 1:
            p.gamma = n.constant.copy()
        elif n.op == "add" and p.op == "layernorm" and p.beta is None and n.constant.size > 1:
            p.beta = n.constant.copy()
        else:
            continue
        alias[own] = src
        users[src] = users.pop(own, 0)
    out = res(out)
    live = set()
    stack = [out]
    while stack:
        i = stack.pop()
        if i < 2 or i in live:
            continue
        live.add(i)
        stack.extend(res(j) for j in nodes[i - 2].inputs)
    renum = {0: 0, 1: 1}
    kept: List[Node] = []
    for k, n in enumerate(nodes):
        if k + 2 not in live:
            continue
        n.inputs = [renum[res(i)] for i in n.inputs]
        kept.append(n)
        renum[k + 2] = len(kept) + 1
    for k, n in enumerate(kept):
        for f in ("weight", "bias", "constant", "gamma", "beta"):
            arr = getattr(n, f)
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ConversionError(f"node {k} ({n.op}, {n.name}): {f} holds NaN or Inf "
                                      f"values")
        if not (math.isfinite(n.alpha) and math.isfinite(n.epsilon) and n.epsilon > 0):
            raise ConversionError(f"node {k} ({n.op}, {n.name}): alpha/epsilon must be finite "
                                  f"(epsilon > 0)")
    g = Graph(dim=graph.dim, nodes=kept, output=renum[out], x_shape=graph.x_shape)
    g.widths()
    return g


# ------------------------------------------------------------------------------ entry points

def _load(model_or_path):
    import onnx
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model_or_path))
        except Exception as e:   # protobuf DecodeError and friends
            raise ConversionError(f"the data is not an ONNX model: {e}") from None
    path = os.fspath(model_or_path)
    try:
        return onnx.load(path)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except Exception as e:
        raise ConversionError(f"{path}: not a readable ONNX model ({e})") from None


def _diagnose(g) -> Optional[str]:
    """Names undefined inputs and cycles (clearer than the checker's sortedness message)."""
    defined = {i.name for i in g.initializer} | {i.name for i in g.input}
    produced = {}
    for n in g.node:
        for o in n.output:
            produced[o] = n
    for n in g.node:
        for i in n.input:
            if i and i not in defined and i not in produced:
                return (f"node '{n.name}' ({n.op_type}) reads {i!r}, which is not a graph input, "
                        f"an initializer or any node's output (missing initializer?)")
    # Kahn's algorithm: nodes never freed depend (directly or not) on a cycle.
    waiting = {k: sum(1 for i in n.input if i in produced) for k, n in enumerate(g.node)}
    consumers: Dict[str, List[int]] = {}
    for k, n in enumerate(g.node):
        for i in n.input:
            if i in produced:
                consumers.setdefault(i, []).append(k)
    ready = [k for k, c in waiting.items() if c == 0]
    while ready:
        k = ready.pop()
        for o in g.node[k].output:
            for c in consumers.get(o, ()):
                waiting[c] -= 1
                if waiting[c] == 0:
                    ready.append(c)
    stuck = [g.node[k].name or g.node[k].op_type for k, c in waiting.items() if c > 0]
    if stuck:
        return f"the graph has a cycle through nodes {stuck[:10]}"
    return None


def check_onnx(model) -> None:
    """Runs onnx.checker and our structural diagnosis; raises ConversionError on failure."""
    import onnx
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        diag = _diagnose(model.graph)
        raise ConversionError((diag + "; " if diag else "") + f"onnx.checker: {msg}") from None
    diag = _diagnose(model.graph)
    if diag:
        raise ConversionError(diag)


def from_onnx(model_or_path, x_input: Optional[str] = None, time_input: Optional[str] = None,
              time_column: Optional[str] = None, dim: Optional[int] = None,
              label_input: Optional[str] = None, cond_input: Optional[str] = None,
              num_classes: Optional[int] = None, null_label: Optional[int] = None,
              null_cond=None) -> Graph:
    """Converts an ONNX velocity net (a path, bytes or ModelProto) into an ir.Graph.

    Inputs are x [B, d] and t ([B, 1], [B], [1] or a scalar), found by the names x/t or given by
    x_input/time_input; or one input [B, d+1] holding t in its first or last column
    (time_column "first"/"last"). `dim` is needed only when the graph leaves x's width open.
    A class label (an int64 input named y/label/labels/class_labels, or `label_input`) read by
    nn.Embedding's Gather becomes LabelInput + Embedding (`num_classes` checks the table,
    `null_label` is the unconditional label); a condition vector (c/cond or `cond_input`) becomes
    a CondInput with the null vector `null_cond` (onnx_conditioning).
    """
    model = _load(model_or_path)
    check_onnx(model)
    settings = onnx_conditioning.Settings(label_input, cond_input, num_classes, null_label,
                                          null_cond)
    return _Importer(model, x_input, time_input, time_column, dim, settings).run()


def onnx_input_dim(model_or_path, x_input: Optional[str] = None,
                   time_column: Optional[str] = None) -> Optional[int]:
    """The state dimension d the graph declares (None when its x width is symbolic)."""
    model = _load(model_or_path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    pick = [vi for vi in inputs if vi.name == (x_input or "x")] or inputs[:1]
    if not pick:
        return None
    dims = pick[0].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        return None
    return int(dims[1].dim_value) - (1 if time_column else 0)


onnx_image.install(_Importer)
onnx_math.install(_Importer)
onnx_attention.install(_Importer)
onnx_broadcast.install(_Importer)
