# SPDX-License-Identifier: Apache-2.0
"""The converter's in-memory model: a velocity graph in the .sif op set plus the flow around it.

Every importer (ONNX, PyTorch, npz+JSON) produces a `FlowModel`; `sif_io` writes and reads it;
`reference` evaluates it in float64. Tensor ids follow the file format (docs/format.md): 0 is x
[B, dim] in flow coordinates, 1 is t [B, 1], node k produces tensor k + 2, and a node reads only
smaller ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

# In the order of the schema's OpType enum (value = index); "exp" needs format 1.1.
OPS = ("fc", "unary", "concat", "add", "mul", "layernorm", "exp")

# In the order of the schema's UnaryKind enum (value = index).
UNARY_KINDS = ("identity", "relu", "leaky_relu", "elu", "selu", "tanh", "sigmoid", "silu",
               "gelu_erf", "gelu_tanh", "softplus", "sin", "cos")

# Conditioning ops (format 1.4; conditioning.py) and their OpType values.
COND_OPS = {"label_input": 21, "cond_input": 22, "embedding": 23}


def op_code(op: str) -> int:
    """The OpType value of an op name."""
    return COND_OPS[op] if op in COND_OPS else OPS.index(op)


def op_name(code: int) -> Optional[str]:
    """The op name of an OpType value, or None for one this converter does not know."""
    for name, value in COND_OPS.items():
        if value == code:
            return name
    return OPS[code] if 0 <= code < len(OPS) else None


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
    epsilon: float = 1e-5                     # layernorm
    # label_input / cond_input / embedding (format 1.4): classes, the null label (-1: none), the
    # condition's per-sample shape; the embedding table is `weight`, the null vector `constant`.
    classes: int = 0
    null_label: int = -1
    cond_shape: Optional[List[int]] = None

    def __post_init__(self):
        for f in ("weight", "bias", "constant", "gamma", "beta"):
            setattr(self, f, _f64(getattr(self, f)))


@dataclass
class Graph:
    dim: int
    nodes: List[Node] = field(default_factory=list)
    output: int = -1                          # tensor id of v (width dim)

    def add(self, node: Node) -> int:
        """Appends a node and returns the id of the tensor it produces."""
        self.nodes.append(node)
        return len(self.nodes) + 1

    def widths(self) -> List[int]:
        """Width of every tensor id; raises ConversionError on a shape the format rejects."""
        w = [self.dim, 1]
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
                continue
            if n.op == "fc":
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
            elif n.op in ("add", "mul"):
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
            else:
                raise ConversionError(f"{where}: unknown op {n.op!r}")
        if not 2 <= self.output < len(w):
            raise ConversionError(f"graph output {self.output} is not a node's tensor")
        if w[self.output] != self.dim:
            raise ConversionError(f"graph output has width {w[self.output]}, expected dim "
                                  f"{self.dim}")
        return w


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
