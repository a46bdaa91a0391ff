#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Accuracy and CPU time of the reduced precisions on the class-conditional image model
digits.sif, through the siflow CLI (bench/precision_accuracy.py does the point models): per
precision, the velocity error of `siflow validate --precision P` against the fp32 test vectors;
the RMS distance (per image, over its 64 pixels) of guided samples (w = 1, RK4 20, seed 1, labels
0..9 repeated) to the fp32 samples of the same seed and labels, with the CPU seconds of that
`siflow sample` run; and the held-out NLL of log p(x~ | y) by RK4 on the card's grid
t_n = 1 - (1 - n/20)^2 with exact divergence (examples/data/digits_heldout.npy, the first
images of each class in order, as examples/MODELS.md's digits card) and its difference to fp32.
Prints a Markdown table.

Usage: bench/precision_accuracy_digits.py SIFLOW_CLI [--samples N] [--images N]
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(REPO, "examples", "models", "digits.sif")
DATA = os.path.join(REPO, "examples", "data")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def run(cli, *args):
    """(stdout + stderr, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([cli, *args], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0 and args[0] != "validate":
        raise SystemExit(f"{' '.join(args)}: {out.stdout}{out.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.stdout + out.stderr, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cli")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--images", type=int, default=3,
                    help="held-out images: the first of classes 0, 1, ... (then the second...)")
    args = ap.parse_args()
    x = np.load(os.path.join(DATA, "digits_heldout.npy"))
    y = np.load(os.path.join(DATA, "digits_heldout_labels.npy"))
    order = [int(i) for k in range(30) for c in range(10) for i in [np.where(y == c)[0][k]]]
    pick = order[: args.images]
    steps = 20
    u = np.arange(steps + 1, dtype=np.float64) / steps
    grid = 1.0 - (1.0 - u) ** 2
    grid[0], grid[-1] = 0.0, 1.0
    print("| precision | velocity error (validate) | sample RMS distance to fp32 | "
          f"sample CPU s ({args.samples} samples) | NLL, {args.images} images | "
          "NLL - NLL(fp32) | logprob CPU s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        xi, yi, gi, li = (os.path.join(tmp, n) for n in ("x.npy", "y.npy", "g.npy", "l.npy"))
        np.save(xi, x[pick].astype(np.float64))
        np.save(yi, y[pick].astype(np.int64))
        np.save(gi, grid)
        np.save(li, (np.arange(args.samples) % 10).astype(np.int64))
        base_samples = base_nll = None
        for p in PRECISIONS:
            text, _ = run(args.cli, "validate", MODEL, "--precision", p)
            m = re.search(r"velocity\s+\d+ points: max relative error (\S+)", text)
            verror = m.group(1) if m else "?"
            if "FAILED" in text:
                verror += " (FAILED)"
            out = os.path.join(tmp, f"s_{p}.npy")
            _, sample_cpu = run(args.cli, "sample", MODEL, "-n", str(args.samples), "--labels",
                                li, "--guidance", "1", "--seed", "1", "--method", "rk4",
                                "--steps", "20", "-o", out, "--precision", p)
            s = np.load(out).astype(np.float64).reshape(args.samples, -1)
            if base_samples is None:
                base_samples = s
            rms = float(np.sqrt(np.mean(np.sum((s - base_samples) ** 2, axis=1) / s.shape[1])))
            lp = os.path.join(tmp, f"lp_{p}.npy")
            _, lp_cpu = run(args.cli, "logprob", MODEL, "-i", xi, "--labels", yi, "-o", lp,
                            "--method", "rk4", "--grid", gi, "--divergence", "exact",
                            "--precision", p)
            nll = float(-np.mean(np.load(lp)))
            if base_nll is None:
                base_nll = nll
            print(f"| {p} | {verror} | {rms:.3g} | {sample_cpu:.1f} | {nll:.3f} | "
                  f"{nll - base_nll:+.4f} | {lp_cpu:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
