# SPDX-License-Identifier: Apache-2.0
"""ONNX import of class labels and condition vectors (format 1.4; docs/format.md).

A graph input named y / label / labels / class_labels (or given by `label_input`) is the class
label; one named c / cond (or `cond_input`) is the condition vector. `nn.Embedding` exports as
Gather(table, y) on the int64 label: it becomes a LabelInput node (classes from the table, or
`num_classes`) and an Embedding node. Any other use of the label is refused by name. Hooks for
onnx_import._Importer.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .conditioning import COND_NAMES, LABEL_NAMES
from .ir import ConversionError, Node


class LabelRef:
    """The label input's value: readable only as Gather indices (an embedding)."""

    def __init__(self, name: str):
        self.name = name


class Settings:
    """What the caller said about the conditioning inputs."""

    def __init__(self, label_input=None, cond_input=None, num_classes=None, null_label=None,
                 null_cond=None):
        self.label_input = label_input
        self.cond_input = cond_input
        self.num_classes = num_classes
        self.null_label = -1 if null_label is None else int(null_label)
        self.null_cond = None if null_cond is None else np.asarray(null_cond, dtype=np.float64)
        self.label_tid: Optional[int] = None     # the LabelInput node's tensor, once emitted
        self.classes: Optional[int] = None


def split_inputs(names: List[str], s: Settings) -> Tuple[List[str], Optional[str], Optional[str]]:
    """(the other inputs, the label input's name, the condition input's name)."""
    for given, what in ((s.label_input, "label"), (s.cond_input, "condition")):
        if given is not None and given not in names:
            raise ConversionError(f"unknown {what} input {given!r}; the graph's inputs are "
                                  f"{names}")
    label = s.label_input or next((n for n in names if n in LABEL_NAMES), None)
    cond = s.cond_input or next((n for n in names if n in COND_NAMES and n != label), None)
    if label is None and (s.num_classes is not None or s.null_label >= 0):
        raise ConversionError(f"--num-classes/--null-label given, but no input is a class label "
                              f"(inputs {names}; name it with --label-input)")
    if cond is None and s.null_cond is not None:
        raise ConversionError(f"a null condition vector given, but no input is a condition "
                              f"(inputs {names}; name it with --cond-input)")
    return [n for n in names if n not in (label, cond)], label, cond


def cond_node(vi, s: Settings) -> Tuple[Node, int]:
    """The CondInput node of a [B, w] float input, and w."""
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if tt.elem_type not in (1, 10, 11) or len(dims) != 2 or not dims[1]:
        raise ConversionError(f"condition input {vi.name!r} must be a float [batch, width] with a "
                              f"fixed width (elem type {tt.elem_type}, shape {dims})")
    w = int(dims[1])
    if s.null_cond is not None and s.null_cond.size != w:
        raise ConversionError(f"the null condition vector has {s.null_cond.size} values; input "
                              f"{vi.name!r} has width {w}")
    return Node("cond_input", [], name=vi.name, cond_shape=[w],
                constant=None if s.null_cond is None else s.null_cond.reshape(-1)), w


def check_label_input(vi) -> None:
    tt = vi.type.tensor_type
    if tt.elem_type not in (6, 7):   # int32, int64
        raise ConversionError(f"label input {vi.name!r} has element type {tt.elem_type}; a class "
                              f"label is an integer (int64 as nn.Embedding takes it)")
    dims = list(tt.shape.dim)
    if len(dims) not in (1, 2) or (len(dims) == 2 and dims[1].dim_value != 1):
        raise ConversionError(f"label input {vi.name!r} must be [batch] or [batch, 1]")


def embedding(importer, node, ins, where):
    """Gather(table, label) as LabelInput + Embedding; any other use of the label is refused."""
    s: Settings = importer.cond_settings
    refs = [v for v in ins if isinstance(v, LabelRef)]
    if node.op_type != "Gather" or len(ins) != 2 or not isinstance(ins[1], LabelRef) or \
            isinstance(ins[0], LabelRef):
        raise ConversionError(f"{where}: reads the class label {refs[0].name!r}; the only "
                              f"supported use of a label is an embedding (nn.Embedding: Gather "
                              f"of a constant table by the label)")
    table = ins[0]
    if not hasattr(table, "arr") or np.asarray(table.arr).ndim != 2:
        raise ConversionError(f"{where}: the embedding table must be a constant [classes, E]")
    axis = 0
    for a in node.attribute:
        if a.name == "axis":
            axis = a.i
    if axis != 0:
        raise ConversionError(f"{where}: Gather on axis {axis}; an embedding selects rows")
    arr = np.asarray(table.arr, dtype=np.float64)
    classes = arr.shape[0]
    if s.num_classes is not None and int(s.num_classes) != classes:
        raise ConversionError(f"{where}: --num-classes {s.num_classes}, but the embedding table "
                              f"has {classes} rows")
    if s.classes is not None and s.classes != classes:
        raise ConversionError(f"{where}: embedding tables of {s.classes} and {classes} rows read "
                              f"the same label")
    if not -1 <= s.null_label < classes:
        raise ConversionError(f"--null-label {s.null_label} is not a label of the table's "
                              f"{classes} classes")
    if s.label_tid is None:
        s.classes = classes
        s.label_tid = importer.emit(Node("label_input", [], name=ins[1].name, classes=classes,
                                         null_label=s.null_label))
    tid = importer.emit(Node("embedding", [s.label_tid], name=node.name, weight=arr,
                             classes=classes))
    return tid, arr.shape[1]
