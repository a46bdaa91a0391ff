# SPDX-License-Identifier: Apache-2.0
"""ONNX → format 1.4: the two U-Net idioms on image tensors that are not flat-row operations.

Installed into onnx_import's importer by `install`:
* a per-channel tensor [B, C, 1, 1] (a time or label embedding, `e[:, :, None, None]`) added
  to, subtracted from or multiplied with an image [B, C, H, W]: the small operand is widened to
  [C, H, W] by a nearest Resize (each output cell reads the one input cell; JVP the same copy),
  then the op is the ordinary full-size elementwise one;
* a Reshape to [B, G, L] that onnx_image held back as a possible GroupNorm view, read by any
  other op, is the plain (free) reshape it is;
* Concat along the channel axis of [B, C_i, H, W] tensors with equal H and W (skip
  connections): in NCHW order that is the concatenation of the flat rows, one Concat node.
"""
from __future__ import annotations

import sys

from .ir import ConversionError, Node


def _oi():
    return sys.modules[__package__ + ".onnx_import"]


def _image(v) -> bool:
    oi = _oi()
    return isinstance(v, oi._Val) and v.tid is not None and len(v.shape) == 4 and \
        v.shape[0] == "B" and "B" not in v.shape[1:]


def _widen_channels(imp, small, shape, where, name):
    """small [B, C, 1, 1] as [B, C, H, W] by a nearest Resize."""
    oi = _oi()
    src = imp._shaped(small, where)
    tid = imp.emit(Node("resize", [src], name=f"{name} (per-channel broadcast)", resize="nearest",
                        shape=[int(d) for d in shape[1:]]))
    return oi._Val(tid, tuple(shape), oi._identity_form(tid))


def _per_channel(ins):
    """(index of the [B, C, 1, 1] operand, full shape) when one operand broadcasts per channel
    over the other image, else None."""
    if len(ins) != 2 or not (_image(ins[0]) and _image(ins[1])):
        return None
    for i in (0, 1):
        s, f = ins[i].shape, ins[1 - i].shape
        if s[1] == f[1] and s[2:] == (1, 1) and f[2:] != (1, 1):
            return i, f
    return None


def _wrap_elementwise(original):
    def handler(self, node, ins, where):
        pc = _per_channel(ins)
        if pc is None:
            return original(self, node, ins, where)
        i, full = pc
        ins = list(ins)
        ins[i] = _widen_channels(self, ins[i], full, where, node.name)
        return original(self, node, ins, where)
    return handler


def _wrap_concat(original):
    def op_Concat(self, node, ins, where):
        oi = _oi()
        vals = [v for v in ins if v is not None]
        axis = oi._attr(node, "axis")
        if not vals or not all(_image(v) for v in vals) or axis % 4 != 1:
            return original(self, node, ins, where)
        hw = vals[0].shape[2:]
        if any(v.shape[2:] != hw for v in vals):
            raise ConversionError(f"{where}: channel Concat of {[oi._fmt(v.shape) for v in vals]}"
                                  f": the spatial extents differ")
        if len(vals) > 64:
            raise ConversionError(f"{where}: Concat of {len(vals)} tensors (at most 64)")
        tid = self.emit(Node("concat", [v.tid for v in vals], name=node.name))
        shape = ("B", sum(int(v.shape[1]) for v in vals)) + tuple(hw)
        return oi._Val(tid, shape, oi._identity_form(tid))
    return op_Concat


def _wrap_need(original):
    def need(v, where):
        oi = _oi()
        if isinstance(v, oi._Val) and v.tid is None and v.ln is not None and \
                v.ln[0] == "gn_view":
            # A Reshape to [B, G, L] that no InstanceNormalization consumed (attention's
            # [B, C, H*W] token view, say) is a plain free reshape of its input.
            return oi._Val(v.ln[1], v.shape, oi._identity_form(v.ln[1]))
        return original(v, where)
    return staticmethod(need)


def install(importer_class) -> None:
    importer_class.need = _wrap_need(importer_class.need)
    for op in ("op_Add", "op_Mul", "op_Sub"):
        setattr(importer_class, op, _wrap_elementwise(getattr(importer_class, op)))
    importer_class.op_Concat = _wrap_concat(importer_class.op_Concat)
