# SPDX-License-Identifier: Apache-2.0
"""Writes and reads .sif files (docs/format.md) from and to an ir.FlowModel.

The FlatBuffers code comes from schemas/siflow.fbs (`_generated/`, made by
converter/tools/regen_fb.py). The writer sets everything the runtime reads explicitly (the
version 1.0, every node's `alpha` and `epsilon`, the interpolant and base kinds, the time range),
starts every weight vector (`f32` and `f16`) at a file offset that is a multiple of 64, and
refuses values the loader would refuse (non-finite weights, fp16 overflow) with a ConversionError
naming the node and operand.
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import List, Optional

import flatbuffers
import numpy as np

from . import image_ops, ir
from ._generated import Base as fb_base
from ._generated import Graph as fb_graph
from ._generated import Interpolant as fb_interp
from ._generated import KeyValue as fb_kv
from ._generated import Model as fb_model
from ._generated import Node as fb_node
from ._generated import Normalization as fb_norm
from ._generated import TestVectors as fb_tv
from ._generated import Weights as fb_weights

FILE_IDENTIFIER = b"SIFL"
FORMAT_MAJOR, FORMAT_MINOR = 1, 1   # the newest version this writer knows (1.1 added Exp)
WEIGHT_ALIGNMENT = 64
DTYPE_F32, DTYPE_F16, DTYPE_I8, DTYPE_BF16 = 0, 1, 2, 3
# Weight storage formats of --quantize (fp16, bf16 and int8 need format 1.3 for the last two).
QUANTIZE = ("fp32", "fp16", "bf16", "int8")
OPERANDS = ("weight", "bias", "constant", "gamma", "beta")
FP16_MAX = 65504.0
ConversionError = ir.ConversionError


# ----------------------------------------------------------------------------------- writing

def _node_label(k: int, node: ir.Node) -> str:
    return f"node {k} ({node.op}{', ' + node.name if node.name else ''})"


def _bf16_bits(f32: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns of float32 values: round to nearest, ties to even (the runtime's
    float_to_bf16 for finite values, subnormal results flushed to a zero of their sign)."""
    b = f32.astype("<f4").view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint32) & 0xFFFF
    tiny = (r & 0x7F80) == 0
    r[tiny] &= 0x8000
    return r.astype(np.uint16)


def int8_quantize(f32: np.ndarray):
    """Symmetric per-row int8 of a 2-D float32 array: (q int8, scale float32 per row) with scale =
    max|w| / 127 in float32 and q = w / scale rounded to nearest even (the runtime's rule; an
    all-zero row gets the smallest positive scale, its q are 0)."""
    w = np.asarray(f32, dtype=np.float32)
    m = np.max(np.abs(w), axis=1).astype(np.float32)
    scale = (m / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = np.float32(np.finfo(np.float32).tiny)
    q = np.clip(np.rint((w / scale[:, None]).astype(np.float32)), -127, 127).astype(np.int8)
    return q, scale


def _weight_payload(values: np.ndarray, quantize: str, where: str, per_row: bool = False):
    """Returns (dtype, little-endian bytes, element size, scales or None) for a weight operand.

    Values are rounded to float32 first; then to binary16 (fp16), bfloat16 (bf16) or, for 2-D
    operands and those marked `per_row` (a Conv2d's weight, whose first axis is its output
    channel), int8 with one float32 scale per row of the first axis (int8; other operands stay
    float32). Raises ConversionError for non-finite values or values that overflow the storage
    type.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size:
        raise ConversionError(f"{where}: value {bad[0]} is {flat[bad[0]]} (weights must be "
                              f"finite)")
    with np.errstate(over="ignore"):
        f32 = flat.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(f32))
    if bad.size:
        raise ConversionError(f"{where}: value {bad[0]} = {flat[bad[0]]!r} overflows float32")
    if quantize == "bf16":
        bits = _bf16_bits(f32)
        bad = np.flatnonzero((bits & 0x7F80) == 0x7F80)
        if bad.size:
            raise ConversionError(f"{where}: value {bad[0]} = {flat[bad[0]]!r} overflows "
                                  f"bfloat16")
        return DTYPE_BF16, bits.astype("<u2").tobytes(), 2, None
    if quantize == "int8" and (np.ndim(values) == 2 or per_row) and f32.size:
        q, scale = int8_quantize(f32.reshape(np.shape(values)[0], -1))
        return DTYPE_I8, q.tobytes(), 1, scale
    if quantize != "fp16":
        return DTYPE_F32, f32.astype("<f4").tobytes(), 4, None
    with np.errstate(over="ignore"):
        f16 = f32.astype(np.float16)
    bad = np.flatnonzero(~np.isfinite(f16))
    if bad.size:
        raise ConversionError(f"{where}: value {bad[0]} = {flat[bad[0]]!r} overflows fp16 "
                              f"(largest finite half is {FP16_MAX:g}); store this model as "
                              f"float32 (no --fp16)")
    return DTYPE_F16, f16.view(np.uint16).astype("<u2").tobytes(), 2, None


def _aligned_vector(b: flatbuffers.Builder, payload: bytes, elem_size: int) -> int:
    """Writes a vector whose first element lands on a multiple of WEIGHT_ALIGNMENT."""
    n = len(payload) // elem_size
    b.StartVector(elem_size, n, WEIGHT_ALIGNMENT)
    b.head = b.Head() - len(payload)
    b.Bytes[b.Head():b.Head() + len(payload)] = payload
    b.vectorNumElems = n
    return b.EndVector()


def _numpy_vector(b: flatbuffers.Builder, values, dtype: str) -> int:
    """A vector with the natural alignment of `dtype` ('<f4', '<f8', '<u4')."""
    return b.CreateNumpyVector(np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=dtype))


def _write_weights(b: flatbuffers.Builder, values: np.ndarray, quantize: str, where: str,
                   per_row: bool = False) -> int:
    dtype, payload, elem, scales = _weight_payload(values, quantize, where, per_row)
    data = _aligned_vector(b, payload, elem)
    scale = _numpy_vector(b, scales, "<f4") if scales is not None else None
    shape = _numpy_vector(b, list(np.shape(values)) or [1], "<u4")
    fb_weights.WeightsStart(b)
    b.PrependInt8Slot(0, dtype, None)
    fb_weights.WeightsAddShape(b, shape)
    if dtype == DTYPE_F32:
        fb_weights.WeightsAddF32(b, data)
    elif dtype == DTYPE_F16:
        fb_weights.WeightsAddF16(b, data)
    elif dtype == DTYPE_BF16:
        fb_weights.WeightsAddBf16(b, data)
    else:
        fb_weights.WeightsAddI8(b, data)
        fb_weights.WeightsAddScale(b, scale)
    return fb_weights.WeightsEnd(b)


def _write_node(b: flatbuffers.Builder, k: int, node: ir.Node, quantize: str) -> int:
    where = _node_label(k, node)
    if node.op not in ir.OP_CODES:
        raise ConversionError(f"{where}: unknown op {node.op!r}; supported: "
                              f"{', '.join(ir.OP_CODES)}")
    if node.unary not in ir.UNARY_KINDS:
        raise ConversionError(f"{where}: unknown unary kind {node.unary!r}; supported: "
                              f"{', '.join(ir.UNARY_KINDS)}")
    for name, value in (("alpha", node.alpha), ("epsilon", node.epsilon)):
        if not np.isfinite(np.float32(value)):
            raise ConversionError(f"{where}: {name} = {value!r} is not finite in float32")
    operands = {}
    for name in OPERANDS:
        values = getattr(node, name)
        if values is not None:
            # A Conv2d weight [C_out, C_in/g, kh, kw] quantizes per output channel; a
            # ConvTranspose2d's first axis is its input channel, so it stays float32 in int8.
            per_row = name == "weight" and node.op == "conv2d"
            operands[name] = _write_weights(b, values, quantize, f"{where} operand {name}",
                                            per_row)
    inputs = _numpy_vector(b, [int(i) for i in node.inputs], "<u4")
    shape = None if not node.shape else _numpy_vector(b, [int(e) for e in node.shape], "<u4")
    perm = None if node.perm is None else _numpy_vector(b, [int(p) for p in node.perm], "<u4")
    name_off = b.CreateString(node.name) if node.name else None
    geometry = _image_fields(b, node, where)
    # cond_input's condition shape is its output shape (Node.shape) when no shape is set.
    cond_shape = (_numpy_vector(b, [int(d) for d in node.cond_shape], "<u4")
                  if node.op == "cond_input" and node.cond_shape and not node.shape else None)
    fb_node.NodeStart(b)
    b.PrependUint8Slot(0, ir.OP_CODES[node.op], None)
    if node.op in ir.COND_OPS:   # format 1.4: classes, null label, the condition's shape
        if cond_shape is not None:
            fb_node.NodeAddShape(b, cond_shape)
        fb_node.NodeAddClasses(b, int(node.classes))
        fb_node.NodeAddNullLabel(b, int(node.null_label))
    fb_node.NodeAddInputs(b, inputs)
    if name_off is not None:
        fb_node.NodeAddName(b, name_off)
    b.PrependUint8Slot(3, ir.UNARY_KINDS.index(node.unary), None)
    b.PrependFloat32Slot(4, float(node.alpha), None)   # explicit: Elu's alpha is not 0.01
    for slot, name in ((5, "weight"), (6, "bias"), (7, "constant"), (8, "gamma"), (9, "beta")):
        if name in operands:
            b.PrependUOffsetTRelativeSlot(slot, operands[name], 0)
    b.PrependFloat32Slot(10, float(node.epsilon), None)
    if shape is not None:
        fb_node.NodeAddShape(b, shape)
    if perm is not None:
        fb_node.NodeAddPerm(b, perm)
    if node.op == "slice":
        fb_node.NodeAddAxis(b, int(node.axis))
        fb_node.NodeAddStart(b, int(node.start))
        fb_node.NodeAddEnd(b, int(node.end))
    _add_image_fields(b, node, geometry)
    # Format 1.4 fields of the math ops, written only when they differ from the schema's defaults.
    if node.op in ("softmax", "reduce"):
        b.PrependInt32Slot(22, int(node.axis), -1)
    if node.op == "reduce":
        b.PrependUint8Slot(25, ir.REDUCE_KINDS.index(node.reduce), 0)
    if node.op == "pow":
        b.PrependFloat32Slot(26, float(node.exponent), 1.0)
    if node.op == "clip":
        b.PrependFloat32Slot(27, float(node.low), -math.inf)
        b.PrependFloat32Slot(28, float(node.high), math.inf)
    if node.op == "matmul":
        fb_node.NodeAddTransposeB(b, bool(node.transpose_b))
        fb_node.NodeAddScale(b, float(node.scale))
    return fb_node.NodeEnd(b)


# The format 1.4 image-op fields (image_ops.py): uint32 vectors written before the node table,
# scalars inside it. Only the image ops write them.
# Node.shape is written for every op (_write_node); these are the image ops' own.
_IMAGE_VECTORS = ("kernel", "strides", "pads", "dilations", "output_padding")


def _image_fields(b: flatbuffers.Builder, node: ir.Node, where: str) -> dict:
    if node.op not in image_ops.IMAGE_OPS:
        return {}
    out = {}
    for name in _IMAGE_VECTORS:
        v = getattr(node, name)
        if v is not None and len(v):
            if any(not 0 <= int(a) < 1 << 32 for a in v):
                raise ConversionError(f"{where}: {name} {list(v)} is not a list of uint32")
            out[name] = _numpy_vector(b, [int(a) for a in v], "<u4")
    if node.pool not in image_ops.POOL_KINDS or node.resize not in image_ops.RESIZE_MODES:
        raise ConversionError(f"{where}: unknown pool kind {node.pool!r} or resize mode "
                              f"{node.resize!r}")
    return out


def _add_image_fields(b: flatbuffers.Builder, node: ir.Node, vectors: dict) -> None:
    if node.op not in image_ops.IMAGE_OPS:
        return
    adders = {"shape": fb_node.NodeAddShape, "kernel": fb_node.NodeAddKernel,
              "strides": fb_node.NodeAddStrides, "pads": fb_node.NodeAddPads,
              "dilations": fb_node.NodeAddDilations,
              "output_padding": fb_node.NodeAddOutputPadding}
    for name, off in vectors.items():
        adders[name](b, off)
    fb_node.NodeAddGroups(b, int(node.groups))
    fb_node.NodeAddPool(b, image_ops.POOL_KINDS.index(node.pool))
    fb_node.NodeAddCountIncludePad(b, bool(node.count_include_pad))
    fb_node.NodeAddResize(b, image_ops.RESIZE_MODES.index(node.resize))


def _table_vector(b: flatbuffers.Builder, offsets: List[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _write_graph(b: flatbuffers.Builder, graph: ir.Graph, quantize: str) -> int:
    graph.widths()   # shape errors name their node before anything is written
    nodes = [_write_node(b, k, n, quantize) for k, n in enumerate(graph.nodes)]
    vec = _table_vector(b, nodes)
    x_shape = None if not graph.x_shape else \
        _numpy_vector(b, [int(e) for e in graph.x_shape], "<u4")
    fb_graph.GraphStart(b)
    fb_graph.GraphAddDim(b, int(graph.dim))
    fb_graph.GraphAddNodes(b, vec)
    fb_graph.GraphAddOutput(b, int(graph.output))
    if x_shape is not None:
        fb_graph.GraphAddXShape(b, x_shape)
    return fb_graph.GraphEnd(b)


def _check_finite(values, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ConversionError(f"{what}[{bad[0]}] is {a[bad[0]]} (must be finite)")
    return a


# The runtime reads these values as float32 and refuses the file when one is not finite (or not
# positive, for a standard deviation): the converter applies the same rules to the values as they
# will be stored, after the float32 cast, so it never writes a file the runtime refuses.
def _stored_float32(values, what: str, positive: bool = False) -> np.ndarray:
    a = _check_finite(values, what)
    with np.errstate(over="ignore", under="ignore"):
        f = a.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(f))
    if bad.size:
        raise ConversionError(f"{what}[{bad[0]}] = {a[bad[0]]!r} overflows float32 (the runtime "
                              f"refuses a non-finite value)")
    if positive:
        bad = np.flatnonzero(~(f > 0))
        if bad.size:
            raise ConversionError(f"{what}[{bad[0]}] = {a[bad[0]]!r} is {float(f[bad[0]])!r} as "
                                  f"float32; it must be positive")
    return f


def _stored_tolerance(value, what: str) -> float:
    v = float(value)
    with np.errstate(over="ignore"):
        f = np.float32(v)
    if not (np.isfinite(f) and f >= 0):
        raise ConversionError(f"test vectors: the {what} tolerance is {v!r} as float32; the runtime "
                              f"needs a finite number >= 0 (does the network's output overflow "
                              f"float32? convert with --test-vectors 0 to skip test vectors)")
    return float(f)


def _write_interpolant(b: flatbuffers.Builder, interp: ir.Interpolant) -> int:
    if interp.kind not in ir.INTERPOLANTS:
        raise ConversionError(f"unknown interpolant {interp.kind!r}; supported: "
                              f"{', '.join(ir.INTERPOLANTS)}")
    alpha = beta = None
    if interp.kind == "learned_fourier":
        a = _check_finite(interp.alpha, "interpolant alpha")
        c = _check_finite(interp.beta, "interpolant beta")
        if a.size != c.size or not 1 <= a.size <= 64:
            raise ConversionError(f"learned Fourier interpolant needs equally many alpha and beta "
                                  f"coefficients (1 to 64), got {a.size} and {c.size}")
        alpha, beta = _numpy_vector(b, a, "<f8"), _numpy_vector(b, c, "<f8")
    elif len(interp.alpha) or len(interp.beta):
        raise ConversionError(f"a {interp.kind} interpolant takes no coefficients")
    fb_interp.InterpolantStart(b)
    b.PrependUint8Slot(0, ir.INTERPOLANTS.index(interp.kind), None)
    if alpha is not None:
        fb_interp.InterpolantAddAlpha(b, alpha)
        fb_interp.InterpolantAddBeta(b, beta)
    return fb_interp.InterpolantEnd(b)


def _float_vector(b: flatbuffers.Builder, values, what: str, dim: int,
                  positive: bool = False) -> Optional[int]:
    if values is None:
        return None
    a = _stored_float32(values, what, positive)
    if a.size != dim:
        raise ConversionError(f"{what} has {a.size} values, expected dim = {dim}")
    return _numpy_vector(b, a, "<f4")


def _write_base(b: flatbuffers.Builder, base: ir.Base, dim: int) -> int:
    if base.kind not in ir.BASES:
        raise ConversionError(f"unknown base {base.kind!r}; supported: {', '.join(ir.BASES)}")
    if base.kind == "uniform" and (base.low is None or base.high is None):
        raise ConversionError("a uniform base needs low and high")
    if base.kind == "uniform":
        low = _stored_float32(base.low, "base low")
        high = _stored_float32(base.high, "base high")
        bad = np.flatnonzero(~(high > low)) if low.size == high.size else []
        if len(bad):
            i = bad[0]
            raise ConversionError(f"uniform base: high[{i}] = {float(high[i])!r} must exceed "
                                  f"low[{i}] = {float(low[i])!r} as float32")
    vecs = [_float_vector(b, getattr(base, f), f"base {f}", dim, positive=f == "std")
            for f in ("mean", "std", "low", "high")]
    fb_base.BaseStart(b)
    b.PrependUint8Slot(0, ir.BASES.index(base.kind), None)
    for slot, off in enumerate(vecs, start=1):
        if off is not None:
            b.PrependUOffsetTRelativeSlot(slot, off, 0)
    return fb_base.BaseEnd(b)


def _write_normalization(b: flatbuffers.Builder, norm: ir.Normalization, dim: int) -> int:
    mean = _float_vector(b, norm.mean, "normalization mean", dim)
    std = _float_vector(b, norm.std, "normalization std", dim, positive=True)
    fb_norm.NormalizationStart(b)
    fb_norm.NormalizationAddMean(b, mean)
    fb_norm.NormalizationAddStd(b, std)
    return fb_norm.NormalizationEnd(b)


def _write_metadata(b: flatbuffers.Builder, metadata) -> Optional[int]:
    """Key-value pairs sorted by the key's UTF-8 bytes, as FlatBuffers' sorted tables are."""
    if not metadata:
        return None
    items = sorted(((str(k), str(v)) for k, v in metadata.items()),
                   key=lambda kv: kv[0].encode("utf-8"))
    tables = []
    for key, value in items:
        k_off, v_off = b.CreateString(key), b.CreateString(value)
        fb_kv.KeyValueStart(b)
        fb_kv.KeyValueAddKey(b, k_off)
        fb_kv.KeyValueAddValue(b, v_off)
        tables.append(fb_kv.KeyValueEnd(b))
    return _table_vector(b, tables)


def _write_test_vectors(b: flatbuffers.Builder, tv: ir.TestVectors, dim: int) -> int:
    t = _stored_float32(tv.t, "test vectors t")
    count = t.size
    y = _stored_float32(tv.y, "test vectors y")
    v = _stored_float32(tv.v, "test vectors v")
    velocity_tolerance = _stored_tolerance(tv.velocity_tolerance, "velocity")
    if y.size != count * dim or v.size != count * dim:
        raise ConversionError(f"test vectors: y and v need {count} x {dim} values")
    offs = {"t": _numpy_vector(b, t, "<f4"), "y": _numpy_vector(b, y, "<f4"),
            "v": _numpy_vector(b, v, "<f4")}
    traj = 0
    if tv.trajectory_start is not None and np.size(tv.trajectory_start):
        start = _stored_float32(tv.trajectory_start, "test vectors trajectory_start")
        end = _stored_float32(tv.trajectory_end, "test vectors trajectory_end")
        trajectory_tolerance = _stored_tolerance(tv.trajectory_tolerance, "trajectory")
        traj = start.size // dim
        if start.size != traj * dim or end.size != traj * dim:
            raise ConversionError(f"test vectors: trajectory start and end need [n, {dim}] values")
        if not 1 <= int(tv.trajectory_steps) <= 2 ** 20:
            raise ConversionError(f"test vectors: trajectory_steps {tv.trajectory_steps} is "
                                  f"outside [1, 2^20]")
        offs["start"] = _numpy_vector(b, start, "<f4")
        offs["end"] = _numpy_vector(b, end, "<f4")
    cond_offs = _write_test_conditioning(b, tv, count, traj)
    fb_tv.TestVectorsStart(b)
    for add, off in zip((fb_tv.TestVectorsAddLabels, fb_tv.TestVectorsAddCond,
                         fb_tv.TestVectorsAddTrajectoryLabels, fb_tv.TestVectorsAddTrajectoryCond),
                        cond_offs):
        if off is not None:
            add(b, off)
    if float(tv.guidance) != 1.0:
        fb_tv.TestVectorsAddGuidance(b, float(np.float32(tv.guidance)))
    fb_tv.TestVectorsAddCount(b, count)
    fb_tv.TestVectorsAddT(b, offs["t"])
    fb_tv.TestVectorsAddY(b, offs["y"])
    fb_tv.TestVectorsAddV(b, offs["v"])
    b.PrependFloat32Slot(4, velocity_tolerance, None)
    fb_tv.TestVectorsAddTrajectoryCount(b, traj)
    if traj:
        fb_tv.TestVectorsAddTrajectorySteps(b, int(tv.trajectory_steps))
        fb_tv.TestVectorsAddTrajectoryStart(b, offs["start"])
        fb_tv.TestVectorsAddTrajectoryEnd(b, offs["end"])
        b.PrependFloat32Slot(9, trajectory_tolerance, None)
    return fb_tv.TestVectorsEnd(b)


def _write_test_conditioning(b, tv: ir.TestVectors, count: int, traj: int):
    """Offsets of the test vectors' labels, cond, trajectory labels and cond (None: absent)."""
    out = []
    for values, rows, kind in ((tv.labels, count, "<i4"), (tv.cond, count, "<f4"),
                               (tv.trajectory_labels, traj, "<i4"),
                               (tv.trajectory_cond, traj, "<f4")):
        if values is None or rows == 0:
            out.append(None)
            continue
        a = np.asarray(values)
        if a.shape[0] != rows:
            raise ConversionError(f"test vectors: {a.shape[0]} labels/conditions for {rows} rows")
        if kind == "<f4":
            a = _stored_float32(a, "test vectors cond")
        out.append(_numpy_vector(b, a, kind))
    return out


def required_minor(graph: ir.Graph, tv: Optional[ir.TestVectors] = None,
                   quantize: str = "fp32") -> int:
    """The lowest format_minor the contents need: 4 with any format 1.4 op, unary kind,
    per-sample shape or conditioned test vectors, 3 with BF16 or I8 weights (format 1.3), 1 with an Exp node
    (format 1.1), else 0, so a file without new features still loads in a runtime that reads
    only 1.0."""
    if graph.x_shape or image_ops.required(graph) or any(
            n.shape or ir.OP_CODES[n.op] >= ir.OP_CODES["conv2d"] or
            (n.op == "unary" and ir.UNARY_KINDS.index(n.unary) >= ir.UNARY_KINDS.index("log"))
            for n in graph.nodes) or (
            tv is not None and (tv.labels is not None or tv.cond is not None or
                                float(tv.guidance) != 1.0)):
        return 4
    has = {name for n in graph.nodes for name in OPERANDS if getattr(n, name) is not None}
    if quantize == "bf16" and has:
        return 3
    if quantize == "int8" and any(np.ndim(getattr(n, name)) == 2 and np.size(getattr(n, name))
                                  for n in graph.nodes for name in OPERANDS
                                  if getattr(n, name) is not None):
        return 3
    return 1 if any(n.op == "exp" for n in graph.nodes) else 0


def _storage(fp16: bool, quantize: Optional[str]) -> str:
    quantize = quantize or ("fp16" if fp16 else "fp32")
    if quantize not in QUANTIZE:
        raise ConversionError(f"unknown weight storage {quantize!r}; expected one of "
                              f"{', '.join(QUANTIZE)}")
    return quantize


def to_bytes(model: ir.FlowModel, fp16: bool = False, quantize: Optional[str] = None) -> bytes:
    """The .sif bytes of `model`; weights stored as `quantize` (fp32, fp16: IEEE half of the
    float32 value, bf16, int8: per-row symmetric int8 of 2-D operands); fp16=True is
    quantize="fp16"."""
    quantize = _storage(fp16, quantize)
    if not 0.0 <= model.time_start < model.time_end <= 1.0:
        raise ConversionError(f"time range [{model.time_start}, {model.time_end}] must satisfy "
                              f"0 <= time_start < time_end <= 1")
    dim = int(model.graph.dim)
    b = flatbuffers.Builder(1024)
    graph = _write_graph(b, model.graph, quantize)
    interp = _write_interpolant(b, model.interpolant)
    base = _write_base(b, model.base, dim)
    norm = (_write_normalization(b, model.normalization, dim)
            if model.normalization is not None else None)
    meta = _write_metadata(b, model.metadata)
    tv = _write_test_vectors(b, model.test_vectors, dim) if model.test_vectors else None
    name = b.CreateString(model.name) if model.name else None
    fb_model.ModelStart(b)
    b.PrependUint16Slot(0, FORMAT_MAJOR, None)
    b.PrependUint16Slot(1, required_minor(model.graph, model.test_vectors, quantize), None)
    if name is not None:
        fb_model.ModelAddName(b, name)
    fb_model.ModelAddGraph(b, graph)
    fb_model.ModelAddInterpolant(b, interp)
    fb_model.ModelAddBase(b, base)
    if norm is not None:
        fb_model.ModelAddNormalization(b, norm)
    b.PrependFloat64Slot(7, float(model.time_start), None)
    b.PrependFloat64Slot(8, float(model.time_end), None)
    if meta is not None:
        fb_model.ModelAddMetadata(b, meta)
    if tv is not None:
        fb_model.ModelAddTestVectors(b, tv)
    root = fb_model.ModelEnd(b)
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_sif(model: ir.FlowModel, path: str, fp16: bool = False,
              quantize: Optional[str] = None) -> None:
    """Writes `model` to `path` atomically: a temporary file in the same directory, fsync'd,
    then renamed over `path`. On any failure the temporary file is removed and an existing file
    at `path` is left untouched."""
    data = to_bytes(model, fp16=fp16, quantize=quantize)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ----------------------------------------------------------------------------------- reading

def _np(vec_is_none, as_numpy, dtype=np.float64) -> Optional[np.ndarray]:
    """A generated vector accessor's values as a float64 copy, or None when the vector is
    absent."""
    if vec_is_none():
        return None
    a = as_numpy()
    return np.asarray(a if not isinstance(a, int) else [], dtype=dtype).copy()


def _read_weights(w) -> Optional[np.ndarray]:
    if w is None:
        return None
    dtype = w.Dtype()
    if dtype == DTYPE_F32:
        values = _np(w.F32IsNone, w.F32AsNumpy)
    elif dtype == DTYPE_F16:
        raw = _np(w.F16IsNone, w.F16AsNumpy, np.uint16)
        values = None if raw is None else raw.view(np.float16).astype(np.float64)
    elif dtype == DTYPE_BF16:
        raw = _np(w.Bf16IsNone, w.Bf16AsNumpy, np.uint16)
        values = None if raw is None else (
            (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64))
    elif dtype == DTYPE_I8:
        raw = _np(w.I8IsNone, w.I8AsNumpy, np.int8)
        scale = _np(w.ScaleIsNone, w.ScaleAsNumpy, np.float32)
        shape = _np(w.ShapeIsNone, w.ShapeAsNumpy, np.int64)
        if raw is None or scale is None or shape is None or not shape.size or \
                raw.size != int(np.prod(shape)) or scale.size != int(shape[0]):
            raise ConversionError("I8 weights need a shape and one scale per row")
        rows = raw.reshape(int(shape[0]), -1).astype(np.float32)
        values = (scale.astype(np.float32)[:, None] * rows).astype(np.float32).astype(
            np.float64).reshape(-1)
    else:
        raise ConversionError(f"weights with dtype {dtype} (F32, F16, BF16 and I8 are read)")
    if values is None:
        values = np.zeros(0)
    shape = _np(w.ShapeIsNone, w.ShapeAsNumpy, np.int64)
    if shape is not None and shape.size and int(np.prod(shape)) == values.size:
        values = values.reshape([int(s) for s in shape])
    return values


def _read_node(n) -> ir.Node:
    op = n.Op()
    unary = n.Unary()
    if op not in ir.OP_NAMES or unary >= len(ir.UNARY_KINDS):
        raise ConversionError(f"node op {op} / unary kind {unary} is not one this reader knows")
    inputs = _np(n.InputsIsNone, n.InputsAsNumpy, np.int64)
    shape = _np(n.ShapeIsNone, n.ShapeAsNumpy, np.int64)
    perm = _np(n.PermIsNone, n.PermAsNumpy, np.int64)
    image = {}
    if ir.OP_NAMES[op] in image_ops.IMAGE_OPS:
        for name, camel in (("kernel", "Kernel"), ("strides", "Strides"), ("pads", "Pads"),
                            ("dilations", "Dilations"), ("output_padding", "OutputPadding")):
            v = _np(getattr(n, camel + "IsNone"), getattr(n, camel + "AsNumpy"), np.int64)
            image[name] = None if v is None else [int(a) for a in v]
        if n.Pool() >= len(image_ops.POOL_KINDS) or n.Resize() >= len(image_ops.RESIZE_MODES):
            raise ConversionError(f"node pool kind {n.Pool()} / resize mode {n.Resize()} is not "
                                  f"one this reader knows")
        image.update(groups=int(n.Groups()), pool=image_ops.POOL_KINDS[n.Pool()],
                     count_include_pad=bool(n.CountIncludePad()),
                     resize=image_ops.RESIZE_MODES[n.Resize()])
    cond = ir.OP_NAMES[op] == "cond_input"
    stored = None if shape is None or not shape.size else [int(e) for e in shape]
    return ir.Node(**image, op=ir.OP_NAMES[op],
                   inputs=[] if inputs is None else [int(i) for i in inputs],
                   shape=None if cond else stored, cond_shape=stored if cond else None,
                   classes=int(n.Classes()), null_label=int(n.NullLabel()),
                   perm=None if perm is None else [int(p) for p in perm], axis=int(n.Axis()),
                   start=int(n.Start()), end=int(n.End()),
                   name=(n.Name() or b"").decode("utf-8"), unary=ir.UNARY_KINDS[unary],
                   alpha=float(n.Alpha()), weight=_read_weights(n.Weight()),
                   bias=_read_weights(n.Bias()), constant=_read_weights(n.Constant()),
                   gamma=_read_weights(n.Gamma()), beta=_read_weights(n.Beta()),
                   epsilon=float(n.Epsilon()), exponent=float(n.Exponent()),
                   low=float(n.Low()), high=float(n.High()),
                   transpose_b=bool(n.TransposeB()), scale=float(n.Scale()),
                   reduce=ir.REDUCE_KINDS[n.Reduce()] if n.Reduce() < len(ir.REDUCE_KINDS)
                   else str(n.Reduce()))


def from_bytes(data: bytes) -> ir.FlowModel:
    """Parses .sif bytes into a FlowModel (weights as float64 equal to the stored values).

    Checks the identifier and the major version; it is not a verifier (the runtime's loader is).
    """
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ConversionError(f"not a .sif file: identifier {data[4:8]!r}, expected "
                              f"{FILE_IDENTIFIER!r}")
    m = fb_model.Model.GetRootAs(data, 0)
    if m.FormatMajor() != FORMAT_MAJOR:
        raise ConversionError(f"format version {m.FormatMajor()}.{m.FormatMinor()} is not "
                              f"{FORMAT_MAJOR}.x")
    g = m.Graph()
    if g is None:
        raise ConversionError("the file has no graph")
    x_shape = _np(g.XShapeIsNone, g.XShapeAsNumpy, np.int64)
    graph = ir.Graph(dim=int(g.Dim()), nodes=[_read_node(g.Nodes(k)) for k in
                                              range(g.NodesLength())], output=int(g.Output()),
                     x_shape=None if x_shape is None or not x_shape.size else
                     [int(e) for e in x_shape])
    model = ir.FlowModel(graph=graph, name=(m.Name() or b"").decode("utf-8"),
                         time_start=float(m.TimeStart()), time_end=float(m.TimeEnd()))
    it = m.Interpolant()
    if it is not None:
        kind = it.Kind()
        if kind >= len(ir.INTERPOLANTS):
            raise ConversionError(f"interpolant kind {kind} is not one this reader knows")
        a = _np(it.AlphaIsNone, it.AlphaAsNumpy)
        c = _np(it.BetaIsNone, it.BetaAsNumpy)
        model.interpolant = ir.Interpolant(kind=ir.INTERPOLANTS[kind],
                                           alpha=[] if a is None else a.tolist(),
                                           beta=[] if c is None else c.tolist())
    bs = m.Base()
    if bs is not None:
        kind = bs.Kind()
        if kind >= len(ir.BASES):
            raise ConversionError(f"base kind {kind} is not one this reader knows")

        def vec(name):
            v = _np(getattr(bs, name + "IsNone"), getattr(bs, name + "AsNumpy"))
            return v if v is not None and v.size else None
        model.base = ir.Base(kind=ir.BASES[kind], mean=vec("Mean"), std=vec("Std"),
                             low=vec("Low"), high=vec("High"))
    nm = m.Normalization()
    if nm is not None:
        model.normalization = ir.Normalization(
            mean=_np(nm.MeanIsNone, nm.MeanAsNumpy), std=_np(nm.StdIsNone, nm.StdAsNumpy))
    model.metadata = {}
    for k in range(m.MetadataLength()):
        kv = m.Metadata(k)
        model.metadata[(kv.Key() or b"").decode("utf-8")] = (kv.Value() or b"").decode("utf-8")
    tv = m.TestVectors()
    if tv is not None:
        model.test_vectors = _read_test_vectors(tv, graph.dim)
    return model


def _read_test_vectors(tv, dim: int) -> ir.TestVectors:
    def vec(name, rows):
        v = _np(getattr(tv, name + "IsNone"), getattr(tv, name + "AsNumpy"))
        v = np.zeros(0) if v is None else v
        return v.reshape(rows, dim) if rows is not None else v
    count = int(tv.Count())
    out = ir.TestVectors(t=vec("T", None)[:count], y=vec("Y", count), v=vec("V", count),
                         velocity_tolerance=float(tv.VelocityTolerance()))
    traj = int(tv.TrajectoryCount())
    if traj:
        out.trajectory_steps = int(tv.TrajectorySteps())
        out.trajectory_start = vec("TrajectoryStart", traj)
        out.trajectory_end = vec("TrajectoryEnd", traj)
        out.trajectory_tolerance = float(tv.TrajectoryTolerance())
    out.guidance = float(tv.Guidance())
    for name, field in (("Labels", "labels"), ("Cond", "cond"),
                        ("TrajectoryLabels", "trajectory_labels"),
                        ("TrajectoryCond", "trajectory_cond")):
        v = _np(getattr(tv, name + "IsNone"), getattr(tv, name + "AsNumpy"),
                np.int64 if "Labels" in name else np.float64)
        if v is not None and v.size:
            rows = count if "Trajectory" not in name else traj
            setattr(out, field, v if "Labels" in name else v.reshape(rows, -1))
    return out


def read_sif(path: str) -> ir.FlowModel:
    """Reads a .sif file into a FlowModel (see from_bytes)."""
    with open(path, "rb") as f:
        return from_bytes(f.read())


def stored(model: ir.FlowModel, fp16: bool = False,
           quantize: Optional[str] = None) -> ir.FlowModel:
    """The model as the runtime will see it: weights rounded to float32 (or fp16), vectors to
    float32. Equal to from_bytes(to_bytes(model, fp16))."""
    return from_bytes(to_bytes(model, fp16=fp16, quantize=quantize))
