# SPDX-License-Identifier: Apache-2.0
"""A float64 numpy reference of everything a .sif model computes (docs/format.md, docs/math.md).

- the graph: every op and unary kind exactly as docs/format.md defines it, with forward-mode
  JVPs so the divergence is exact (all d tangent directions pushed through at once);
- the interpolant a(t), b(t) and their derivatives; base log-densities; normalisation;
- the fixed-step integrators euler, heun, midpoint, rk4, rk4-38 on the runtime's time grid,
  forward and backward, carrying l = integral of the divergence with the same stage weights;
- decode / encode / log_prob / sample with the runtime's sign conventions, and Philox4x32-10
  with the draw layout of docs/math.md, so `siflow sample --seed S` is reproduced draw for draw;
- make_test_vectors: the references and tolerances embedded in a file for `siflow validate`.

The runtime reads weights as float32 (or fp16): evaluate `sif_io.stored(model)` to compare with
it. As in the runtime, the network sees the time rounded to float32 (`round_time=True`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from . import conditioning, image_ops, ir

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
GELU_TANH_C = math.sqrt(2.0 / math.pi)
METHODS = ("euler", "heun", "midpoint", "rk4", "rk4-38")

_erf = np.vectorize(math.erf, otypes=[np.float64])


# ------------------------------------------------------------------------------ unary kinds

def _sigmoid(x):
    """1/(1 + e^-x) without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def unary_forward(kind: str, x: np.ndarray, alpha: float) -> np.ndarray:
    """f(x) for a UnaryKind, in float64 (docs/format.md, "Unary")."""
    x = np.asarray(x, dtype=np.float64)
    neg = np.minimum(x, 0.0)   # keeps exp() finite on the branch that is not taken
    if kind == "identity":
        return x.copy()
    if kind == "relu":
        return np.where(x > 0, x, 0.0)
    if kind == "leaky_relu":
        return np.where(x > 0, x, alpha * x)
    if kind == "elu":
        return np.where(x > 0, x, alpha * np.expm1(neg))
    if kind == "selu":
        return SELU_LAMBDA * np.where(x > 0, x, SELU_ALPHA * np.expm1(neg))
    if kind == "tanh":
        return np.tanh(x)
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "silu":
        return x * _sigmoid(x)
    if kind == "gelu_erf":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(GELU_TANH_C * (x + 0.044715 * x ** 3)))
    if kind == "softplus":
        return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(neg)))
    if kind == "sin":
        return np.sin(x)
    if kind == "cos":
        return np.cos(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "log":
            return np.log(x)
        if kind == "sqrt":
            return np.sqrt(x)
        if kind == "reciprocal":
            return 1.0 / x
        if kind == "abs":
            return np.abs(x)
        if kind == "hard_swish":
            return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
        if kind == "mish":
            return x * np.tanh(unary_forward("softplus", x, alpha))
    raise ir.ConversionError(f"unknown unary kind {kind!r}; supported: {', '.join(ir.UNARY_KINDS)}")


def unary_derivative(kind: str, x: np.ndarray, alpha: float) -> np.ndarray:
    """f'(x); at x = 0 the piecewise kinds take the left branch (docs/format.md)."""
    x = np.asarray(x, dtype=np.float64)
    neg = np.minimum(x, 0.0)
    if kind == "identity":
        return np.ones_like(x)
    if kind == "relu":
        return np.where(x > 0, 1.0, 0.0)
    if kind == "leaky_relu":
        return np.where(x > 0, 1.0, alpha)
    if kind == "elu":
        return np.where(x > 0, 1.0, alpha * np.exp(neg))
    if kind == "selu":
        return SELU_LAMBDA * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(neg))
    if kind == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if kind == "sigmoid":
        s = _sigmoid(x)
        return s * (1.0 - s)
    if kind == "silu":
        s = _sigmoid(x)
        return s + x * s * (1.0 - s)
    if kind == "gelu_erf":
        return (0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
                + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))
    if kind == "gelu_tanh":
        th = np.tanh(GELU_TANH_C * (x + 0.044715 * x ** 3))
        return (0.5 * (1.0 + th)
                + 0.5 * x * (1.0 - th * th) * GELU_TANH_C * (1.0 + 3 * 0.044715 * x * x))
    if kind == "softplus":
        return _sigmoid(x)
    if kind == "sin":
        return np.cos(x)
    if kind == "cos":
        return -np.sin(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "log":
            return 1.0 / x
        if kind == "sqrt":
            return 0.5 / np.sqrt(x)
        if kind == "reciprocal":
            return -1.0 / (x * x)
        if kind == "abs":
            return np.sign(x)
        if kind == "hard_swish":   # PyTorch's: 0 below -3, (2x + 3)/6 on [-3, 3], 1 above
            return np.where(x < -3.0, 0.0, np.where(x <= 3.0, (2.0 * x + 3.0) / 6.0, 1.0))
        if kind == "mish":
            th = np.tanh(unary_forward("softplus", x, alpha))
            return th + x * (1.0 - th * th) * _sigmoid(x)
    raise ir.ConversionError(f"unknown unary kind {kind!r}; supported: {', '.join(ir.UNARY_KINDS)}")


# ------------------------------------------------------------------------------------ graph

def _layernorm(x, tangent, node: ir.Node):
    """LayerNorm over the feature axis with the biased variance, and its JVP."""
    w = x.shape[1]
    mean = x.mean(axis=1, keepdims=True)
    c = x - mean
    var = (c * c).sum(axis=1, keepdims=True) / w
    s = 1.0 / np.sqrt(var + node.epsilon)
    gamma = np.ones(w) if node.gamma is None else node.gamma.reshape(-1)
    beta = np.zeros(w) if node.beta is None else node.beta.reshape(-1)
    y = c * s * gamma + beta
    if tangent is None:
        return y, None
    dc = tangent - tangent.mean(axis=2, keepdims=True)               # [B, P, w]
    dvar = 2.0 * (c[:, None, :] * dc).sum(axis=2, keepdims=True) / w  # [B, P, 1]
    ds = -0.5 * s[:, None, :] ** 3 * dvar
    dy = (dc * s[:, None, :] + c[:, None, :] * ds) * gamma
    return y, dy


def _binary(node: ir.Node, a, ta, b, tb):
    """Add/Mul with the format's broadcasting ([B, 1] and [1, n] operands)."""
    if node.op == "add":
        y = a + b
        if ta is None and tb is None:
            return y, None
        ty = (0.0 if ta is None else ta) + (0.0 if tb is None else tb)
        return y, np.broadcast_to(ty, (y.shape[0], np.shape(ty)[1], y.shape[1])).copy()
    y = a * b
    if ta is None and tb is None:
        return y, None
    ty = 0.0
    if ta is not None:
        ty = ty + ta * b[:, None, :]
    if tb is not None:
        ty = ty + a[:, None, :] * tb
    return y, np.broadcast_to(ty, (y.shape[0], ty.shape[1], y.shape[1])).copy()


def _layout(node: ir.Node, x, in_shape):
    """A layout op on rows x [..., w] (values [B, w] or tangents [B, P, w]) of per-sample shape
    in_shape: reshape keeps the flat values, transpose permutes the axes, slice keeps a range."""
    if node.op == "reshape":
        return x.copy()
    lead = x.shape[:-1]
    s = x.reshape(lead + tuple(in_shape))
    k = len(lead)
    if node.op == "transpose":
        s = np.transpose(s, tuple(range(k)) + tuple(k + int(p) for p in node.perm))
    else:
        axis = node.axis + len(in_shape) if node.axis < 0 else node.axis
        idx = [slice(None)] * s.ndim
        idx[k + axis] = slice(node.start, node.end)
        s = s[tuple(idx)]
    return np.ascontiguousarray(s).reshape(lead + (-1,))


def _math_forward(node: ir.Node, ins, tin, dtype):
    """Format 1.4's div, pow, clip, reduce and softmax on flat [B, w] tensors (docs/format.md):
    each evaluated in float64 and rounded once to dtype, as the runtime does."""
    x = ins[0].astype(np.float64)
    tx = None if tin[0] is None else tin[0].astype(np.float64)
    err = np.errstate(divide="ignore", invalid="ignore", over="ignore")
    if node.op == "div":
        if node.constant is not None:
            b, tb = node.constant.reshape(1, -1).astype(dtype).astype(np.float64), None
        else:
            b = ins[1].astype(np.float64)
            tb = None if tin[1] is None else tin[1].astype(np.float64)
        with err:
            y = x / b
            if tx is None and tb is None:
                return y.astype(dtype), None
            ty = (0.0 if tx is None else tx) - (0.0 if tb is None else y[:, None, :] * tb)
            ty = ty / b[:, None, :]
        return y.astype(dtype), np.broadcast_to(ty, (y.shape[0], ty.shape[1], y.shape[1])) \
            .astype(dtype)
    if node.op == "pow":
        p = float(np.float32(node.exponent))
        with err:
            y = np.power(x, p)
            d = np.zeros_like(x) if p == 0.0 else p * np.power(x, p - 1.0)
        return y.astype(dtype), None if tx is None else (tx * d[:, None, :]).astype(dtype)
    if node.op == "clip":
        lo, hi = float(np.float32(node.low)), float(np.float32(node.high))
        y = np.clip(x, lo, hi)
        inside = (x >= lo) & (x <= hi)              # slope 1 at the edges, as PyTorch's clamp
        return y.astype(dtype), None if tx is None else \
            (tx * inside[:, None, :]).astype(dtype)
    if node.op == "reduce":
        w = x.shape[1]
        if node.reduce == "l2":
            y = np.sqrt((x * x).sum(axis=1, keepdims=True))
            if tx is None:
                return y.astype(dtype), None
            with err:
                ty = np.where(y[:, None, :] > 0,
                              (x[:, None, :] * tx).sum(axis=2, keepdims=True) / y[:, None, :], 0.0)
            return y.astype(dtype), ty.astype(dtype)
        scale = 1.0 / w if node.reduce == "mean" else 1.0
        y = x.sum(axis=1, keepdims=True) * scale
        return y.astype(dtype), None if tx is None else \
            (tx.sum(axis=2, keepdims=True) * scale).astype(dtype)
    # softmax over the features
    e = np.exp(x - x.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    if tx is None:
        return y.astype(dtype), None
    yt = y[:, None, :]
    ty = yt * (tx - (yt * tx).sum(axis=2, keepdims=True))
    return y.astype(dtype), ty.astype(dtype)


def _matmul(node: ir.Node, ins, tin, in_shapes, dtype):
    """Format 1.4's matmul per sample: scale · a [G, M, K] b [G, K, N] (b stored [G, N, K] with
    transpose_b), in float64 rounded once; the tangent is scale (t_a b + a t_b)."""
    a_shape, b_shape = in_shapes
    rows = ins[0].shape[0]
    g = 1 if len(a_shape) == 2 else int(a_shape[0])
    m, k = int(a_shape[-2]), int(a_shape[-1])
    scale = float(np.float32(node.scale))

    def mats(x, lead):
        return x.astype(np.float64).reshape(lead + (g, m, k))

    def bmat(x, lead):
        b = x.astype(np.float64).reshape(lead + (g,) + tuple(int(e) for e in b_shape[-2:]))
        return np.swapaxes(b, -1, -2) if node.transpose_b else b

    a, b = mats(ins[0], (rows,)), bmat(ins[1], (rows,))
    y = scale * np.matmul(a, b)
    if tin[0] is None and tin[1] is None:
        return y.reshape(rows, -1).astype(dtype), None
    p = next(t.shape[1] for t in tin if t is not None)
    ty = 0.0
    if tin[0] is not None:
        ty = ty + np.matmul(mats(tin[0], (rows, p)), b[:, None])
    if tin[1] is not None:
        ty = ty + np.matmul(a[:, None], bmat(tin[1], (rows, p)))
    return y.reshape(rows, -1).astype(dtype), (scale * ty).reshape(rows, p, -1).astype(dtype)


def _node_forward(node: ir.Node, vals, tans, dtype, shapes=None):
    """Evaluates one node: returns (value [B, w], tangent [B, P, w] or None). `shapes` (the
    graph's per-sample shapes) is needed by the layout ops."""
    ins = [vals[i] for i in node.inputs]
    tin = [tans[i] for i in node.inputs]
    if node.op in ir.LAYOUT_OPS:
        in_shape = shapes[node.inputs[0]]
        return _layout(node, ins[0], in_shape), \
            None if tin[0] is None else _layout(node, tin[0], in_shape)
    if node.op == "fc":
        w = node.weight.astype(dtype)
        y = ins[0] @ w.T
        if node.bias is not None:
            y = y + node.bias.reshape(-1).astype(dtype)
        return y, None if tin[0] is None else tin[0] @ w.T
    if node.op == "unary":
        x64 = ins[0].astype(np.float64)
        y = unary_forward(node.unary, x64, float(np.float32(node.alpha))).astype(dtype)
        if tin[0] is None:
            return y, None
        d = unary_derivative(node.unary, x64, float(np.float32(node.alpha))).astype(dtype)
        return y, tin[0] * d[:, None, :]
    if node.op == "concat":
        y = np.concatenate(ins, axis=1)
        if all(t is None for t in tin):
            return y, None
        p = next(t.shape[1] for t in tin if t is not None)
        parts = [np.zeros((v.shape[0], p, v.shape[1]), dtype) if t is None else t
                 for v, t in zip(ins, tin)]
        return y, np.concatenate(parts, axis=2)
    if node.op in ("add", "mul"):
        if node.constant is not None:
            return _binary(node, ins[0], tin[0], node.constant.reshape(1, -1).astype(dtype), None)
        return _binary(node, ins[0], tin[0], ins[1], tin[1])
    if node.op == "matmul":
        return _matmul(node, ins, tin, [shapes[i] for i in node.inputs], dtype)
    if node.op == "softmax" and len(shapes[node.inputs[0]]) > 1:
        # Along the last per-sample axis: each row of that axis is one softmax group.
        last = int(shapes[node.inputs[0]][-1])
        rows = ins[0].shape[0]
        t0 = tin[0]
        p = None if t0 is None else t0.shape[1]
        y, ty = _math_forward(node, [ins[0].reshape(-1, last)],
                              [None if t0 is None else
                               t0.reshape(rows, p, -1, last).transpose(0, 2, 1, 3)
                               .reshape(-1, p, last)], dtype)
        y = y.reshape(rows, -1)
        if ty is not None:
            ty = ty.reshape(rows, -1, p, last).transpose(0, 2, 1, 3).reshape(rows, p, -1)
        return y, ty
    if node.op in ("div", "pow", "clip", "reduce", "softmax"):
        return _math_forward(node, ins, tin, dtype)
    if node.op == "layernorm":
        y, ty = _layernorm(ins[0].astype(np.float64), None if tin[0] is None else
                           tin[0].astype(np.float64), node)
        return y.astype(dtype), None if ty is None else ty.astype(dtype)
    if node.op == "exp":
        # As the runtime: exp in double rounded once; the tangent is the rounded value times t.
        with np.errstate(over="ignore"):
            y = np.exp(ins[0].astype(np.float64)).astype(dtype)
        return y, None if tin[0] is None else tin[0] * y[:, None, :]
    raise ir.ConversionError(f"unknown op {node.op!r}; supported: {', '.join(ir.OPS)}")


def _time_column(t, rows: int, dtype) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if t.size == 1:
        t = np.full(rows, t[0])
    if t.size != rows:
        raise ValueError(f"t has {t.size} values for {rows} rows")
    return t.reshape(rows, 1).astype(dtype)


def evaluate(model: ir.FlowModel, t, y, tangents: bool = False, dtype=np.float64):
    """Runs the graph on rows y [B, d] at times t (scalar or [B]).

    Returns (v [B, d], J) where J [B, d, d] holds the JVP of every basis direction (J[r, p] =
    dv/dy_p for row r) when `tangents`, else None. With dtype=np.float32 it emulates the
    runtime's float32 evaluation (activations and LayerNorm in double, rounded once).
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y.reshape(1, -1)
    rows, d = y.shape
    shapes = model.graph.shapes()   # a malformed graph fails here with the node named
    if d != model.dim:
        raise ValueError(f"y has {d} columns, the model's dim is {model.dim}")
    runs = conditioning.runs(model, rows)
    if runs is not None:
        # A conditional model: one evaluation per run (the given labels, and the null ones under
        # guidance), combined as v_w = v(null) + w (v(y) - v(null)).
        parts = [(w, _evaluate(model, t, y, tangents, dtype, run)) for w, run in runs]
        if len(parts) == 1:
            return parts[0][1]
        (w, (vy, jy)), (_, (v0, j0)) = parts
        v = v0 + w * (vy - v0)
        return v.astype(dtype), None if not tangents else (j0 + w * (jy - j0)).astype(dtype)
    return _evaluate(model, t, y, tangents, dtype, None)


def _evaluate(model: ir.FlowModel, t, y, tangents, dtype, run):
    rows, d = y.shape
    shapes = model.graph.shapes()
    vals = [y.astype(dtype), _time_column(t, rows, dtype)]
    tans = [np.broadcast_to(np.eye(d, dtype=dtype), (rows, d, d)).copy() if tangents else None,
            None]
    for k, node in enumerate(model.graph.nodes):
        if node.op in image_ops.IMAGE_OPS:
            a = node.inputs[0]
            v, tv = image_ops.forward(node, vals[a], tans[a], shapes[a], shapes[k + 2], dtype)
        elif node.op in ir.COND_OPS:
            v, tv = conditioning.forward(node, vals, rows, run, dtype)
        else:
            v, tv = _node_forward(node, vals, tans, dtype, shapes)
        vals.append(v)
        tans.append(tv)
    out = model.graph.output
    jac = None
    if tangents:
        jac = tans[out] if tans[out] is not None else np.zeros((rows, d, d), dtype)
    return vals[out], jac


def velocity(model: ir.FlowModel, t, y) -> np.ndarray:
    """v(t, y) in flow coordinates, float64, for rows y [B, d] and t scalar or [B]."""
    return evaluate(model, t, y)[0]


def divergence(model: ir.FlowModel, t, y) -> np.ndarray:
    """Exact divergence trace(dv/dy) per row, by forward-mode JVP of all d directions."""
    _, jac = evaluate(model, t, y, tangents=True)
    return np.trace(jac, axis1=1, axis2=2)


# ------------------------------------------------------------------------------ interpolant

def interpolant(model: ir.FlowModel, t) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, da/dt, db/dt) at t (docs/math.md, "Interpolant")."""
    t = np.asarray(t, dtype=np.float64)
    it = model.interpolant
    if it.kind == "linear":
        one = np.ones_like(t)
        return 1.0 - t, t.copy(), -one, one
    h = 0.5 * math.pi
    a, b = np.cos(h * t), np.sin(h * t)
    da, db = -h * np.sin(h * t), h * np.cos(h * t)
    if it.kind == "learned_fourier":
        for m, (am, bm) in enumerate(zip(it.alpha, it.beta), start=1):
            s, c = np.sin(m * math.pi * t), m * math.pi * np.cos(m * math.pi * t)
            a, b, da, db = a + am * s, b + bm * s, da + am * c, db + bm * c
    elif it.kind != "trig":
        raise ir.ConversionError(f"unknown interpolant {it.kind!r}")
    return a, b, da, db


# ------------------------------------------------------------------- base and normalisation

def base_log_density(model: ir.FlowModel, y) -> np.ndarray:
    """log rho0 of rows y (flow coordinates); -inf outside a uniform box (edges included)."""
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    d = model.dim
    bs = model.base
    if bs.kind == "normal":
        mean = np.zeros(d) if bs.mean is None else bs.mean.reshape(-1)
        std = np.ones(d) if bs.std is None else bs.std.reshape(-1)
        z = (y - mean) / std
        return -np.sum(np.log(std)) - 0.5 * d * math.log(2 * math.pi) - 0.5 * np.sum(z * z, 1)
    low, high = bs.low.reshape(-1), bs.high.reshape(-1)
    inside = np.all((y >= low) & (y <= high), axis=1)
    return np.where(inside, -np.sum(np.log(high - low)), -np.inf)


def normalize(model: ir.FlowModel, x) -> np.ndarray:
    """Data space -> flow coordinates, y = (x - mean)/std."""
    x = np.asarray(x, dtype=np.float64)
    n = model.normalization
    return x.copy() if n is None else (x - n.mean.reshape(-1)) / n.std.reshape(-1)


def denormalize(model: ir.FlowModel, y) -> np.ndarray:
    """Flow coordinates -> data space, x = mean + std*y."""
    y = np.asarray(y, dtype=np.float64)
    n = model.normalization
    return y.copy() if n is None else n.mean.reshape(-1) + n.std.reshape(-1) * y


def norm_log_det(model: ir.FlowModel) -> float:
    """Sum of log std of the normalisation (0 without one)."""
    n = model.normalization
    return 0.0 if n is None else float(np.sum(np.log(n.std)))


# ------------------------------------------------------------------------------ integrators

def tableau(method: str):
    """(a, b, c) of a method (docs/math.md, "Integrators")."""
    if method == "euler":
        return [[]], [1.0], [0.0]
    if method == "heun":
        return [[], [1.0]], [0.5, 0.5], [0.0, 1.0]
    if method == "midpoint":
        return [[], [0.5]], [0.0, 1.0], [0.0, 0.5]
    if method == "rk4":
        return ([[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6],
                [0.0, 0.5, 0.5, 1.0])
    if method == "rk4-38":
        return ([[], [1 / 3], [-1 / 3, 1.0], [1.0, -1.0, 1.0]], [1 / 8, 3 / 8, 3 / 8, 1 / 8],
                [0.0, 1 / 3, 2 / 3, 1.0])
    raise ValueError(f"unknown method {method!r}; supported: {', '.join(METHODS)}")


def time_grid(start: float, end: float, steps: int, backward: bool = False) -> np.ndarray:
    """The runtime's uniform grid: start + (end - start)*(k/K), exact end points; reversed when
    walked backwards."""
    k = np.arange(steps + 1, dtype=np.float64)
    g = start + (end - start) * (k / steps)
    g[0], g[-1] = start, end
    return g[::-1].copy() if backward else g


def integrate(field, y0, grid, method: str = "rk4", with_div: bool = False,
              dtype=np.float64):
    """Explicit RK over the points of `grid` (increasing or decreasing).

    field(t, y) returns (v, div or None). Returns (y_end, ell) with ell = sum over steps of
    h * sum_s b_s div_s (None without divergence). Stage inputs and updates follow ode.hpp:
    y + (h a_sj) k_j, then y + h * sum_s b_s k_s.
    """
    a, b, c = tableau(method)
    y = np.array(y0, dtype=dtype)
    ell = np.zeros(y.shape[0]) if with_div else None
    for t0, t1 in zip(grid[:-1], grid[1:]):
        h = float(t1 - t0)
        ks, divs = [], []
        for s in range(len(b)):
            inp = y
            if s > 0:
                inp = y.copy()
                for j, aj in enumerate(a[s]):
                    if aj != 0.0:
                        inp = inp + dtype(h * aj) * ks[j]
            k, dv = field(t0 + c[s] * h, inp)
            ks.append(k)
            divs.append(dv)
        acc = sum(dtype(bs) * k for bs, k in zip(b, ks))
        y = y + dtype(h) * acc
        if with_div:
            ell = ell + h * sum(bs * dv for bs, dv in zip(b, divs))
    return y, ell


def _field(model: ir.FlowModel, with_div: bool, round_time: bool, dtype=np.float64):
    """The velocity field the integrators see; t rounded to float32 as the runtime does."""
    def f(t, y):
        tn = float(np.float32(t)) if round_time else t
        if not with_div:
            return evaluate(model, tn, y, dtype=dtype)[0], None
        v, jac = evaluate(model, tn, y, tangents=True, dtype=dtype)
        return v, np.trace(jac, axis1=1, axis2=2).astype(np.float64)
    return f


def _grid(model, method, steps, start=None, end=None, backward=False):
    tableau(method)
    if not 1 <= int(steps) <= 2 ** 20:
        raise ValueError(f"steps {steps} is outside [1, 2^20]")
    return time_grid(model.time_start if start is None else start,
                     model.time_end if end is None else end, int(steps), backward)


def decode(model: ir.FlowModel, z, method: str = "rk4", steps: int = 50,
           with_logp: bool = False, round_time: bool = True,
           with_logprob: Optional[bool] = None):
    """Base points z (flow coordinates, at time_start) -> data space at time_end.

    With with_logp (alias with_logprob) also returns log rho1(x) in data space:
    log rho0(z) - l - sum log std, l the forward integral of the exact divergence
    (docs/math.md).
    """
    if with_logprob is not None:
        with_logp = with_logprob
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    grid = _grid(model, method, steps)
    y, ell = integrate(_field(model, with_logp, round_time), z, grid, method, with_logp)
    x = denormalize(model, y)
    if not with_logp:
        return x
    return x, base_log_density(model, z) - ell - norm_log_det(model)


def encode(model: ir.FlowModel, x, method: str = "rk4", steps: int = 50,
           round_time: bool = True) -> np.ndarray:
    """Data points -> base points (flow coordinates) by the ODE walked backwards."""
    y = normalize(model, np.atleast_2d(x))
    grid = _grid(model, method, steps, backward=True)
    return integrate(_field(model, False, round_time), y, grid, method)[0]


def log_prob(model: ir.FlowModel, x, method: str = "rk4", steps: int = 50,
             time: Optional[float] = None, round_time: bool = True) -> np.ndarray:
    """log rho_s(x) in data space (s = time_end by default), exact divergence.

    Starts at X(s) = (x - mean)/std with l = 0 and walks back to time_start (h < 0), so
    l = -integral of div v; the result is log rho0(X(time_start)) + l - sum log std.
    """
    s = model.time_end if time is None else float(time)
    if not model.time_start < s <= model.time_end:
        raise ValueError(f"time {s} is outside ({model.time_start}, {model.time_end}]")
    y = normalize(model, np.atleast_2d(x))
    grid = _grid(model, method, steps, end=s, backward=True)
    y0, ell = integrate(_field(model, True, round_time), y, grid, method, True)
    return base_log_density(model, y0) + ell - norm_log_det(model)


# ------------------------------------------------------------------------------- randomness

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def philox4x32_10(counter, key) -> np.ndarray:
    """Philox4x32-10 (Salmon et al. 2011) on arrays: counter [..., 4], key [..., 2] of uint32
    values; returns [..., 4] uint32."""
    ctr = np.asarray(counter, dtype=np.uint64)
    k = np.asarray(key, dtype=np.uint64)
    c0, c1, c2, c3 = (ctr[..., i] & _MASK for i in range(4))
    k0, k1 = k[..., 0] & _MASK, k[..., 1] & _MASK
    for _ in range(10):
        p0, p1 = _M0 * c0, _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _S32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _S32) ^ c3 ^ k1, p0 & _MASK)
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def random_blocks(seed: int, blocks, samples, stream: int) -> np.ndarray:
    """Blocks for counter (block, sample lo, sample hi, stream), key (seed lo, seed hi);
    `blocks` and `samples` broadcast against each other."""
    blocks = np.asarray(blocks, dtype=np.uint64)
    samples = np.asarray(samples, dtype=np.uint64)
    blocks, samples = np.broadcast_arrays(blocks, samples)
    ctr = np.stack([blocks, samples & _MASK, samples >> _S32,
                    np.full(blocks.shape, stream, np.uint64)], axis=-1)
    key = np.array([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=np.uint64)
    return philox4x32_10(ctr, np.broadcast_to(key, ctr.shape[:-1] + (2,)))


def lane_uniform(x) -> np.ndarray:
    """((x >> 8) + 0.5) * 2^-24 in (0, 1), exact in float64."""
    return ((np.asarray(x, dtype=np.uint64) >> np.uint64(8)).astype(np.float64) + 0.5) * 2.0 ** -24


def _draw_blocks(seed, n, first_index, dim, stream):
    samples = first_index + np.arange(n, dtype=np.uint64)
    nb = (dim + 3) // 4
    return random_blocks(seed, np.arange(nb, dtype=np.uint64)[None, :], samples[:, None], stream)


def standard_normals(seed: int, n: int, dim: int, first_index: int = 0, stream: int = 0,
                     first_block: int = 0, dtype=np.float32) -> np.ndarray:
    """The runtime's fill_normals: Box-Muller on lanes (0, 1) and (2, 3) of block k/4, each value
    rounded to `dtype` (float32 for base draws)."""
    blocks = _draw_blocks(seed, n, first_index, dim + 4 * first_block, stream)[:, first_block:]
    u = lane_uniform(blocks)                                  # [n, nb, 4]
    r = np.sqrt(-2.0 * np.log(u[..., 0::2]))                  # [n, nb, 2]
    ang = 2.0 * math.pi * u[..., 1::2]
    out = np.stack([r * np.cos(ang), r * np.sin(ang)], axis=-1)   # [n, nb, 2 pairs, 2]
    return out.reshape(n, -1)[:, :dim].astype(dtype)


def _float_below(v: np.ndarray) -> np.ndarray:
    return np.nextafter(v.astype(np.float32), np.float32(-np.inf))


def base_draws(model: ir.FlowModel, n: int, seed: int, first_index: int = 0) -> np.ndarray:
    """The float32 base points `siflow sample --seed` starts from (flow coordinates)."""
    d = model.dim
    bs = model.base
    if bs.kind == "normal":
        z = standard_normals(seed, n, d, first_index).astype(np.float64)
        mean = np.zeros(d) if bs.mean is None else bs.mean.reshape(-1)
        std = np.ones(d) if bs.std is None else bs.std.reshape(-1)
        return (mean + std * z).astype(np.float32)
    u = lane_uniform(_draw_blocks(seed, n, first_index, d, 0)).reshape(n, -1)[:, :d]
    low, high = bs.low.reshape(-1), bs.high.reshape(-1)
    v = (low + (high - low) * u).astype(np.float32)
    hi32 = np.broadcast_to(high.astype(np.float32), v.shape)
    return np.where(v >= hi32, _float_below(hi32), v)


def sample(model: ir.FlowModel, n: int, seed: int, method: str = "rk4", steps: int = 50,
           first_index: int = 0, with_logp: bool = False, round_time: bool = True,
           with_logprob: Optional[bool] = None):
    """Reproduces `siflow sample -n N --seed S` (ODE): sample i starts from the base draw of
    index first_index + i and is decoded in float64. Returns x (and log p when with_logp,
    alias with_logprob)."""
    if with_logprob is not None:
        with_logp = with_logprob
    return decode(model, base_draws(model, n, seed, first_index).astype(np.float64), method,
                  steps, with_logp, round_time)


def _sde_drift(model, t, y, eps_over_a, mean, std, round_time):
    """v + (eps/a)*(b*v - b'*y + W*mean)/(W*std^2): the drift with eps*score (docs/math.md)."""
    v = evaluate(model, float(np.float32(t)) if round_time else t, y)[0]
    a, b, da, db = (float(q) for q in interpolant(model, t))
    w = a * db - da * b
    return v + eps_over_a * (b * v - db * y + w * mean) / (w * std * std)


def sample_sde(model: ir.FlowModel, n: int, seed: int, epsilon: float, schedule: str = "a",
               stop: float = 0.0, sde_method: str = "heun", method: str = "rk4",
               steps: int = 50, first_index: int = 0, round_time: bool = True) -> np.ndarray:
    """Reproduces `siflow sample --sde EPS [--sde-schedule S] [--sde-stop DELTA]
    [--sde-method M]` (Gaussian base): SDE steps with the noise of stream 2 (step k of sample i
    from blocks k*ceil(d/4)), then ODE steps of `method` on the rest of the grid after a stop.

    schedule "a": eps(t) = epsilon*a(t), whose 1/a cancels the score's; "constant": eps(t) =
    epsilon, which needs stop > 0 when the range reaches t = 1. Steppers: "em" (Euler-Maruyama)
    and "heun" (noise first, then a trapezoid step on the drift).
    """
    if model.base.kind != "normal":
        raise ValueError("SDE sampling needs a Gaussian base")
    if schedule not in ("a", "constant") or sde_method not in ("em", "heun"):
        raise ValueError(f"unknown SDE schedule {schedule!r} or method {sde_method!r}")
    d = model.dim
    mean = np.zeros(d) if model.base.mean is None else model.base.mean.reshape(-1)
    std = np.ones(d) if model.base.std is None else model.base.std.reshape(-1)
    grid = _grid(model, method, steps)
    sde_steps = len(grid) - 1
    if stop > 0.0:
        sde_steps = int(np.sum(grid[1:] <= model.time_end - stop))
        if sde_steps in (0, len(grid) - 1):
            raise ValueError(f"stop {stop} leaves no SDE or no ODE step on this grid")
    elif schedule == "constant" and model.time_end >= 1.0:
        raise ValueError("a constant epsilon needs a stop when the range reaches t = 1")
    y = base_draws(model, n, seed, first_index).astype(np.float64)
    blocks = (d + 3) // 4
    for k in range(sde_steps):
        t0, t1 = float(grid[k]), float(grid[k + 1])
        h = t1 - t0
        xi = standard_normals(seed, n, d, first_index, stream=2,
                              first_block=k * blocks).astype(np.float64)
        a0 = float(interpolant(model, t0)[0])
        eps0 = max(epsilon * (a0 if schedule == "a" else 1.0), 0.0)
        scale = math.sqrt(2.0 * eps0 * h)

        def eps_over_a(t):
            return epsilon if schedule == "a" else epsilon / float(interpolant(model, t)[0])
        if sde_method == "em":
            d1 = _sde_drift(model, t0, y, eps_over_a(t0), mean, std, round_time)
            y = y + h * d1 + scale * xi
        else:
            y = y + scale * xi
            d1 = _sde_drift(model, t0, y, eps_over_a(t0), mean, std, round_time)
            d2 = _sde_drift(model, t1, y + h * d1, eps_over_a(t1), mean, std, round_time)
            y = y + 0.5 * h * (d1 + d2)
    if sde_steps < len(grid) - 1:
        y, _ = integrate(_field(model, False, round_time), y, grid[sde_steps:], method)
    return denormalize(model, y)


# ----------------------------------------------------------------------------- test vectors

SAFETY_FACTOR = 16.0
TOLERANCE_FLOOR = 64 * 2.0 ** -24   # ~3.8e-6: a few float32 ulps of an O(1) value


def _relative_error(got, want) -> float:
    """The runtime's validate metric: max |got - want| / max(1, max |want|)."""
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


def _wide_points(model: ir.FlowModel, rng, n: int) -> np.ndarray:
    """Points spread a bit wider than the base (1.5 std, or 1.2 half-widths of the box)."""
    d, bs = model.dim, model.base
    if bs.kind == "normal":
        mean = np.zeros(d) if bs.mean is None else bs.mean.reshape(-1)
        std = np.ones(d) if bs.std is None else bs.std.reshape(-1)
        return mean + 1.5 * std * rng.standard_normal((n, d))
    low, high = bs.low.reshape(-1), bs.high.reshape(-1)
    return 0.5 * (low + high) + 0.6 * (high - low) * rng.uniform(-1, 1, (n, d))


def _base_points(model: ir.FlowModel, rng, n: int) -> np.ndarray:
    d, bs = model.dim, model.base
    if bs.kind == "normal":
        mean = np.zeros(d) if bs.mean is None else bs.mean.reshape(-1)
        std = np.ones(d) if bs.std is None else bs.std.reshape(-1)
        return mean + std * rng.standard_normal((n, d))
    return rng.uniform(bs.low.reshape(-1), bs.high.reshape(-1), (n, d))


def _rk4_trajectory(model, start, steps, dtype):
    """Classic RK4 from time_start to time_end in flow coordinates, as `siflow validate` runs it
    (in float32 it also passes through data space and back, as the runtime's decode does)."""
    grid = time_grid(model.time_start, model.time_end, steps)
    y, _ = integrate(_field(model, False, True, dtype), start.astype(dtype), grid, "rk4",
                     dtype=dtype)
    if dtype == np.float32 and model.normalization is not None:
        n = model.normalization
        mean, std = n.mean.astype(np.float32), n.std.astype(np.float32)
        y = ((mean + std * y) - mean) / std
    return y.astype(np.float64)


def make_test_vectors(model: ir.FlowModel, count: int = 64, trajectory_count: int = 8,
                      trajectory_steps: int = 16, seed: int = 0,
                      fp16: bool = False, quantize: Optional[str] = None,
                      guidance: float = 1.0) -> ir.TestVectors:
    """Reference velocities at random (t, y) and classic-RK4 trajectories, with tolerances.

    The references are computed in float64 on the model as stored (weights rounded to float32,
    or to fp16 when `fp16`, or to `quantize`'s storage; t, y and the trajectory starts rounded to float32, as the file
    holds them). t is uniform over the time range, y spread 1.5x wider than the base; the
    trajectories start from base draws.

    Tolerance rule: each tolerance is SAFETY_FACTOR (16) times the error a float32 evaluation
    of the same graph and RK4 run shows against the float64 reference (the runtime's metric,
    max |err| / max(1, max |ref|)), and at least TOLERANCE_FLOOR (64 float32 ulps of 1,
    ~3.8e-6). Float32 rounding error of a different but equally valid summation order is of
    the same size as the emulated one, so a correct runtime passes with a wide margin, while a
    genuine error (a weight off by 1e-3 relative, a wrong activation) moves the output by far
    more than a few float32 ulps and fails.
    """
    from .sif_io import stored
    base_model = stored(model, fp16=fp16, quantize=quantize)
    m = base_model
    rng = np.random.default_rng(seed)
    # A conditional model: random labels / conditions for the points, under `guidance`.
    point_cond = conditioning.test_inputs(base_model, rng, count)
    if point_cond is not None:
        m = conditioning.with_conditioning(base_model, *point_cond, guidance=guidance)
    t = rng.uniform(m.time_start, m.time_end, count).astype(np.float32).astype(np.float64)
    y = _wide_points(m, rng, count).astype(np.float32).astype(np.float64)
    v = np.zeros((0, m.dim)) if count == 0 else evaluate(m, t, y)[0]
    v_tol = 0.0
    if count:
        v32 = evaluate(m, t, y, dtype=np.float32)[0].astype(np.float64)
        v_tol = max(SAFETY_FACTOR * _relative_error(v32, v), TOLERANCE_FLOOR)
    tv = ir.TestVectors(t=t, y=y, v=v, velocity_tolerance=float(v_tol))
    if point_cond is not None:
        tv.labels, tv.cond, tv.guidance = point_cond[0], point_cond[1], float(guidance)
        traj_cond = conditioning.test_inputs(base_model, rng, trajectory_count)
        m = conditioning.with_conditioning(base_model, *traj_cond, guidance=guidance)
        tv.trajectory_labels, tv.trajectory_cond = traj_cond
    if trajectory_count:
        start = _base_points(m, rng, trajectory_count).astype(np.float32).astype(np.float64)
        end = _rk4_trajectory(m, start, trajectory_steps, np.float64)
        end32 = _rk4_trajectory(m, start, trajectory_steps, np.float32)
        tv.trajectory_steps = int(trajectory_steps)
        tv.trajectory_start, tv.trajectory_end = start, end
        tv.trajectory_tolerance = float(max(SAFETY_FACTOR * _relative_error(end32, end),
                                            TOLERANCE_FLOOR))
    return tv


def quantization_error(model: ir.FlowModel, quantize: str, count: int = 256,
                       seed: int = 0) -> float:
    """The velocity error that storing the weights as `quantize` causes: max |v_q - v_f32| /
    max(1, max |v_f32|) (the runtime's validation metric) over `count` random (t, y) as the
    test vectors draw them, both evaluated in float64 on the stored weights."""
    from .sif_io import stored
    f32 = stored(model)
    q = stored(model, quantize=quantize)
    rng = np.random.default_rng(seed)
    t = rng.uniform(f32.time_start, f32.time_end, count).astype(np.float32).astype(np.float64)
    y = _wide_points(f32, rng, count).astype(np.float32).astype(np.float64)
    v = evaluate(f32, t, y)[0]
    vq = evaluate(q, t, y)[0]
    return float(np.max(np.abs(vq - v)) / max(1.0, float(np.max(np.abs(v)))))
