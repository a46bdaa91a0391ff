#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Computes the numbers of the digits model's card (examples/MODELS.md) from the PyTorch net or
from the converted .sif (through the siflow CLI).

- Held-out bits per dimension under the dequantization bound: on the committed held-out set
  x~ = (x + u)/17 (examples/data/digits_heldout.npy, seeded u),
      bpd = -log p(x~) / (64 ln 2) + log2(17),
  where log p(x~) = log p(z) + 64 log 2 for the flow's z = 2 x~ - 1 (the scaling's
  log-determinant; siflow's logprob adds it itself from the stored normalisation). log p by
  RK4 from t = 1 back to t = 0 with the exact divergence (all 64 directions), and with the
  Hutchinson estimate (K Rademacher probes, fixed along each trajectory) beside it. Reported
  for log p(x~ | y) (the held-out label) and for the unconditional log p(x~) (null label).
- Sample quality: guided samples, v_w = v(x, t, null) + w (v(x, t, y) - v(x, t, null)), RK4
  from N(0, I) at t = 0 to t = 1, N per class at w = 1 and w = 2, classified by a scikit-learn
  SVC (RBF) trained on the dequantized training split; the card gives its accuracy (overall and
  per class) next to the classifier's accuracy on the real held-out images.

The PyTorch path (--torch WEIGHTS.pt, from train_examples.py --only digits --stage train)
integrates with plain RK4 loops written here, in float32 by default (--dtype float64 is 16x
slower on a CPU; the float64 reference of the velocity is train_examples.py's export). The
.sif path (--sif MODEL.sif --siflow CLI) runs `siflow logprob` (with --grid) and `siflow
sample` with the label options.

Usage: digits_card.py (--torch digits.pt | --sif digits.sif [--siflow PATH]) [options]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_data as dd  # noqa: E402

LOG2_17 = math.log2(dd.LEVELS)


def time_grid(steps: int, power: float) -> np.ndarray:
    """t_n = 1 - (1 - n/steps)^power, n = 0..steps: uniform for power 1, denser near the data
    (t = 1), where the velocity of the dequantized data is steepest, for power > 1."""
    u = np.arange(steps + 1, dtype=np.float64) / steps
    t = 1.0 - (1.0 - u) ** power
    t[0], t[-1] = 0.0, 1.0
    return t


def bpd_from_logp(logp_xt: np.ndarray) -> np.ndarray:
    """Bits per dimension of the dequantization bound from log p(x~) in nats."""
    return -logp_xt / (dd.DIM * math.log(2.0)) + LOG2_17


def normal_logpdf(z: np.ndarray) -> np.ndarray:
    z = z.reshape(z.shape[0], -1)
    return -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- PyTorch path


class TorchFlow:
    """The PyTorch net with plain RK4 loops for log-likelihoods and guided sampling."""

    def __init__(self, weights: str, dtype: str, chunk: int):
        import torch
        import train_examples as te
        self.torch = torch
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
        record = torch.load(weights)
        self.record = record
        self.net = te.digits_net(record).to(self.dtype)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.null = record["null_label"]
        self.chunk = chunk

    def _v(self, z, t: float, y, w: float = 1.0):
        """Guided velocity at time t for a batch z [B, 1, 8, 8] and labels y [B]."""
        torch = self.torch
        tt = torch.full((z.shape[0], 1), t, dtype=self.dtype)
        if w == 1.0:
            return self.net(z, tt, y)
        null = torch.full_like(y, self.null)
        v = self.net(torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([y, null]))
        vc, vu = v[:z.shape[0]], v[z.shape[0]:]
        return vu + w * (vc - vu)

    def _v_div(self, z, t: float, y, probes):
        """Velocity and divergence: exact (probes None; all 64 unit directions pushed through
        one backward pass over 64 copies) or Hutchinson (probes [K, B, 64])."""
        torch = self.torch
        b = z.shape[0]
        k = dd.DIM if probes is None else probes.shape[0]
        with torch.enable_grad():
            zr = z.unsqueeze(0).expand(k, *z.shape).reshape(k * b, *z.shape[1:])
            zr = zr.detach().requires_grad_(True)
            v = self._v(zr, t, y.repeat(k)).reshape(k, b, dd.DIM)
            if probes is None:
                out = torch.diagonal(v, dim1=0, dim2=2).sum()      # sum_i v[i, :, i]
            else:
                out = (v * probes).sum()
            (g,) = torch.autograd.grad(out, zr)
        g = g.reshape(k, b, dd.DIM)
        if probes is None:
            div = torch.diagonal(g, dim1=0, dim2=2).sum(1)          # [B]
        else:
            div = (g * probes).sum(2).mean(0)
        return v[0].reshape(z.shape).detach(), div.detach()

    def logprob(self, xt: np.ndarray, labels: np.ndarray, grid: np.ndarray, probes: int = 0,
                seed: int = 0) -> np.ndarray:
        """log p(x~ | y) in nats (labels = the null label: the unconditional density), RK4 from
        t = 1 to 0 over the increasing time grid (walked backwards); probes 0 = exact
        divergence."""
        torch = self.torch
        out = np.empty(xt.shape[0])
        g = torch.Generator().manual_seed(seed)
        for s in range(0, xt.shape[0], self.chunk):
            z = torch.from_numpy(dd.to_flow(xt[s:s + self.chunk])).to(self.dtype)
            y = torch.from_numpy(labels[s:s + self.chunk].astype(np.int64))
            pr = None
            if probes:
                pr = (torch.randint(0, 2, (probes, z.shape[0], dd.DIM), generator=g) * 2 - 1)
                pr = pr.to(self.dtype)
            ell = torch.zeros(z.shape[0], dtype=self.dtype)
            for n in range(len(grid) - 1, 0, -1):
                t, h = float(grid[n]), float(grid[n - 1] - grid[n])
                k1, d1 = self._v_div(z, t, y, pr)
                k2, d2 = self._v_div(z + 0.5 * h * k1, t + 0.5 * h, y, pr)
                k3, d3 = self._v_div(z + 0.5 * h * k2, t + 0.5 * h, y, pr)
                k4, d4 = self._v_div(z + h * k3, t + h, y, pr)
                z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                ell = ell + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
            out[s:s + z.shape[0]] = (normal_logpdf(z.numpy()) + ell.numpy()) + dd.LOG_DET
        return out

    def sample(self, labels: np.ndarray, w: float, steps: int, seed: int) -> np.ndarray:
        """Guided samples x~ [N, 1, 8, 8] by RK4 from N(0, I) (seeded torch generator)."""
        torch = self.torch
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((labels.size,) + dd.SHAPE, generator=g, dtype=torch.float64)
        z = z.to(self.dtype)
        y = torch.from_numpy(labels.astype(np.int64))
        h = 1.0 / steps
        with torch.no_grad():
            for n in range(steps):
                t = n / steps
                k1 = self._v(z, t, y, w)
                k2 = self._v(z + 0.5 * h * k1, t + 0.5 * h, y, w)
                k3 = self._v(z + 0.5 * h * k2, t + 0.5 * h, y, w)
                k4 = self._v(z + h * k3, t + h, y, w)
                z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return dd.from_flow(z.double().numpy())


# ----------------------------------------------------------------------------- .sif path


class SifFlow:
    """The converted model through the siflow CLI (needs the CLI's label options)."""

    def __init__(self, sif: str, siflow: str):
        self.sif, self.siflow = sif, siflow

    def _run(self, args):
        subprocess.run([self.siflow] + args, check=True, stdout=subprocess.DEVNULL)

    def logprob(self, xt, labels, grid, probes=0, seed=0):
        with tempfile.TemporaryDirectory() as d:
            xi, yi, gi, lo = (os.path.join(d, n) for n in ("x.npy", "y.npy", "g.npy", "lp.npy"))
            np.save(xi, xt.astype(np.float64))
            np.save(yi, labels.astype(np.int64))
            np.save(gi, grid.astype(np.float64))
            div = "exact" if not probes else f"hutchinson:{probes}"
            self._run(["logprob", self.sif, "-i", xi, "--labels", yi, "-o", lo, "--method",
                       "rk4", "--grid", gi, "--divergence", div, "--seed", str(seed)])
            return np.load(lo).astype(np.float64)

    def sample(self, labels, w, steps, seed):
        with tempfile.TemporaryDirectory() as d:
            yi, out = os.path.join(d, "y.npy"), os.path.join(d, "s.npy")
            np.save(yi, labels.astype(np.int64))
            self._run(["sample", self.sif, "-n", str(labels.size), "--labels", yi,
                       "--guidance", repr(w), "--seed", str(seed), "--method", "rk4",
                       "--steps", str(steps), "-o", out])
            return np.load(out).astype(np.float64).reshape((-1,) + dd.SHAPE)


# ----------------------------------------------------------------------------- classifier


def train_classifier(seed: int = 0):
    """An RBF SVC on the dequantized training split (one seeded dequantization)."""
    from sklearn.svm import SVC
    xs, ys = dd.train_set()
    xt = dd.dequantize(xs, np.random.default_rng(seed + 7))
    return SVC(C=10.0, gamma="scale").fit(xt, ys)


def accuracy_by_class(clf, images: np.ndarray, labels: np.ndarray):
    pred = clf.predict(images.reshape(images.shape[0], -1))
    per = [float((pred[labels == c] == c).mean()) for c in range(dd.NUM_CLASSES)]
    return float((pred == labels).mean()), per


def mean_se(a: np.ndarray) -> str:
    return f"{a.mean():.4f} +- {a.std(ddof=1) / math.sqrt(a.size):.4f}"


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--torch", metavar="WEIGHTS.pt", help="PyTorch record from train_examples")
    src.add_argument("--sif", metavar="MODEL.sif", help="the converted model")
    ap.add_argument("--siflow", default=os.path.join(os.path.dirname(HERE), "build", "runtime",
                                                     "cli", "siflow"), help="siflow CLI")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float32",
                    help="PyTorch precision (default float32: 16x faster on a CPU here, and "
                    "what the runtime computes in)")
    ap.add_argument("--steps", type=int, default=20, help="RK4 steps for log p (default 20)")
    ap.add_argument("--grid-power", type=float, default=2.0,
                    help="log p time grid t_n = 1 - (1 - n/steps)^P (default 2; 1: uniform)")
    ap.add_argument("--exact-per-class", type=int, default=10,
                    help="held-out images per class with the exact divergence (the first K of "
                    "each class in file order; default 10, all = 30)")
    ap.add_argument("--exact-images", type=int, default=0,
                    help="keep only the first N images of the exact subset (0: all)")
    ap.add_argument("--hutchinson-per-class", type=int, default=30,
                    help="held-out images per class with the Hutchinson estimate (the first K "
                    "of each class; default 30 = all)")
    ap.add_argument("--probes", type=int, default=4, help="Hutchinson probes K (default 4)")
    ap.add_argument("--sample-steps", type=int, default=20,
                    help="uniform RK4 steps for sampling (default 20)")
    ap.add_argument("--per-class", type=int, default=100, help="samples per class (default 100)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--seed", type=int, default=0, help="seed of probes and base draws")
    ap.add_argument("--chunk", type=int, default=50, help="images per PyTorch batch")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=("cond", "uncond", "exact", "hutchinson", "samples"),
                    help="parts not to compute (to split the work between processes)")
    ap.add_argument("--save-samples", metavar="PREFIX",
                    help="write the guided samples to PREFIX_w<W>.npy (x~ [N, 1, 8, 8])")
    args = ap.parse_args(argv)

    if args.torch:
        import torch
        torch.set_num_threads(1)
        flow = TorchFlow(args.torch, args.dtype, args.chunk)
        print(f"source: PyTorch {args.torch} ({args.dtype}, "
              f"{flow.record['params']} parameters, {flow.record['steps']} training steps)")
    else:
        flow = SifFlow(args.sif, args.siflow)
        print(f"source: {args.sif} through {args.siflow}")

    xt, labels = dd.load_heldout()
    sub = np.sort(np.concatenate([np.flatnonzero(labels == c)[:args.exact_per_class]
                                  for c in range(dd.NUM_CLASSES)]))
    if args.exact_images:
        sub = sub[:args.exact_images]
    n = sub.size
    hsub = np.sort(np.concatenate([np.flatnonzero(labels == c)[:args.hutchinson_per_class]
                                   for c in range(dd.NUM_CLASSES)]))
    in_h = np.isin(hsub, sub)
    null = np.full_like(labels, dd.NULL_LABEL)
    grid = time_grid(args.steps, args.grid_power)
    rk = f"RK4 {args.steps}"
    if args.grid_power != 1:
        rk += f" (grid power {args.grid_power:g})"
    cases = [] if "cond" in args.skip else [("conditional log p(x~|y)", labels)]
    if "uncond" not in args.skip:
        cases.append(("unconditional log p(x~)", null))
    for what, lab in cases:
        if "exact" not in args.skip:
            start = time.time()
            lp = flow.logprob(xt[sub], lab[sub], grid)
            b = bpd_from_logp(lp)
            print(f"{what}: exact divergence, {rk}, n={n}: bpd {mean_se(b)} "
                  f"(NLL(x~) {mean_se(-lp)} nats; {time.time() - start:.0f} s)", flush=True)
        if "hutchinson" not in args.skip:
            start = time.time()
            lp = flow.logprob(xt[hsub], lab[hsub], grid, probes=args.probes, seed=args.seed)
            b = bpd_from_logp(lp)
            print(f"{what}: Hutchinson K={args.probes}, {rk}, n={hsub.size}: "
                  f"bpd {mean_se(b)} (on the exact subset: {b[in_h].mean():.4f}; "
                  f"{time.time() - start:.0f} s)", flush=True)

    if "samples" not in args.skip:
        start = time.time()
        clf = train_classifier(args.seed)
        acc, per = accuracy_by_class(clf, xt, labels)
        print(f"classifier (SVC, RBF, C=10) on the real held-out x~: accuracy {acc:.4f}; "
              f"per class {' '.join(f'{p:.2f}' for p in per)}", flush=True)
        want = np.repeat(np.arange(dd.NUM_CLASSES), args.per_class)
        for w in args.guidance:
            s = flow.sample(want, w, args.sample_steps, args.seed)
            acc, per = accuracy_by_class(clf, s, want)
            out = np.mean((s < 0) | (s >= 1))
            print(f"guided samples w={w:g} ({args.per_class} per class, RK4 "
                  f"{args.sample_steps}): accuracy {acc:.4f}; per class "
                  f"{' '.join(f'{p:.2f}' for p in per)}; pixels outside [0, 1): {out:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)
            if args.save_samples:
                np.save(f"{args.save_samples}_w{w:g}.npy", s.astype(np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
