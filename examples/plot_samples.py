#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plots 2-D samples coloured by their log-likelihood and writes a PNG (atomically).

Usage: plot_samples.py SAMPLES.npy LOGP.npy OUT.png [--title TEXT]
Runs on Debian's python3-numpy and python3-matplotlib (/usr/bin/python3).
"""
import argparse
import os
import sys

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", help="float32 .npy of shape [N, 2]")
    parser.add_argument("logp", help="float64 .npy of shape [N]")
    parser.add_argument("out", help="output .png")
    parser.add_argument("--title", default="siflow samples")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.load(args.samples)
    logp = np.load(args.logp)
    if x.ndim != 2 or x.shape[1] != 2:
        sys.exit(f"plot_samples: {args.samples} has shape {x.shape}, expected [N, 2]")
    if logp.shape != (x.shape[0],):
        sys.exit(f"plot_samples: {args.logp} has shape {logp.shape}, expected [{x.shape[0]}]")

    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    points = ax.scatter(x[:, 0], x[:, 1], c=logp, s=4, cmap="viridis")
    fig.colorbar(points, ax=ax, label="log p(x) (nats)")
    ax.set_aspect("equal")
    ax.set_title(f"{args.title}\n{x.shape[0]} samples, mean log p = {logp.mean():.3f}")
    ax.set_xlabel("x0")
    ax.set_ylabel("x1")
    fig.tight_layout()
    tmp = args.out + ".tmp.png"
    fig.savefig(tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
