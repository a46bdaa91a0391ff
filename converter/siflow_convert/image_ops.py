# SPDX-License-Identifier: Apache-2.0
"""The image ops of format 1.4 in the converter's IR: output shapes (the runtime's rules, with the
same refusals) and the float64 evaluation the reference interpreter uses.

conv2d, conv_transpose2d, pool2d, resize and groupnorm work on per-sample [C, H, W] tensors in
NCHW order (groupnorm also on [C] and [C, L]); the runtime's ops/*.cc modules are the definition,
docs/format.md the description. Values here are numpy arrays [rows, C, H, W]; tangents are
evaluated as rows·P samples.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .ir import ConversionError

IMAGE_OPS = ("conv2d", "conv_transpose2d", "pool2d", "resize", "groupnorm")
POOL_KINDS = ("average", "max")
RESIZE_MODES = ("nearest", "bilinear")
MAX_EXTENT = 65536


def _pair(v, default, where, field, lo=1):
    v = [default, default] if v is None or len(v) == 0 else [int(a) for a in v]
    if len(v) != 2 or any(not lo <= a <= MAX_EXTENT for a in v):
        raise ConversionError(f"{where}: {field} {v} must be two values in [{lo}, {MAX_EXTENT}]")
    return v


def window(node, where):
    """(kernel, strides, pads [t, l, b, r], dilations) of a conv or pool node, defaults filled."""
    if node.kernel is None or len(node.kernel) != 2:
        raise ConversionError(f"{where}: kernel must be [kh, kw]")
    kernel = _pair(node.kernel, 1, where, "kernel")
    strides = _pair(node.strides, 1, where, "strides")
    dil = _pair(node.dilations, 1, where, "dilations")
    pads = [0, 0, 0, 0] if not node.pads else [int(p) for p in node.pads]
    if len(pads) != 4 or any(not 0 <= p <= MAX_EXTENT for p in pads):
        raise ConversionError(f"{where}: pads {pads} must be four values in [0, {MAX_EXTENT}]")
    return kernel, strides, pads, dil


def _outputs(extent, lo, hi, k, s, d):
    span = d * (k - 1) + 1
    return 0 if extent + lo + hi < span else (extent + lo + hi - span) // s + 1


def _image(shape, where):
    if shape is None or len(shape) != 3:
        raise ConversionError(f"{where}: input shape {list(shape or [])} is not an image "
                              f"[C, H, W]")
    return [int(d) for d in shape]


def output_shape(node, in_shape: Tuple[int, ...], where: str) -> Tuple[int, ...]:
    """The per-sample output shape of an image op on input shape `in_shape`."""
    if node.op == "groupnorm":
        c = int(in_shape[0])
        if node.groups < 1 or c % node.groups:
            raise ConversionError(f"{where}: groups = {node.groups} does not divide the {c} "
                                  f"channels")
        for p in (node.gamma, node.beta):
            if p is not None and p.size != c:
                raise ConversionError(f"{where}: gamma/beta have {p.size} values, expected {c}")
        return tuple(in_shape)
    c, h, w = _image(in_shape, where)
    if node.op == "resize":
        if node.resize not in RESIZE_MODES:
            raise ConversionError(f"{where}: unknown resize mode {node.resize!r}")
        if node.shape is None or len(node.shape) != 3 or int(node.shape[0]) != c or \
                min(node.shape) < 1:
            raise ConversionError(f"{where}: output shape {node.shape} must be [{c}, OH, OW]")
        return tuple(int(d) for d in node.shape)
    kernel, strides, pads, dil = window(node, where)
    if node.op == "pool2d":
        if node.pool not in POOL_KINDS:
            raise ConversionError(f"{where}: unknown pool kind {node.pool!r}")
        oh = _outputs(h, pads[0], pads[2], kernel[0], strides[0], dil[0])
        ow = _outputs(w, pads[1], pads[3], kernel[1], strides[1], dil[1])
        cout = c
    else:
        wt = node.weight
        g = int(node.groups)
        if wt is None or wt.ndim != 4 or g < 1 or c % g:
            raise ConversionError(f"{where}: needs a 4-D weight and groups dividing {c} channels")
        if node.op == "conv2d":
            cout = wt.shape[0]
            if list(wt.shape[1:]) != [c // g] + kernel or cout % g:
                raise ConversionError(f"{where}: weight {list(wt.shape)} does not match [Cout, "
                                      f"{c // g}, {kernel[0]}, {kernel[1]}]")
            oh = _outputs(h, pads[0], pads[2], kernel[0], strides[0], dil[0])
            ow = _outputs(w, pads[1], pads[3], kernel[1], strides[1], dil[1])
        else:
            if list(wt.shape[:1]) + list(wt.shape[2:]) != [c] + kernel:
                raise ConversionError(f"{where}: weight {list(wt.shape)} does not match [{c}, "
                                      f"Cout/groups, {kernel[0]}, {kernel[1]}]")
            cout = wt.shape[1] * g
            op = _pair(node.output_padding, 0, where, "output_padding", lo=0)
            oh = (h - 1) * strides[0] - pads[0] - pads[2] + dil[0] * (kernel[0] - 1) + op[0] + 1
            ow = (w - 1) * strides[1] - pads[1] - pads[3] + dil[1] * (kernel[1] - 1) + op[1] + 1
        if node.bias is not None and node.bias.size != cout:
            raise ConversionError(f"{where}: bias has {node.bias.size} values, expected {cout}")
    if oh < 1 or ow < 1:
        raise ConversionError(f"{where}: the output of input [{c}, {h}, {w}] would be empty")
    return (int(cout), int(oh), int(ow))


# ------------------------------------------------------------------------------ evaluation

def _conv(x, w, b, strides, pads, dil, groups):
    n, c, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = _outputs(h, pads[0], pads[2], kh, strides[0], dil[0])
    ow = _outputs(wd, pads[1], pads[3], kw, strides[1], dil[1])
    out = np.zeros((n, cout, oh, ow))
    cog = cout // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dil[0], kx * dil[1]
                patch = xs[:, :, y0:y0 + strides[0] * (oh - 1) + 1:strides[0],
                           x0:x0 + strides[1] * (ow - 1) + 1:strides[1]]
                out[:, g * cog:(g + 1) * cog] += np.einsum(
                    "nchw,oc->nohw", patch, w[g * cog:(g + 1) * cog, :, ky, kx])
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def _conv_transpose(x, w, b, strides, pads, dil, groups, out_shape):
    n, c, h, wd = x.shape
    cin, cog, kh, kw = w.shape
    _, oh, ow = out_shape
    cig = c // groups
    bh = max((h - 1) * strides[0] + dil[0] * (kh - 1) + 1, pads[0] + oh)
    bw = max((wd - 1) * strides[1] + dil[1] * (kw - 1) + 1, pads[1] + ow)
    big = np.zeros((n, cog * groups, bh, bw))
    for g in range(groups):
        xs = x[:, g * cig:(g + 1) * cig]
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dil[0], kx * dil[1]
                big[:, g * cog:(g + 1) * cog, y0:y0 + strides[0] * (h - 1) + 1:strides[0],
                    x0:x0 + strides[1] * (wd - 1) + 1:strides[1]] += np.einsum(
                        "nchw,co->nohw", xs, w[g * cig:(g + 1) * cig, :, ky, kx])
    out = big[:, :, pads[0]:pads[0] + oh, pads[1]:pads[1] + ow].copy()
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def _pool_taps(x, kernel, strides, pads, dil, out_shape, fill):
    """Every window tap as [taps, n, c, oh, ow] (padding = `fill`) and the valid-cell mask."""
    _, oh, ow = out_shape
    pad = ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3]))
    xp = np.pad(x, pad, constant_values=fill)
    mp = np.pad(np.ones(x.shape[2:]), pad[2:])
    taps, masks = [], []
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            y0, x0 = ky * dil[0], kx * dil[1]
            sl = (slice(y0, y0 + strides[0] * (oh - 1) + 1, strides[0]),
                  slice(x0, x0 + strides[1] * (ow - 1) + 1, strides[1]))
            taps.append(xp[(slice(None), slice(None)) + sl])
            masks.append(mp[sl])
    return np.stack(taps), np.stack(masks)


def _resize_matrix(mode, n_in, n_out):
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        if mode == "nearest":
            m[o, o * n_in // n_out] = 1.0
            continue
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        f = src - i0
        m[o, i0] += 1.0 - f
        m[o, i1] += f
    return m


def _linear(node, x, in_shape, out_shape, with_bias):
    """The linear image ops (conv, transposed conv, average pool, resize) on x [n, C, H, W]."""
    b = node.bias if with_bias else None
    if node.op in ("conv2d", "conv_transpose2d"):
        kernel, strides, pads, dil = window(node, "")
        if node.op == "conv2d":
            return _conv(x, node.weight, b, strides, pads, dil, node.groups)
        return _conv_transpose(x, node.weight, b, strides, pads, dil, node.groups, out_shape)
    if node.op == "resize":
        ry = _resize_matrix(node.resize, in_shape[1], out_shape[1])
        rx = _resize_matrix(node.resize, in_shape[2], out_shape[2])
        return np.einsum("oh,nchw,pw->ncop", ry, x, rx)
    kernel, strides, pads, dil = window(node, "")
    taps, masks = _pool_taps(x, kernel, strides, pads, dil, out_shape, 0.0)
    div = float(kernel[0] * kernel[1]) if node.count_include_pad else masks.sum(axis=0)
    return taps.sum(axis=0) / div


def forward(node, x, tangent, in_shape, out_shape, dtype=np.float64):
    """(value [rows, w_out], tangent [rows, P, w_out] or None) of an image node."""
    rows = x.shape[0]
    xs = np.asarray(x, dtype=np.float64).reshape((rows,) + tuple(in_shape))
    ts = None
    if tangent is not None:
        p = tangent.shape[1]
        ts = np.asarray(tangent, dtype=np.float64).reshape((rows * p,) + tuple(in_shape))
    w_out = int(np.prod(out_shape))
    if node.op == "groupnorm":
        g = node.groups
        c = in_shape[0]
        xg = xs.reshape(rows, g, -1)
        mean = xg.mean(axis=2, keepdims=True)
        inv = 1.0 / np.sqrt(((xg - mean) ** 2).mean(axis=2, keepdims=True) + float(
            np.float32(node.epsilon)))
        xhat = ((xg - mean) * inv).reshape(rows, c, -1)
        gamma = np.ones(c) if node.gamma is None else node.gamma.reshape(-1)
        beta = np.zeros(c) if node.beta is None else node.beta.reshape(-1)
        y = (xhat * gamma[None, :, None] + beta[None, :, None]).reshape(rows, w_out)
        ty = None
        if ts is not None:
            p = tangent.shape[1]
            tg = ts.reshape(rows, p, g, -1)
            xh = xhat.reshape(rows, 1, g, -1)
            d = inv[:, None] * (tg - tg.mean(axis=3, keepdims=True) -
                                xh * (xh * tg).mean(axis=3, keepdims=True))
            ty = (d.reshape(rows, p, c, -1) * gamma[None, None, :, None]).reshape(rows, p, w_out)
        return y.astype(dtype), None if ty is None else ty.astype(dtype)
    if node.op == "pool2d" and node.pool == "max":
        kernel, strides, pads, dil = window(node, "")
        taps, _ = _pool_taps(xs, kernel, strides, pads, dil, out_shape, -np.inf)
        idx = np.argmax(taps, axis=0)   # the first maximum in scan order
        y = np.take_along_axis(taps, idx[None], axis=0)[0].reshape(rows, w_out)
        ty = None
        if ts is not None:
            p = tangent.shape[1]
            tt, _ = _pool_taps(ts, kernel, strides, pads, dil, out_shape, 0.0)
            rep = np.repeat(idx, p, axis=0)
            ty = np.take_along_axis(tt, rep[None], axis=0)[0].reshape(rows, p, w_out)
        return y.astype(dtype), None if ty is None else ty.astype(dtype)
    y = _linear(node, xs, in_shape, out_shape, True).reshape(rows, w_out)
    ty = None
    if ts is not None:
        ty = _linear(node, ts, in_shape, out_shape, False).reshape(rows, tangent.shape[1], w_out)
    return y.astype(dtype), None if ty is None else ty.astype(dtype)


def required(graph) -> bool:
    """Whether the graph needs format 1.4 for its image ops or its x shape."""
    return any(n.op in IMAGE_OPS for n in graph.nodes) or \
        (getattr(graph, "x_shape", None) is not None and len(graph.x_shape) > 1)


def node_shape(node) -> Optional[tuple]:
    return None if node.shape is None else tuple(int(d) for d in node.shape)
