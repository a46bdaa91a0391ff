# SPDX-License-Identifier: Apache-2.0
"""ONNX → format 1.4's MatMul between two activations: attention's QKᵀ and AV, with heads.

Installed into onnx_import's importer by `install`: MatMul of two tensors (a constant right
operand stays a dense layer), Einsum with the two-operand batched-product equations attention
written with torch.einsum exports ("bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd", "bci,bcj->bij",
"bij,bcj->bci", ...), and Softmax over the last axis of a per-sample [G, M, N] tensor. A
Transpose that swaps the last two axes of MatMul's right operand becomes the node's
`transpose_b`; a Mul or Div by a scalar constant of a product nothing else reads becomes its
`scale`. Operands keep the batch first and have at most two leading group axes merged into one
(the runtime's [G, M, K] x [G, K, N]); anything else is refused naming the equation or shapes.
"""
from __future__ import annotations

import sys

import numpy as np

from .ir import ConversionError, Node

SUPPORTED = ("MatMul of two tensors [B, (G,) M, K] x [B, (G,) K, N], Einsum of two operands "
             "with the batch letter first and one contracted letter (e.g. bhqd,bhkd->bhqk, "
             "bhqk,bhkd->bhqd, bci,bcj->bij, bij,bcj->bci), Softmax over the last axis of a "
             "[B, G, M, N] tensor")


def _oi():
    return sys.modules[__package__ + ".onnx_import"]


def _consumers(imp, name: str) -> int:
    """How many ONNX node inputs (and graph outputs) read the value `name`."""
    counts = getattr(imp, "_attn_consumers", None)
    if counts is None:
        counts = {}
        for n in imp.g.node:
            for i in n.input:
                counts[i] = counts.get(i, 0) + 1
        for o in imp.g.output:
            counts[o.name] = counts.get(o.name, 0) + 1
        imp._attn_consumers = counts
    return counts.get(name, 0)


def _operand(imp, v, where, what):
    oi = _oi()
    v = imp.need(v, where)
    r = len(v.shape)
    if r not in (3, 4) or v.shape[0] != "B" or "B" in v.shape[1:]:
        raise ConversionError(f"{where}: {what} has shape {oi._fmt(v.shape)}; a product of two "
                              f"activations needs [batch, M, K] or [batch, G, M, K]")
    return v


def _transposed_source(imp, tid):
    """The input of a transpose node that swaps the last two axes of `tid`, or None."""
    if tid is None or tid < 2:
        return None
    n = imp.graph.nodes[tid - 2]
    if n.op != "transpose" or n.perm is None:
        return None
    r = len(n.perm)
    want = list(range(r - 2)) + [r - 1, r - 2]
    return n.inputs[0] if [int(p) for p in n.perm] == want else None


def matmul(imp, a, b, where, name, onnx_out=None):
    """Emits a matmul of per-sample a [.., M, K] and b [.., K, N]; returns the value."""
    oi = _oi()
    a = _operand(imp, a, where, "the left operand")
    b = _operand(imp, b, where, "the right operand")
    if len(a.shape) != len(b.shape) or a.shape[1:-2] != b.shape[1:-2] or \
            a.shape[-1] != b.shape[-2]:
        raise ConversionError(f"{where}: shapes {oi._fmt(a.shape)} and {oi._fmt(b.shape)} do not "
                              f"multiply as batched matrices (no broadcasting of group axes)")
    sa = imp._shaped(a, where)
    sb = imp._shaped(b, where)
    tb = False
    src = _transposed_source(imp, sb)
    if src is not None:
        sb, tb = src, True
    tid = imp.emit(Node("matmul", [sa, sb], name=name, transpose_b=tb))
    if onnx_out is not None:
        imp._attn_products = getattr(imp, "_attn_products", {})
        imp._attn_products[tid] = onnx_out
    shape = a.shape[:-1] + (b.shape[-1],)
    return oi._Val(tid, shape, oi._identity_form(tid))


def _wrap_matmul(original):
    def op_MatMul(self, node, ins, where):
        oi = _oi()
        if isinstance(ins[1], oi._Const) or isinstance(ins[0], oi._Const):
            return original(self, node, ins, where)
        return matmul(self, ins[0], ins[1], where, node.name, node.output[0])
    return op_MatMul


# ------------------------------------------------------------------------------ Einsum

def parse_equation(eq: str, where: str):
    """(left letters, right letters, output letters) of a two-operand einsum equation."""
    raw = eq
    eq = eq.replace(" ", "")
    if "..." in eq or "->" not in eq:
        raise ConversionError(f"{where}: Einsum equation {raw!r} is not supported (needs an "
                              f"explicit '->' output and no '...'); supported: {SUPPORTED}")
    lhs, out = eq.split("->")
    ops = lhs.split(",")
    if len(ops) != 2 or not all(s.isalpha() for s in ops + [out]) or \
            any(len(set(s)) != len(s) for s in ops + [out]):
        raise ConversionError(f"{where}: Einsum equation {raw!r} is not supported (two operands, "
                              f"each letter once per operand); supported: {SUPPORTED}")
    return ops[0], ops[1], out


def einsum_plan(eq: str, where: str):
    """How an attention einsum maps onto one matmul: (left operand index, left permutation,
    right operand index, transpose_b) where the left operand, permuted, is [b, G.., M, K] and
    the right one is [b, G.., K, N] ([b, G.., N, K] with transpose_b), giving the output in the
    equation's order. Refuses every other equation, naming it."""
    a, b, out = parse_equation(eq, where)

    def refuse(why):
        raise ConversionError(f"{where}: Einsum equation {eq!r} is not supported ({why}); "
                              f"supported: {SUPPORTED}")

    if len(out) < 3 or not (a[0] == b[0] == out[0]):
        refuse("the batch letter must come first in both operands and the output, and the "
               "output needs two matrix axes")
    contracted = [c for c in a if c in b and c not in out]
    groups = [c for c in out[1:-2]]
    if len(contracted) != 1:
        refuse(f"{len(contracted)} contracted letters; exactly one is supported")
    k = contracted[0]
    if any(c not in a or c not in b for c in groups) or len(groups) > 1:
        refuse("the output's leading axes after the batch must be one group letter shared by "
               "both operands")
    x, y = out[-2], out[-1]
    if x in groups or y in groups or (x in a) == (y in a) or (x in b) == (y in b):
        refuse("each of the output's two matrix letters must come from a different operand")
    for s in (a, b):
        if set(s) - set(out) - {k}:
            refuse(f"operand {s!r} has a letter that is summed without being contracted")
        if list(s[1:1 + len(groups)]) != groups:
            refuse(f"operand {s!r} must list the group letters {groups} right after the batch")
    left, right = (0, 1) if x in a else (1, 0)
    ls, rs = (a, b)[left], (a, b)[right]
    lm = ls[1 + len(groups):]
    rm = rs[1 + len(groups):]
    # Left operand as [.., x, k] (a transpose of its matrix axes when written [.., k, x]).
    left_swap = lm == k + x
    if lm not in (x + k, k + x):
        refuse(f"operand {ls!r} does not hold the matrix axes {x}{k}")
    if rm not in (k + y, y + k):
        refuse(f"operand {rs!r} does not hold the matrix axes {k}{y}")
    return left, left_swap, right, rm == y + k


def op_Einsum(self, node, ins, where):
    oi = _oi()
    eq = oi._attr(node, "equation")
    eq = eq.decode() if isinstance(eq, bytes) else str(eq)
    if len(ins) != 2:
        raise ConversionError(f"{where}: Einsum with {len(ins)} operands ({eq!r}) is not "
                              f"supported; supported: {SUPPORTED}")
    left, left_swap, right, tb = einsum_plan(eq, where)
    la = _operand(self, ins[left], where, "an operand")
    ra = _operand(self, ins[right], where, "an operand")
    if len(la.shape) != len(parse_equation(eq, where)[left]) or \
            len(ra.shape) != len(parse_equation(eq, where)[right]):
        raise ConversionError(f"{where}: Einsum {eq!r} does not match the operand ranks "
                              f"{oi._fmt(la.shape)} and {oi._fmt(ra.shape)}")
    if left_swap:
        src = self._shaped(la, where)
        r = len(la.shape) - 1
        perm = list(range(r - 2)) + [r - 1, r - 2]
        tid = self.emit(Node("transpose", [src], name=f"{node.name} (left)", perm=perm))
        la = oi._Val(tid, la.shape[:-2] + (la.shape[-1], la.shape[-2]), oi._identity_form(tid))
    sa, sb = self._shaped(la, where), self._shaped(ra, where)
    if la.shape[1:-2] != ra.shape[1:-2]:
        raise ConversionError(f"{where}: Einsum {eq!r}: group axes of {oi._fmt(la.shape)} and "
                              f"{oi._fmt(ra.shape)} differ")
    kb = ra.shape[-1] if tb else ra.shape[-2]
    n = ra.shape[-2] if tb else ra.shape[-1]
    if la.shape[-1] != kb:
        raise ConversionError(f"{where}: Einsum {eq!r}: contracted extents {la.shape[-1]} and "
                              f"{kb} differ")
    tid = self.emit(Node("matmul", [sa, sb], name=node.name, transpose_b=tb))
    self._attn_products = getattr(self, "_attn_products", {})
    self._attn_products[tid] = node.output[0]
    return oi._Val(tid, la.shape[:-1] + (n,), oi._identity_form(tid))


# ------------------------------------------------------------------------------ scale, softmax

def _scaled(self, node, ins, divide: bool):
    """The product times (or divided by) a scalar constant, as the matmul's scale when nothing
    else reads the product; None otherwise."""
    oi = _oi()
    if len(ins) != 2:
        return None
    for v, c, i in ((ins[0], ins[1], 0), (ins[1], ins[0], 1)):
        if divide and i == 1:
            break
        if not (isinstance(v, oi._Val) and isinstance(c, oi._Const)) or v.tid is None:
            continue
        out = getattr(self, "_attn_products", {}).get(v.tid)
        arr = np.asarray(c.arr, np.float64).reshape(-1)
        if out is None or arr.size != 1 or node.input[i] != out or _consumers(self, out) != 1:
            continue
        f = 1.0 / arr[0] if divide else arr[0]
        if arr[0] == 0 or not np.isfinite(f) or v.tid != len(self.graph.nodes) + 1:
            continue
        mm = self.graph.nodes[v.tid - 2]
        mm.scale = float(mm.scale * f)
        self._attn_products[v.tid] = node.output[0]
        return oi._Val(v.tid, v.shape, oi._identity_form(v.tid))
    return None


def _wrap_scale(original, divide):
    def handler(self, node, ins, where):
        v = _scaled(self, node, ins, divide)
        return v if v is not None else original(self, node, ins, where)
    return handler


def _wrap_softmax(original):
    def op_Softmax(self, node, ins, where):
        oi = _oi()
        a = ins[0]
        if isinstance(a, oi._Val) and a.tid is not None and 2 <= len(a.shape) <= 4 and \
                a.shape[0] == "B" and "B" not in a.shape[1:]:
            # The last axis (before opset 13 Softmax flattens from `axis` on, which for the last
            # axis is the same groups).
            opset = max([o.version for o in self.model.opset_import
                         if o.domain in ("", "ai.onnx")] or [13])
            axis = oi._attr(node, "axis", -1 if opset >= 13 else 1)
            if axis % len(a.shape) == len(a.shape) - 1:
                # On the tensor with its ONNX shape: a product's [G, M, N] read as [B, w] (or
                # the reverse) would group other values.
                src = self._shaped(a, where)
                tid = self.emit(Node("softmax", [src], name=node.name, axis=-1))
                return oi._Val(tid, a.shape, oi._identity_form(tid))
        return original(self, node, ins, where)
    return op_Softmax


def install(importer_class) -> None:
    """Adds MatMul of two tensors, Einsum, the product's scale and shaped Softmax."""
    importer_class.op_MatMul = _wrap_matmul(importer_class.op_MatMul)
    importer_class.op_Einsum = op_Einsum
    importer_class.op_Mul = _wrap_scale(importer_class.op_Mul, False)
    importer_class.op_Div = _wrap_scale(importer_class.op_Div, True)
    importer_class.op_Softmax = _wrap_softmax(importer_class.op_Softmax)
