#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Golden image, attention and conditional models: siflow against float64 PyTorch.

Usage: tests/golden/golden_images.py PATH/TO/siflow [MODEL ...]

Each model of image_models.py (seeded random weights, generated here at test time, nothing
committed) is exported from PyTorch to ONNX (opsets 11 to 17), converted with siflow_convert and
written as a .sif; the siflow CLI then runs it and is compared with a PyTorch float64 copy of the
same module (float32 weights widened to double):

  velocity  max|v - v_torch| / max|v_torch|            <= 1e-4   (per-row t)
  decode    max|x - x_torch| / max|x_torch|            <= 1e-3   (classic RK4, STEPS steps)
  logprob   max|l - l_torch|                           <= 5e-3 nats (exact divergence, RK4; the
            PyTorch side: autograd divergence, one backward pass per coordinate, RK4 on (X, l)
            from t = 1 back to 0 on the same grid, N(0, I) base)
  sample    max|x - x_ref| / max|x_ref|                <= 1e-3   (`sample --seed S` against
            siflow_convert.reference.sample: the same Philox base draws decoded in float64)

The class-conditional model runs every command with per-row labels and --guidance 2, PyTorch
computing v_w = v(null) + 2 (v(y) - v(null)) (and the divergence of v_w). Each model finally
checks that the comparison can fail: one interior weight of the PyTorch copy is perturbed by
2e-2 and the velocity error against the unchanged .sif must then exceed the bound.

Prints every measured error; exits 1 when any check fails.
"""
from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "converter"))
sys.path.insert(0, HERE)

import image_models as M  # noqa: E402
from siflow_convert import conditioning, ir, reference, sif_io  # noqa: E402
from siflow_convert.onnx_import import from_onnx  # noqa: E402

VELOCITY_REL, TRAJECTORY_REL, LOGP_ABS = 1e-4, 1e-3, 5e-3
STEPS, SAMPLE_SEED, GUIDANCE = 8, 20261204, 2.0
NULL_LABEL = 10
PERTURB = 2e-2          # added to one weight of the PyTorch copy: must be detected

# name -> (module class, seed, example x shape, opset, ONNX op the model must convert into,
#          the parameter perturbed by the failure check)
MODELS = {
    "unet_attention": (M.UNetAttention, 21, (1, 8, 8), 17, "matmul", "attn.qkv.weight"),
    "depthwise_convt": (M.DepthwiseConvT, 22, (2, 8, 8), 11, "conv_transpose2d", "up.weight"),
    "class_guided": (M.ClassGuided, 23, (1, 8, 8), 13, "matmul", "attn.v.weight"),
    "mlp_math": (M.MLPMath, 24, (6,), 12, "clip", "l2.weight"),
}


class Failures:
    def __init__(self):
        self.lines = []

    def expect(self, name, what, err, bound, kind):
        ok = err <= bound
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {what}: {kind} error {err:.3e} "
              f"{'<=' if ok else 'EXCEEDS'} bound {bound:.0e}", flush=True)
        if not ok:
            self.lines.append(f"{name}: {what}: {err:.3e} > {bound:.0e}")


def rel_inf(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def abs_inf(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - ref)))


def run(cli, *args):
    proc = subprocess.run([cli, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`siflow {' '.join(args)}` exited {proc.returncode}: "
                           f"{proc.stderr.strip()}")


# ------------------------------------------------------------------------------ PyTorch side

class TorchField:
    """The float64 PyTorch velocity of one model (guided for the conditional one)."""

    def __init__(self, net, x_shape, labels=None):
        self.net, self.x_shape, self.labels = net, tuple(x_shape), labels

    def __call__(self, t: float, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[0]
        x = y.reshape((n,) + self.x_shape)
        tt = torch.full((n, 1), float(t), dtype=torch.float64)
        if self.labels is None:
            return self.net(x, tt).reshape(n, -1)
        lab = torch.as_tensor(self.labels[:n], dtype=torch.long)
        null = torch.full_like(lab, NULL_LABEL)
        v1 = self.net(x, tt, lab).reshape(n, -1)
        v0 = self.net(x, tt, null).reshape(n, -1)
        return v0 + GUIDANCE * (v1 - v0)

    def at(self, t_rows, y):
        """v at per-row times (no grad)."""
        with torch.no_grad():
            return torch.cat([self(float(t), y[i:i + 1]) if self.labels is None else
                              TorchField(self.net, self.x_shape, self.labels[i:i + 1])(
                                  float(t), y[i:i + 1]) for i, t in enumerate(t_rows)])

    def with_div(self, t, y):
        y = y.detach().requires_grad_(True)
        v = self(t, y)
        div = torch.zeros(y.shape[0], dtype=y.dtype)
        for i in range(y.shape[1]):
            g, = torch.autograd.grad(v[:, i].sum(), y, retain_graph=True)
            div = div + g[:, i]
        return v.detach(), div.detach()


def torch_decode(field, z, steps):
    h = 1.0 / steps
    y = z.clone()
    with torch.no_grad():
        for n in range(steps):
            t = n * h
            k1 = field(t, y)
            k2 = field(t + h / 2, y + h / 2 * k1)
            k3 = field(t + h / 2, y + h / 2 * k2)
            k4 = field(t + h, y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def torch_log_prob(field, x, steps):
    h = -1.0 / steps
    X, ell = x.clone(), torch.zeros(x.shape[0], dtype=x.dtype)
    for n in range(steps):
        t = 1.0 - n / steps
        k1, d1 = field.with_div(t, X)
        k2, d2 = field.with_div(t + h / 2, X + h / 2 * k1)
        k3, d3 = field.with_div(t + h / 2, X + h / 2 * k2)
        k4, d4 = field.with_div(t + h, X + h * k3)
        X = X + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ell = ell + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    base = -0.5 * (X ** 2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return base + ell


# ------------------------------------------------------------------------------ build

def build(name, tmp):
    cls, seed, x_shape, opset, must_have, _ = MODELS[name]
    torch.manual_seed(seed)
    net = cls().eval()
    with torch.no_grad():   # GroupNorm affine parameters away from (1, 0)
        for mod in net.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                mod.weight.copy_(1 + 0.3 * torch.randn_like(mod.weight))
                mod.bias.copy_(0.3 * torch.randn_like(mod.bias))
    conditional = name == "class_guided"
    inputs = (torch.zeros((3,) + x_shape), torch.zeros(3, 1))
    names = ["x", "t"]
    if conditional:
        inputs += (torch.zeros(3, dtype=torch.long),)
        names.append("y")
    buf = io.BytesIO()
    dyn = {n: {0: "B"} for n in names}
    dyn["v"] = {0: "B"}
    torch.onnx.export(net, inputs, buf, input_names=names, output_names=["v"],
                      dynamic_axes=dyn, opset_version=opset)
    graph = from_onnx(buf.getvalue(), null_label=NULL_LABEL if conditional else None)
    ops = [n.op for n in graph.nodes]
    if must_have not in ops:
        raise RuntimeError(f"{name}: converted graph has no {must_have} node: {ops}")
    model = ir.FlowModel(graph=graph, name=f"golden {name}", interpolant=ir.Interpolant("trig"),
                         base=ir.Base("normal"))
    sif = os.path.join(tmp, f"{name}.sif")
    sif_io.write_sif(model, sif)
    net64 = cls().double().eval()
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    print(f"{name}: opset {opset}, d = {graph.dim}, x shape {list(x_shape)}, "
          f"{len(graph.nodes)} nodes ({', '.join(sorted(set(ops)))})", flush=True)
    return sif, net64, sif_io.read_sif(sif)


def check_model(cli, name, tmp, fails):
    cls, seed, x_shape, opset, _, perturb = MODELS[name]
    sif, net64, stored = build(name, tmp)
    d = stored.dim
    rng = np.random.default_rng(seed)
    conditional = name == "class_guided"
    n_vel, n_traj = 6, 3
    labels = np.array([3, 0, 9, 5, 1, 7], dtype=np.int64) if conditional else None

    def cond_args(rows):
        """--labels (the first `rows` labels) and --guidance for the conditional model."""
        if not conditional:
            return []
        f = os.path.join(tmp, f"labels{rows}.npy")
        np.save(f, labels[:rows])
        return ["--labels", f, "--guidance", str(GUIDANCE)]

    def path(stem):
        return os.path.join(tmp, f"{name}.{stem}.npy")

    def load(stem, rows):
        return np.load(path(stem)).astype(np.float64).reshape(rows, -1)

    def f32(a):
        return np.asarray(a, np.float32).astype(np.float64)

    field = TorchField(net64, x_shape, labels)

    # velocity at per-row times
    y = f32(1.5 * rng.normal(size=(n_vel, d)))
    t = f32(np.array([0.0, 0.2, 0.45, 0.7, 0.9, 1.0]))
    np.save(path("y"), y.reshape((n_vel,) + x_shape))
    np.save(path("t"), t)
    run(cli, "velocity", sif, "-i", path("y"), "-t", path("t"), "-o", path("v"), *cond_args(n_vel))
    v_cli = load("v", n_vel)
    v_torch = field.at(t, torch.from_numpy(y)).numpy()
    fails.expect(name, "velocity vs PyTorch", rel_inf(v_cli, v_torch), VELOCITY_REL,
                 "relative")

    # decode (RK4)
    z = f32(rng.normal(size=(n_traj, d)))
    np.save(path("z"), z)
    run(cli, "decode", sif, "-i", path("z"), "-o", path("dec"), "--method", "rk4", "--steps",
        str(STEPS), *cond_args(n_traj))
    x_torch = torch_decode(TorchField(net64, x_shape, labels), torch.from_numpy(z), STEPS)
    fails.expect(name, f"decode (RK4, {STEPS} steps) vs PyTorch",
                 rel_inf(load("dec", n_traj), x_torch.numpy()), TRAJECTORY_REL, "relative")

    # exact log-likelihood (RK4, exact divergence)
    x = f32(x_torch.numpy() + 0.05 * rng.normal(size=(n_traj, d)))
    np.save(path("x"), x)
    run(cli, "logprob", sif, "-i", path("x"), "-o", path("logp"), "--divergence", "exact",
        "--method", "rk4", "--steps", str(STEPS), *cond_args(n_traj))
    lp_torch = torch_log_prob(field, torch.from_numpy(x), STEPS).numpy()
    fails.expect(name, f"exact log p (RK4, {STEPS} steps) vs PyTorch autograd",
                 abs_inf(np.load(path("logp")).reshape(-1), lp_torch), LOGP_ABS,
                 "absolute (nats)")

    # seeded sampling against the converter's float64 reference (same Philox base draws)
    n_smp = n_traj
    ref_model = stored if not conditional else conditioning.with_conditioning(
        stored, labels=labels[:n_smp], guidance=GUIDANCE)
    run(cli, "sample", sif, "-n", str(n_smp), "-o", path("smp"), "--seed", str(SAMPLE_SEED),
        "--method", "rk4", "--steps", str(STEPS), *cond_args(n_smp))
    s_ref = reference.sample(ref_model, n_smp, SAMPLE_SEED, method="rk4", steps=STEPS)
    fails.expect(name, "sample --seed vs siflow_convert.reference",
                 rel_inf(load("smp", n_smp), s_ref), TRAJECTORY_REL, "relative")
    # ... and the same base draws decoded by PyTorch.
    z0 = reference.base_draws(stored, n_smp, SAMPLE_SEED).astype(np.float64)
    s_torch = torch_decode(field, torch.from_numpy(z0), STEPS).numpy()
    fails.expect(name, "sample --seed vs PyTorch decode of the reference base draws",
                 rel_inf(load("smp", n_smp), s_torch), TRAJECTORY_REL, "relative")

    # the comparison can fail: a perturbed weight in the PyTorch copy must be detected
    with torch.no_grad():
        p = dict(net64.named_parameters())[perturb]
        p.view(-1)[0] += PERTURB
    v_bad = field.at(t, torch.from_numpy(y)).numpy()
    err = rel_inf(v_cli, v_bad)
    detected = err > VELOCITY_REL
    print(f"{'ok  ' if detected else 'FAIL'} {name}: {perturb}[0] + {PERTURB:g} in PyTorch "
          f"{'is' if detected else 'is NOT'} detected (velocity error {err:.3e} vs bound "
          f"{VELOCITY_REL:.0e})", flush=True)
    if not detected:
        fails.lines.append(f"{name}: perturbation of {perturb} not detected ({err:.3e})")


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    cli, names = argv[1], argv[2:] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; known: {list(MODELS)}")
        return 2
    torch.set_num_threads(1)
    fails = Failures()
    with tempfile.TemporaryDirectory(prefix="siflow-golden-images-") as tmp:
        for name in names:
            try:
                check_model(cli, name, tmp, fails)
            except (RuntimeError, ir.ConversionError) as e:
                print(f"FAIL {name}: {e}", flush=True)
                fails.lines.append(f"{name}: {e}")
    if fails.lines:
        print(f"\n{len(fails.lines)} golden image check(s) failed:\n  " +
              "\n  ".join(fails.lines))
        return 1
    print(f"\nall golden image checks passed ({len(names)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
