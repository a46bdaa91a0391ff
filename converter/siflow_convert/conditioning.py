# SPDX-License-Identifier: Apache-2.0
"""Class labels, condition vectors and classifier-free guidance in the converter (format 1.4).

The ops LabelInput (21), CondInput (22) and Embedding (23) of docs/format.md: their widths, their
float64 reference forward (no tangent: none depends on x), and running a model with per-row
labels / conditions under a guidance weight w, v_w = v(null) + w (v(y) - v(null)), as the runtime
does (docs/math.md, "Conditioning and classifier-free guidance"). `with_conditioning` returns a
copy of a model that `reference` evaluates with those labels, so decode / encode / log_prob /
sample of the reference run the conditioned (or guided) flow.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import ir

# Op names and their OpType values.
OPS = {"label_input": 21, "cond_input": 22, "embedding": 23}
MAX_CLASSES = 1 << 24

# ONNX input names read as a class label / a condition vector when not named explicitly.
LABEL_NAMES = ("y", "label", "labels", "class_labels")
COND_NAMES = ("c", "cond")


def width(node: ir.Node, ins: list, nodes: list, where: str) -> int:
    """The output width of a conditioning node; ConversionError on a node the runtime refuses."""
    if node.op == "label_input":
        if ins:
            raise ir.ConversionError(f"{where}: a label input has no inputs")
        if not 1 <= int(node.classes) <= MAX_CLASSES:
            raise ir.ConversionError(f"{where}: classes {node.classes} is outside [1, 2^24]")
        if not -1 <= int(node.null_label) < int(node.classes):
            raise ir.ConversionError(f"{where}: null label {node.null_label} is neither -1 nor a "
                                     f"label in [0, {node.classes})")
        return 1
    if node.op == "cond_input":
        if ins:
            raise ir.ConversionError(f"{where}: a condition input has no inputs")
        shape = list(node.cond_shape or [])
        if not 1 <= len(shape) <= 3 or min(shape) < 1:
            raise ir.ConversionError(f"{where}: needs the condition's shape (rank 1 to 3)")
        w = int(np.prod(shape))
        if node.constant is not None and node.constant.size != w:
            raise ir.ConversionError(f"{where}: null vector has {node.constant.size} values, "
                                     f"expected {w}")
        return w
    # embedding
    if len(ins) != 1 or node.inputs[0] < 2 or nodes[node.inputs[0] - 2].op != "label_input":
        raise ir.ConversionError(f"{where}: an embedding reads exactly one label input")
    label = nodes[node.inputs[0] - 2]
    if node.weight is None or node.weight.ndim != 2:
        raise ir.ConversionError(f"{where}: needs a 2-D table [classes, E]")
    if node.weight.shape[0] != label.classes or int(node.classes) != label.classes:
        raise ir.ConversionError(f"{where}: table of {node.weight.shape[0]} rows and classes "
                                 f"{node.classes} for a label input of {label.classes} classes")
    return int(node.weight.shape[1])


@dataclass
class Conditioning:
    """Per-row labels [B] (or one label for all rows), conditions [B, width], guidance weight."""
    labels: Optional[np.ndarray] = None
    cond: Optional[np.ndarray] = None
    guidance: float = 1.0


def label_node(graph: ir.Graph) -> Optional[ir.Node]:
    return next((n for n in graph.nodes if n.op == "label_input"), None)


def cond_node(graph: ir.Graph) -> Optional[ir.Node]:
    return next((n for n in graph.nodes if n.op == "cond_input"), None)


def with_conditioning(model: ir.FlowModel, labels=None, cond=None,
                      guidance: float = 1.0) -> ir.FlowModel:
    """A shallow copy of `model` that the reference evaluates with these labels / conditions
    under guidance weight w (w = 0: the null label / vector; w = 1: the given ones)."""
    out = copy.copy(model)
    c = Conditioning(None if labels is None else np.asarray(labels, dtype=np.int64),
                     None if cond is None else np.asarray(cond, dtype=np.float64),
                     float(guidance))
    ln, cn = label_node(model.graph), cond_node(model.graph)
    if c.guidance != 1.0:
        if ln is None and cn is None:
            raise ir.ConversionError("guidance needs a model with a label or condition input")
        if ln is not None and ln.null_label < 0:
            raise ir.ConversionError("guidance needs the model's null label (--null-label)")
        if cn is not None and cn.constant is None:
            raise ir.ConversionError("guidance needs the model's null condition vector")
    out.conditioning = c
    return out


def _rows(values, rows: int, what: str) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim == 0 or v.shape[0] == 1:
        return np.repeat(v.reshape(1, *v.shape[1:]) if v.ndim else v.reshape(1), rows, axis=0)
    if v.shape[0] != rows:
        raise ValueError(f"{what} has {v.shape[0]} rows for {rows} rows")
    return v


def forward(node: ir.Node, vals: list, rows: int, ctx: "_Run", dtype):
    """(value, tangent) of a conditioning node for the rows of one evaluation."""
    if node.op == "label_input":
        return ctx.labels.reshape(rows, 1).astype(dtype), None
    if node.op == "cond_input":
        return ctx.cond.astype(dtype), None
    idx = vals[node.inputs[0]].reshape(-1).astype(np.int64)
    return node.weight.astype(dtype)[idx], None


@dataclass
class _Run:
    labels: Optional[np.ndarray]
    cond: Optional[np.ndarray]


def runs(model: ir.FlowModel, rows: int):
    """The evaluations a conditioned model needs for `rows` rows: [(weight, _Run)], whose
    weighted sum of velocities (and Jacobians) is v_w. None for an unconditioned model."""
    c = getattr(model, "conditioning", None)
    ln, cn = label_node(model.graph), cond_node(model.graph)
    if ln is None and cn is None:
        return None
    if c is None:
        raise ir.ConversionError("the model takes a class label or condition: evaluate "
                                 "conditioning.with_conditioning(model, labels=..., cond=...)")

    def run(null: bool) -> _Run:
        labels = cond = None
        if ln is not None:
            if null:
                labels = np.full(rows, ln.null_label, dtype=np.int64)
            else:
                if c.labels is None:
                    raise ir.ConversionError("the model takes a class label; none was given")
                labels = _rows(c.labels, rows, "labels").astype(np.int64)
                if labels.min() < 0 or labels.max() >= ln.classes:
                    raise ir.ConversionError(f"labels outside [0, {ln.classes})")
        if cn is not None:
            w = int(np.prod(cn.cond_shape))
            if null:
                cond = np.repeat(cn.constant.reshape(1, w), rows, axis=0)
            else:
                if c.cond is None:
                    raise ir.ConversionError("the model takes a condition vector; none given")
                cond = _rows(c.cond, rows, "cond").reshape(rows, w)
        return _Run(labels, cond)

    if c.guidance == 1.0:
        return [(1.0, run(False))]
    if c.guidance == 0.0:
        return [(1.0, run(True))]
    return [(c.guidance, run(False)), (1.0 - c.guidance, run(True))]


def test_inputs(model: ir.FlowModel, rng, count: int):
    """(labels [count], cond [count, w]) drawn for test vectors of a conditional model (labels
    uniform over the classes, conditions standard normal, rounded to float32), or None."""
    ln, cn = label_node(model.graph), cond_node(model.graph)
    if ln is None and cn is None:
        return None
    labels = None if ln is None else rng.integers(0, ln.classes, count)
    cond = None
    if cn is not None:
        w = int(np.prod(cn.cond_shape))
        cond = rng.normal(size=(count, w)).astype(np.float32).astype(np.float64)
    return labels, cond
