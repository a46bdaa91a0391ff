# SPDX-License-Identifier: Apache-2.0
"""ONNX → the image ops of format 1.4 (conv2d, conv_transpose2d, pool2d, resize, groupnorm).

Installed into onnx_import's importer by `install`: Conv, ConvTranspose, AveragePool, MaxPool,
GlobalAveragePool, Resize (opset 11+) and Upsample (nearest), GroupNormalization,
InstanceNormalization, and the pattern torch 1.13 exports for nn.GroupNorm:
Reshape(x, [0, G, -1]) → InstanceNormalization(ones, zeros) → Reshape(·, shape of x) → Mul γ →
Add β, which becomes one groupnorm node (γ and β stay per-channel Mul/Add constants). An image x
[B, C, H, W] gives the graph its x_shape; elementwise ops on image tensors are flat when each
operand is the full per-sample shape or one value per row, and constants broadcast by expansion.
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np

from . import image_ops
from .ir import ConversionError, Node

SUPPORTED = ("Conv, ConvTranspose (2-D, groups, dilations, asymmetric pads), AveragePool, MaxPool, "
             "zero Pad before Conv/AveragePool, "
             "GlobalAveragePool, Resize (nearest asymmetric/floor, linear half_pixel or "
             "pytorch_half_pixel), Upsample (nearest), GroupNormalization, "
             "InstanceNormalization and torch's GroupNorm pattern")


def _oi():
    return sys.modules[__package__ + ".onnx_import"]


def image_input(name, shape, dim) -> tuple:
    """The per-sample shape (C, H, W) of an image input x [B, C, H, W]."""
    rest = shape[1:]
    if any(d == "B" or not isinstance(d, int) or d < 1 for d in rest):
        raise ConversionError(f"input {name!r} has shape {_oi()._fmt(shape)}; an image x needs "
                              f"fixed C, H and W")
    if dim is not None and int(np.prod(rest)) != dim:
        raise ConversionError(f"input {name!r} holds {int(np.prod(rest))} values per sample but "
                              f"dim={dim} was given")
    return tuple(int(d) for d in rest)


def _per_sample(shape) -> bool:
    return bool(shape) and shape[0] == "B" and "B" not in shape[1:]


def broadcast_flat(a_shape, b_shape, where):
    """The shape of an elementwise op on two tensors; beyond [batch, features] rows, only where
    the flat views broadcast the same way (each operand full-size or one value per row)."""
    oi = _oi()
    shape = oi._broadcast(a_shape, b_shape, where)
    try:
        return oi._check_row_shape(shape, where)
    except ConversionError:
        w = oi._width(shape)
        if _per_sample(shape) and all(oi._width(s) in (1, w) for s in (a_shape, b_shape)):
            return shape
        raise


def broadcast_constant(a_shape, c, where):
    """(shape, values) of tensor ⊙ constant; a constant that broadcasts over an image tensor in
    other ways than a row (γ [C, 1, 1]) is expanded to the full per-sample shape."""
    oi = _oi()
    shape = oi._broadcast(a_shape, c.shape, where)
    arr = np.asarray(c.arr, dtype=np.float64)
    try:
        return oi._check_row_shape(shape, where), arr
    except ConversionError:
        if not _per_sample(shape) or oi._width(a_shape) not in (1, oi._width(shape)):
            raise
    full = np.broadcast_to(arr.reshape((1,) * max(0, len(shape) - arr.ndim) + arr.shape),
                           tuple(1 if d == "B" else d for d in shape))
    return shape, np.ascontiguousarray(full).reshape(-1)


# ------------------------------------------------------------------------------ helpers

def _image_val(imp, v, where):
    v = imp.need(v, where)
    if isinstance(v, _oi()._Const):
        raise ConversionError(f"{where}: the image input is a constant")
    if len(v.shape) != 4 or not _per_sample(v.shape):
        raise ConversionError(f"{where}: input has shape {_oi()._fmt(v.shape)}; expected an "
                              f"image [batch, C, H, W]")
    # The .sif tensor must hold the image shape (a free Reshape when a reshape left it flat or
    # in another layout, e.g. attention's [heads, d, H*W] read back as [C, H, W]).
    tid = imp._shaped(v, where)
    return v if tid == v.tid else _oi()._Val(tid, v.shape, _oi()._identity_form(tid))


def _padded_val(imp, v, where):
    """An image tensor, or a zero Pad of one (torch writes Pad before AveragePool with
    count_include_pad and sometimes before Conv): (value, [t, l, b, r] of the Pad)."""
    oi = _oi()
    if isinstance(v, oi._Val) and v.tid is None and v.ln is not None and v.ln[0] == "pad":
        _, tid, pads, shape = v.ln
        return oi._Val(tid, shape, oi._identity_form(tid)), pads
    return _image_val(imp, v, where), [0, 0, 0, 0]


def _add_pads(a, b):
    return [x + y for x, y in zip(a, b)]


def op_Pad(self, node, ins, where):
    oi = _oi()
    a = _image_val(self, ins[0], where)
    mode = _s(oi._attr(node, "mode", b"constant"))
    pads = _ints(node, "pads")
    if pads is None:
        pads = [int(v) for v in _const(ins[1] if len(ins) > 1 else None, where,
                                       "pads").reshape(-1)]
    value = oi._attr(node, "value", 0.0)
    if len(ins) > 2 and ins[2] is not None:
        value = float(_const(ins[2], where, "the pad value").reshape(-1)[0])
    if len(ins) > 3 and ins[3] is not None:
        raise ConversionError(f"{where}: Pad with axes is not supported")
    if mode != "constant" or value != 0 or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) \
            or min(pads) < 0:
        raise ConversionError(f"{where}: only zero padding of H and W is supported (as the "
                              f"padding of a following Conv or AveragePool)")
    p = [pads[2], pads[3], pads[6], pads[7]]
    shape = a.shape[:2] + (a.shape[2] + p[0] + p[2], a.shape[3] + p[1] + p[3])
    return oi._Val(None, shape, None, ("pad", a.tid, p, a.shape), where)


def _const(v, where, what) -> Optional[np.ndarray]:
    if v is None:
        return None
    if not isinstance(v, _oi()._Const):
        raise ConversionError(f"{where}: {what} must be a constant (an initializer)")
    arr = np.asarray(v.arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConversionError(f"{where}: {what} holds NaN or Inf values")
    return arr


def _ints(node, name, default=None):
    v = _oi()._attr(node, name, default)
    return None if v is None else [int(a) for a in v]


def _no_auto_pad(node, where):
    mode = _oi()._attr(node, "auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("NOTSET", "VALID"):
        raise ConversionError(f"{where}: auto_pad {mode} is not supported; export with explicit "
                              f"padding")


def _pads(node, where):
    pads = _ints(node, "pads")
    if pads is None:
        return [0, 0, 0, 0]
    if len(pads) != 4:
        raise ConversionError(f"{where}: pads {pads} are not 2-D [top, left, bottom, right]")
    return pads


def _emit(imp, node_ir: Node, a, where):
    """Emits an image node reading tensor a and returns its value with the output shape."""
    in_shape = tuple(a.shape[1:])
    out = image_ops.output_shape(node_ir, in_shape, where)
    tid = imp.emit(node_ir)
    return _oi()._Val(tid, ("B",) + tuple(out), _oi()._identity_form(tid))


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


# ------------------------------------------------------------------------------ handlers

def op_Conv(self, node, ins, where):
    a, extra = _padded_val(self, ins[0], where)
    w = _const(ins[1], where, "the weight")
    b = _const(ins[2] if len(ins) > 2 else None, where, "the bias")
    if w is None or w.ndim != 4:
        raise ConversionError(f"{where}: only 2-D convolutions (4-D weights) are supported")
    _no_auto_pad(node, where)
    n = Node("conv2d", [a.tid], name=node.name, weight=w, bias=b,
             kernel=_ints(node, "kernel_shape", list(w.shape[2:])),
             strides=_ints(node, "strides"), pads=_add_pads(_pads(node, where), extra),
             dilations=_ints(node, "dilations"), groups=int(_oi()._attr(node, "group", 1)))
    return _emit(self, n, a, where)


def op_ConvTranspose(self, node, ins, where):
    a = _image_val(self, ins[0], where)
    w = _const(ins[1], where, "the weight")
    b = _const(ins[2] if len(ins) > 2 else None, where, "the bias")
    if w is None or w.ndim != 4:
        raise ConversionError(f"{where}: only 2-D transposed convolutions are supported")
    _no_auto_pad(node, where)
    n = Node("conv_transpose2d", [a.tid], name=node.name, weight=w, bias=b,
             kernel=_ints(node, "kernel_shape", list(w.shape[2:])),
             strides=_ints(node, "strides"), pads=_pads(node, where),
             dilations=_ints(node, "dilations"), output_padding=_ints(node, "output_padding"),
             groups=int(_oi()._attr(node, "group", 1)))
    v = _emit(self, n, a, where)
    want = _ints(node, "output_shape")
    if want is not None and list(want[-2:]) != list(v.shape[2:]):
        raise ConversionError(f"{where}: output_shape {want} differs from the size the pads give "
                              f"{list(v.shape[2:])}; export with explicit pads")
    return v


def _pool(self, node, ins, where, kind):
    a, extra = _padded_val(self, ins[0], where)
    include = bool(_oi()._attr(node, "count_include_pad", 0))
    if any(extra):
        # Zero padding counts in an average (count_include_pad) but would change a maximum.
        if kind == "max" or (any(_pads(node, where)) and not include):
            raise ConversionError(f"{where}: a zero Pad before {node.op_type} is supported only "
                                  f"for average pooling that counts padded cells")
        include = True
    if len(node.output) > 1 and node.output[1]:
        raise ConversionError(f"{where}: MaxPool's indices output is not supported")
    _no_auto_pad(node, where)
    kernel = _ints(node, "kernel_shape")
    if kernel is None or len(kernel) != 2:
        raise ConversionError(f"{where}: only 2-D pooling is supported")
    n = Node("pool2d", [a.tid], name=node.name, pool=kind, kernel=kernel,
             strides=_ints(node, "strides"), pads=_add_pads(_pads(node, where), extra),
             dilations=_ints(node, "dilations") if kind == "max" else None,
             count_include_pad=include)
    v = _emit(self, n, a, where)
    if _oi()._attr(node, "ceil_mode", 0):
        # Ceil mode adds a last window where the floor formula has none: refuse that case only.
        k, s, p, d = image_ops.window(n, where)
        for ax in range(2):
            extent = a.shape[2 + ax] + p[ax] + p[ax + 2] - d[ax] * (k[ax] - 1) - 1
            if extent % s[ax]:
                raise ConversionError(f"{where}: ceil_mode changes the output size; export with "
                                      f"ceil_mode=False")
    return v


def op_AveragePool(self, node, ins, where):
    return _pool(self, node, ins, where, "average")


def op_MaxPool(self, node, ins, where):
    return _pool(self, node, ins, where, "max")


def op_GlobalAveragePool(self, node, ins, where):
    a = _image_val(self, ins[0], where)
    n = Node("pool2d", [a.tid], name=node.name, pool="average",
             kernel=[int(a.shape[2]), int(a.shape[3])])
    return _emit(self, n, a, where)


def _resize_to(self, a, out_hw, mode, where, name):
    _, c, h, w = a.shape
    n = Node("resize", [a.tid], name=name, resize=mode, shape=[int(c)] + [int(d) for d in out_hw])
    return _emit(self, n, a, where)


def _check_scales(a, scales, out_hw, where):
    for ax in range(2):
        if abs(out_hw[ax] / a.shape[2 + ax] - scales[ax]) > 1e-6 * scales[ax]:
            raise ConversionError(f"{where}: scale {scales[ax]} does not map {a.shape[2 + ax]} "
                                  f"cells onto a whole number of outputs; give sizes instead")


def op_Resize(self, node, ins, where):
    a = _image_val(self, ins[0], where)
    mode = _s(_oi()._attr(node, "mode", b"nearest"))
    ctm = _s(_oi()._attr(node, "coordinate_transformation_mode", b"half_pixel"))
    if _oi()._attr(node, "antialias", 0):
        raise ConversionError(f"{where}: antialiased Resize is not supported")
    if mode == "nearest":
        nearest = _s(_oi()._attr(node, "nearest_mode", b"round_prefer_floor"))
        if ctm != "asymmetric" or nearest != "floor":
            raise ConversionError(f"{where}: nearest Resize with coordinate_transformation_mode "
                                  f"{ctm!r} and nearest_mode {nearest!r}; supported: "
                                  f"'asymmetric' with 'floor' (PyTorch's nearest)")
        kind = "nearest"
    elif mode == "linear":
        if ctm not in ("half_pixel", "pytorch_half_pixel"):
            raise ConversionError(f"{where}: linear Resize with coordinate_transformation_mode "
                                  f"{ctm!r}; supported: half_pixel/pytorch_half_pixel "
                                  f"(align_corners=False)")
        kind = "bilinear"
    else:
        raise ConversionError(f"{where}: Resize mode {mode!r} is not supported (nearest, linear)")
    scales = _const(ins[2] if len(ins) > 2 else None, where, "scales")
    sizes = ins[3] if len(ins) > 3 else None
    if sizes is not None:
        if not isinstance(sizes, _oi()._Const):
            raise ConversionError(f"{where}: Resize sizes must be computable at conversion time")
        sz = [int(v) for v in np.asarray(sizes.arr).reshape(-1)]
        if len(sz) != 4 or sz[1] != a.shape[1] or sz[0] not in (_oi().BSYM, 1) and \
                sz[0] != a.shape[0]:
            raise ConversionError(f"{where}: Resize sizes {sz} must keep batch and channels")
        out_hw = sz[2:]
    elif scales is not None and scales.size == 4:
        s = scales.reshape(-1)
        if s[0] != 1 or s[1] != 1:
            raise ConversionError(f"{where}: Resize scales {s.tolist()} must keep batch and "
                                  f"channels")
        out_hw = [int(np.floor(a.shape[2] * s[2])), int(np.floor(a.shape[3] * s[3]))]
        _check_scales(a, s[2:], out_hw, where)
    else:
        raise ConversionError(f"{where}: Resize needs constant scales or sizes for [B, C, H, W]")
    if ctm == "pytorch_half_pixel" and kind == "bilinear" and min(out_hw) == 1:
        raise ConversionError(f"{where}: pytorch_half_pixel to an output of size 1 is not "
                              f"supported")
    return _resize_to(self, a, out_hw, kind, where, node.name)


def op_Upsample(self, node, ins, where):
    a = _image_val(self, ins[0], where)
    mode = _s(_oi()._attr(node, "mode", b"nearest"))
    if mode != "nearest":
        raise ConversionError(f"{where}: Upsample mode {mode!r} uses asymmetric coordinates, "
                              f"which differ from PyTorch's align_corners=False; export with "
                              f"opset >= 11 (Resize)")
    s = _const(ins[1] if len(ins) > 1 else None, where, "scales")
    if s is None:
        s = np.asarray(_oi()._attr(node, "scales"), dtype=np.float64)
    s = s.reshape(-1)
    if s.size != 4 or s[0] != 1 or s[1] != 1:
        raise ConversionError(f"{where}: Upsample scales must be [1, 1, sh, sw]")
    out_hw = [int(np.floor(a.shape[2] * s[2])), int(np.floor(a.shape[3] * s[3]))]
    _check_scales(a, s[2:], out_hw, where)
    return _resize_to(self, a, out_hw, "nearest", where, node.name)


def _affine(scale, bias, groups, channels, where):
    """γ and β as [C] (None when the identity), from [G] or [C] values."""
    out = []
    for arr, neutral, what in ((scale, 1.0, "scale"), (bias, 0.0, "bias")):
        if arr is None:
            out.append(None)
            continue
        arr = arr.reshape(-1)
        if arr.size == groups and groups != channels:
            arr = np.repeat(arr, channels // groups)
        if arr.size != channels:
            raise ConversionError(f"{where}: {what} has {arr.size} values, expected {groups} or "
                                  f"{channels}")
        out.append(None if np.all(arr == neutral) else arr)
    return out


def _group_norm(self, a_tid, channels, groups, scale, bias, eps, name, where):
    if groups < 1 or channels % groups:
        raise ConversionError(f"{where}: {groups} groups do not divide {channels} channels")
    gamma, beta = _affine(scale, bias, groups, channels, where)
    return self.emit(Node("groupnorm", [a_tid], name=name, groups=groups, gamma=gamma,
                          beta=beta, epsilon=eps))


def op_GroupNormalization(self, node, ins, where):
    a = _image_val(self, ins[0], where)
    groups = int(_oi()._attr(node, "num_groups", 0))
    scale = _const(ins[1] if len(ins) > 1 else None, where, "scale")
    bias = _const(ins[2] if len(ins) > 2 else None, where, "bias")
    tid = _group_norm(self, a.tid, a.shape[1], groups, scale, bias,
                      float(_oi()._attr(node, "epsilon", 1e-5)), node.name, where)
    return _oi()._Val(tid, a.shape, _oi()._identity_form(tid))


def op_InstanceNormalization(self, node, ins, where):
    oi = _oi()
    x = ins[0]
    scale = _const(ins[1] if len(ins) > 1 else None, where, "scale")
    bias = _const(ins[2] if len(ins) > 2 else None, where, "bias")
    eps = float(oi._attr(node, "epsilon", 1e-5))
    if isinstance(x, oi._Val) and x.tid is None and x.ln is not None and x.ln[0] == "gn_view":
        # torch's nn.GroupNorm: [B, C, H, W] viewed as [B, G, -1], one "instance" per group.
        _, base, groups, image = x.ln
        tid = _group_norm(self, base, image[1], groups, scale, bias, eps, node.name, where)
        return oi._Val(None, x.shape, None, ("gn_out", tid, image), where)
    a = _image_val(self, x, where)
    tid = _group_norm(self, a.tid, a.shape[1], a.shape[1], scale, bias, eps, node.name, where)
    return oi._Val(tid, a.shape, oi._identity_form(tid))


def _reshape_target(a, s, node, where):
    oi = _oi()
    raw = [int(v) for v in np.asarray(s.arr).reshape(-1)]
    target = []
    for i, v in enumerate(raw):
        if v == 0 and not oi._attr(node, "allowzero", 0) and i < len(a.shape):
            target.append(a.shape[i])
        elif v == oi.BSYM:
            target.append("B")
        else:
            target.append(v)
    if target.count(-1) == 1:
        known = oi._width(tuple(d for d in target if d != -1))
        w = oi._width(a.shape)
        if known and w % known == 0:
            target[target.index(-1)] = w // known
    return tuple(target)


def _wrap_reshape(original):
    def op_Reshape(self, node, ins, where):
        oi = _oi()
        a, s = ins[0], ins[1]
        if isinstance(a, oi._Val) and isinstance(s, oi._Const):
            if a.tid is None and a.ln is not None and a.ln[0] == "gn_out":
                target = _reshape_target(a, s, node, where)
                if target != a.ln[2]:
                    raise ConversionError(f"{where}: a grouped normalisation is read back as "
                                          f"{oi._fmt(target)}, not as its input "
                                          f"{oi._fmt(a.ln[2])}")
                return oi._Val(a.ln[1], target, oi._identity_form(a.ln[1]))
            if a.tid is not None and len(a.shape) == 4 and _per_sample(a.shape):
                target = _reshape_target(a, s, node, where)
                if len(target) == 3 and target[0] == "B" and -1 not in target and \
                        oi._width(target) == oi._width(a.shape) and target[1] > 1:
                    # [B, G, L]: meaningful here only as the input of a grouped normalisation.
                    return oi._Val(None, target, None, ("gn_view", self._shaped(a, where),
                                                        int(target[1]), a.shape), where)
        return original(self, node, ins, where)
    return op_Reshape


def install(importer_class) -> None:
    """Adds the image-op handlers to onnx_import's importer."""
    for name, fn in (("op_Conv", op_Conv), ("op_ConvTranspose", op_ConvTranspose),
                     ("op_AveragePool", op_AveragePool), ("op_MaxPool", op_MaxPool),
                     ("op_GlobalAveragePool", op_GlobalAveragePool), ("op_Resize", op_Resize),
                     ("op_Pad", op_Pad),
                     ("op_Upsample", op_Upsample),
                     ("op_GroupNormalization", op_GroupNormalization),
                     ("op_InstanceNormalization", op_InstanceNormalization)):
        setattr(importer_class, name, fn)
    importer_class.op_Reshape = _wrap_reshape(importer_class.op_Reshape)
