# SPDX-License-Identifier: Apache-2.0
"""The converter's in-memory model: a velocity graph in the .sif op set plus the flow around it.

Every importer (ONNX, PyTorch, npz+JSON) produces a `FlowModel`; `sif_io` writes and reads it;
`reference` evaluates it in float64. Tensor ids follow the file format (docs/format.md): 0 is x
[B, dim] in flow coordinates, 1 is t [B, 1], node k produces tensor k + 2, and a node reads only
smaller ids.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

# In the order of the schema's OpType enum (value = index); "exp" needs format 1.1, the ops
# from "conv2d" on format 1.4.
OPS = ("fc", "unary", "concat", "add", "mul", "layernorm", "exp",
       "conv2d", "conv_transpose2d", "pool2d", "resize", "groupnorm", "reshape", "transpose",
       "slice", "softmax", "matmul", "reduce", "div", "pow", "clip", "label_input", "cond_input",
       "embedding")
# Every op's OpType number (one name per op).
OP_CODES = {name: i for i, name in enumerate(OPS)}
OP_NAMES = {code: name for name, code in OP_CODES.items()}
# Layout ops (format 1.4): reshape (Node.shape), transpose (Node.perm), slice (axis/start/end).
LAYOUT_OPS = {name: OP_CODES[name] for name in ("reshape", "transpose", "slice")}

# In the order of the schema's UnaryKind enum (value = index); from "log" on format 1.4.
UNARY_KINDS = ("identity", "relu", "leaky_relu", "elu", "selu", "tanh", "sigmoid", "silu",
               "gelu_erf", "gelu_tanh", "softplus", "sin", "cos",
               "log", "sqrt", "reciprocal", "abs", "hard_swish", "mish")

# Reduce kinds (ReduceKind, value = index).
REDUCE_KINDS = ("mean", "sum", "l2")

# Conditioning ops (format 1.4; conditioning.py) and their OpType values.
COND_OPS = {name: OP_CODES[name] for name in ("label_input", "cond_input", "embedding")}


def op_code(op: str) -> int:
    """The OpType value of an op name."""
    return OP_CODES[op]


def op_name(code: int) -> Optional[str]:
    """The op name of an OpType value, or None for one this converter does not know."""
    return OP_NAMES.get(code)


INTERPOLANTS = ("linear", "trig", "learned_fourier")
BASES = ("normal", "uniform")


class ConversionError(Exception):
    """A model that cannot be converted; the message names the cause (node, op, what is wrong)."""


def _f64(a) -> Optional[np.ndarray]:
    return None if a is None else np.asarray(a, dtype=np.float64)


@dataclass
class Node:
    op: str                                   # one of OPS
    inputs: List[int]                         # tensor ids
    name: str = ""
    unary: str = "identity"                   # one of UNARY_KINDS (op == "unary")
    alpha: float = 0.01                       # leaky_relu slope, elu alpha
    weight: Optional[np.ndarray] = None       # fc [out, in]
    bias: Optional[np.ndarray] = None         # fc [out]
    constant: Optional[np.ndarray] = None     # add/mul [n], read as [1, n]
    gamma: Optional[np.ndarray] = None        # layernorm [w]
    beta: Optional[np.ndarray] = None         # layernorm [w]
    epsilon: float = 1e-5                     # layernorm, groupnorm
    # Format 1.4: reshape's (or any node's stored) per-sample output shape, resize's [C, OH, OW];
    # transpose's perm (output axis i is input axis perm[i]); slice's [start, end) on axis.
    shape: Optional[List[int]] = None
    perm: Optional[List[int]] = None
    axis: int = -1                            # slice, reduce, softmax
    start: int = 0
    end: int = 0
    # Image ops (format 1.4, image_ops.py): geometry as in the schema's Node fields.
    kernel: Optional[List[int]] = None        # conv2d, conv_transpose2d, pool2d: [kh, kw]
    strides: Optional[List[int]] = None       # [sh, sw]; None: [1, 1]
    pads: Optional[List[int]] = None          # [top, left, bottom, right]; None: zeros
    dilations: Optional[List[int]] = None     # [dh, dw]; None: [1, 1]
    output_padding: Optional[List[int]] = None  # conv_transpose2d
    groups: int = 1                           # conv2d, conv_transpose2d, groupnorm
    pool: str = "average"                     # pool2d: "average" or "max"
    count_include_pad: bool = False           # pool2d average
    resize: str = "nearest"                   # resize: "nearest" or "bilinear"
    # Format 1.4 elementwise, reduction and softmax ops (docs/format.md).
    exponent: float = 1.0                     # pow
    low: float = -math.inf                    # clip
    high: float = math.inf
    reduce: str = "mean"                      # reduce: one of REDUCE_KINDS
    # label_input / cond_input / embedding (format 1.4): classes, the null label (-1: none), the
    # condition's per-sample shape; the embedding table is `weight`, the null vector `constant`.
    classes: int = 0
    null_label: int = -1
    cond_shape: Optional[List[int]] = None
    # matmul (format 1.4): b read as [G, N, K] when transpose_b; the product times scale.
    transpose_b: bool = False
    scale: float = 1.0

    def __post_init__(self):
        for f in ("weight", "bias", "constant", "gamma", "beta"):
            setattr(self, f, _f64(getattr(self, f)))


@dataclass
class Graph:
    dim: int
    nodes: List[Node] = field(default_factory=list)
    output: int = -1                          # tensor id of v (width dim)
    x_shape: Optional[List[int]] = None       # per-sample shape of x and v ([C, H, W]); None: [dim]

    def add(self, node: Node) -> int:
        """Appends a node and returns the id of the tensor it produces."""
        self.nodes.append(node)
        return len(self.nodes) + 1

    def shapes(self) -> List[List[int]]:
        """Per-sample shape of every tensor id, as the runtime's loader gives them: x_shape, [1]
        for t; an op that defines its output's (layout and image ops, fc: flat) gives it, any
        other keeps its first input as wide as the output, else is flat. Checks the widths."""
        return self._widths(check_output=True)[1]

    def widths(self) -> List[int]:
        """Width of every tensor id; raises ConversionError on a shape the format rejects."""
        return self._widths(check_output=True)[0]

    def _widths_so_far(self) -> List[int]:
        """The widths of a graph still being built (no output yet)."""
        return self._widths(check_output=False)[0]

    def _shapes_so_far(self) -> List[List[int]]:
        """The per-sample shapes of a graph still being built (no output yet)."""
        return self._widths(check_output=False)[1]

    def _widths(self, check_output: bool):
        from . import image_ops
        w = [self.dim, 1]
        if self.x_shape is not None and (not 1 <= len(self.x_shape) <= 3 or
                                         int(np.prod(self.x_shape)) != self.dim):
            raise ConversionError(f"x_shape {list(self.x_shape)} does not hold dim {self.dim}")
        shapes = [list(self.x_shape) if self.x_shape else [self.dim], [1]]
        for k, n in enumerate(self.nodes):
            own = k + 2
            where = f"node {k} ({n.op}{', ' + n.name if n.name else ''})"
            for i in n.inputs:
                if not 0 <= i < own:
                    raise ConversionError(f"{where}: input tensor {i} is not defined before it")
            ins = [w[i] for i in n.inputs]
            if n.op in COND_OPS:
                from . import conditioning
                w.append(conditioning.width(n, ins, self.nodes, where))
            elif n.op == "fc":
                if len(ins) != 1 or n.weight is None or n.weight.ndim != 2:
                    raise ConversionError(f"{where}: needs one input and a 2-D weight")
                if n.weight.shape[1] != ins[0]:
                    raise ConversionError(f"{where}: weight is {list(n.weight.shape)} but the "
                                          f"input has width {ins[0]}")
                if n.bias is not None and n.bias.size != n.weight.shape[0]:
                    raise ConversionError(f"{where}: bias has {n.bias.size} values, expected "
                                          f"{n.weight.shape[0]}")
                w.append(int(n.weight.shape[0]))
            elif n.op in ("unary", "layernorm", "exp"):
                if len(ins) != 1:
                    raise ConversionError(f"{where}: needs exactly one input")
                if n.op == "exp":
                    for f in ("weight", "bias", "constant", "gamma", "beta"):
                        if getattr(n, f) is not None:
                            raise ConversionError(f"{where}: has a {f}, which exp does not read")
                if n.op == "unary" and n.unary not in UNARY_KINDS:
                    raise ConversionError(f"{where}: unknown unary kind {n.unary!r}")
                for p in (n.gamma, n.beta) if n.op == "layernorm" else ():
                    if p is not None and p.size != ins[0]:
                        raise ConversionError(f"{where}: gamma/beta have {p.size} values, "
                                              f"expected {ins[0]}")
                w.append(ins[0])
            elif n.op == "concat":
                if not 1 <= len(ins) <= 64:
                    raise ConversionError(f"{where}: needs 1 to 64 inputs")
                w.append(sum(ins))
            elif n.op in LAYOUT_OPS:
                if len(ins) != 1:
                    raise ConversionError(f"{where}: needs exactly one input")
                out = _layout_shape(n, shapes[n.inputs[0]], where)
                w.append(int(np.prod(out)))
            elif n.op == "matmul":
                if len(ins) != 2:
                    raise ConversionError(f"{where}: needs exactly two inputs")
                out = _matmul_shape(n, shapes[n.inputs[0]], shapes[n.inputs[1]], where)
                w.append(int(np.prod(out)))
                shapes.append(out)
            elif n.op in ("pow", "clip", "softmax", "reduce"):
                if len(ins) != 1:
                    raise ConversionError(f"{where}: needs exactly one input")
                last = n.op == "softmax" and n.axis == -1   # along the last per-sample axis
                if n.op in ("softmax", "reduce") and not last and (
                        n.axis not in (-1, 0) or len(shapes[n.inputs[0]]) != 1):
                    raise ConversionError(f"{where}: axis {n.axis} of an input of shape "
                                          f"{shapes[n.inputs[0]]}; the converter reduces and "
                                          f"normalises flat tensors only")
                if n.op == "reduce" and n.reduce not in REDUCE_KINDS:
                    raise ConversionError(f"{where}: unknown reduce kind {n.reduce!r}")
                if n.op == "clip" and not n.low <= n.high:
                    raise ConversionError(f"{where}: low {n.low} is above high {n.high}")
                w.append(1 if n.op == "reduce" else ins[0])
            elif n.op in ("add", "mul", "div"):
                if n.constant is not None:
                    if len(ins) != 1:
                        raise ConversionError(f"{where}: a constant operand needs one input")
                    other = n.constant.size
                else:
                    if len(ins) != 2:
                        raise ConversionError(f"{where}: needs two inputs or a constant")
                    other = ins[1]
                a, b = ins[0], other
                if n.constant is not None and b == 1 and a > 1:
                    raise ConversionError(f"{where}: a one-value constant cannot broadcast "
                                          f"against width {a}; repeat it {a} times")
                if not (a == b or a == 1 or b == 1):
                    raise ConversionError(f"{where}: widths {a} and {b} cannot broadcast")
                w.append(max(a, b))
            elif n.op in image_ops.IMAGE_OPS:
                if len(ins) != 1:
                    raise ConversionError(f"{where}: needs exactly one input")
                out_shape = image_ops.output_shape(n, tuple(shapes[n.inputs[0]]), where)
                w.append(int(np.prod(out_shape)))
                shapes.append([int(d) for d in out_shape])
            else:
                raise ConversionError(f"{where}: unknown op {n.op!r}")
            if len(shapes) < len(w):
                shapes = self._shapes_upto(shapes, w, n)
        if not check_output:
            return w, shapes
        if not 2 <= self.output < len(w):
            raise ConversionError(f"graph output {self.output} is not a node's tensor")
        if w[self.output] != self.dim:
            raise ConversionError(f"graph output has width {w[self.output]}, expected dim "
                                  f"{self.dim}")
        return w, shapes

    def _shapes_upto(self, shapes, w, n) -> List[List[int]]:
        width = w[-1]
        if n.op == "fc":
            shapes.append([width])  # a dense layer's output is flat
        elif n.op == "cond_input":
            shapes.append(list(n.cond_shape) if n.cond_shape else [width])
        elif n.op in LAYOUT_OPS:
            shapes.append(_layout_shape(n, shapes[n.inputs[0]], n.op))
        else:
            shapes.append(next((list(shapes[i]) for i in n.inputs if w[i] == width), [width]))
        return shapes


def _matmul_shape(n: "Node", a: List[int], b: List[int], where: str) -> List[int]:
    """The per-sample output shape of a matmul: [G, M, K] x [G, K, N] (b [G, N, K] with
    transpose_b) -> [G, M, N]; rank-2 operands are one group. The runtime's rules."""
    if len(a) < 2 or len(a) != len(b):
        raise ConversionError(f"{where}: inputs {list(a)} and {list(b)} must both be [M, K] x "
                              f"[K, N] or [G, M, K] x [G, K, N]")
    if not math.isfinite(float(np.float32(n.scale))):
        raise ConversionError(f"{where}: scale {n.scale} is not finite")
    o = len(a) - 2
    bk, bn = (b[o + 1], b[o]) if n.transpose_b else (b[o], b[o + 1])
    if a[:o] != b[:o] or a[o + 1] != bk:
        raise ConversionError(f"{where}: inputs {list(a)} and {list(b)}"
                              f"{' (b transposed)' if n.transpose_b else ''} do not multiply")
    return [int(e) for e in a[:o]] + [int(a[o]), int(bn)]


def _layout_shape(n: "Node", in_shape: List[int], where: str) -> List[int]:
    """The output shape of a layout node on an input of per-sample shape in_shape."""
    size = int(np.prod(in_shape))
    if n.op == "reshape":
        if not n.shape or len(n.shape) > 3 or any(int(e) < 1 for e in n.shape) \
                or int(np.prod(n.shape)) != size:
            raise ConversionError(f"{where}: reshape to {n.shape} does not hold the input's "
                                  f"{size} values per sample (rank 1 to 3)")
        return [int(e) for e in n.shape]
    if n.op == "transpose":
        if n.perm is None or sorted(int(p) for p in n.perm) != list(range(len(in_shape))):
            raise ConversionError(f"{where}: perm {n.perm} does not permute the axes of "
                                  f"{in_shape}")
        return [int(in_shape[int(p)]) for p in n.perm]
    axis = n.axis + len(in_shape) if n.axis < 0 else n.axis
    if not 0 <= axis < len(in_shape) or not 0 <= n.start < n.end <= in_shape[axis]:
        raise ConversionError(f"{where}: slice [{n.start}, {n.end}) of axis {n.axis} is empty or "
                              f"outside {in_shape}")
    out = list(in_shape)
    out[axis] = n.end - n.start
    return out


@dataclass
class Interpolant:
    kind: str = "trig"                        # one of INTERPOLANTS
    alpha: List[float] = field(default_factory=list)   # learned_fourier only
    beta: List[float] = field(default_factory=list)


@dataclass
class Base:
    kind: str = "normal"                      # one of BASES
    mean: Optional[np.ndarray] = None         # normal; None = zeros
    std: Optional[np.ndarray] = None          # normal; None = ones
    low: Optional[np.ndarray] = None          # uniform
    high: Optional[np.ndarray] = None         # uniform

    def __post_init__(self):
        for f in ("mean", "std", "low", "high"):
            setattr(self, f, _f64(getattr(self, f)))


@dataclass
class Normalization:
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self):
        self.mean, self.std = _f64(self.mean), _f64(self.std)


@dataclass
class TestVectors:
    t: np.ndarray                             # [count]
    y: np.ndarray                             # [count, dim] flow coordinates
    v: np.ndarray                             # [count, dim]
    velocity_tolerance: float
    trajectory_steps: int = 0
    trajectory_start: Optional[np.ndarray] = None   # [n, dim] at time_start, flow coordinates
    trajectory_end: Optional[np.ndarray] = None     # [n, dim] at time_end (classic RK4)
    trajectory_tolerance: float = 0.0
    # Format 1.4, for conditional models: the points' labels [count] and conditions [count, w],
    # the guidance weight their v was computed with, and the trajectories' labels / conditions.
    labels: Optional[np.ndarray] = None
    cond: Optional[np.ndarray] = None
    guidance: float = 1.0
    trajectory_labels: Optional[np.ndarray] = None
    trajectory_cond: Optional[np.ndarray] = None


@dataclass
class FlowModel:
    graph: Graph
    name: str = ""
    interpolant: Interpolant = field(default_factory=Interpolant)
    base: Base = field(default_factory=Base)
    normalization: Optional[Normalization] = None
    time_start: float = 0.0
    time_end: float = 1.0
    metadata: Dict[str, str] = field(default_factory=dict)
    test_vectors: Optional[TestVectors] = None
    # How the reference evaluates a conditional model (conditioning.with_conditioning); not
    # written to the file.
    conditioning: Optional[object] = None

    @property
    def dim(self) -> int:
        return self.graph.dim
