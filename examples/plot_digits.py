#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Draws 8x8 digit images as a grid, one row per class, and writes a PNG (atomically).

Usage: plot_digits.py SAMPLES.npy OUT.png [--rows R] [--title TEXT]
       plot_digits.py --write-labels LABELS.npy [--rows R] [--per-row N]
The second form writes the int64 labels 0,..,0,1,..,1,... (N of each of R classes) that
`siflow sample --labels` takes to sample such a grid in one call.
SAMPLES holds N images as [N, 1, 8, 8], [N, 8, 8] or [N, 64] in row order: the first N/R
images form the first row (class 0 when sampled with labels 0,..,0,1,..,1,...). Grey levels are
the dequantized x~ in [0, 1) (values outside are clipped for display). Runs on Debian's
python3-numpy and python3-matplotlib (/usr/bin/python3).
"""
import argparse
import os
import sys

import numpy as np


def as_images(a: np.ndarray) -> np.ndarray:
    """[N, 1, 8, 8], [N, 8, 8] or [N, 64] -> float64 [N, 8, 8]; anything else is an error."""
    a = np.asarray(a)
    if a.ndim == 4 and a.shape[1:] == (1, 8, 8):
        a = a[:, 0]
    elif a.ndim == 2 and a.shape[1] == 64:
        a = a.reshape(-1, 8, 8)
    if a.ndim != 3 or a.shape[1:] != (8, 8) or a.shape[0] == 0:
        raise ValueError(f"expected images [N, 1, 8, 8], [N, 8, 8] or [N, 64], got {a.shape}")
    return a.astype(np.float64)


def plot_digit_grid(images: np.ndarray, out: str, rows: int = 10, title: str = "",
                    row_labels=None) -> None:
    """Writes `images` ([N, 8, 8] or the shapes as_images takes) as a rows x (N / rows) grid of
    grey 8x8 tiles (white background, dark ink, 0 = white, 1 = black) to the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.clip(as_images(images), 0.0, 1.0)
    if rows < 1 or x.shape[0] % rows:
        raise ValueError(f"{x.shape[0]} images do not fill {rows} rows")
    cols = x.shape[0] // rows
    pad = 1
    canvas = np.zeros((rows * (8 + pad) + pad, cols * (8 + pad) + pad))
    for i in range(rows):
        for j in range(cols):
            r, c = pad + i * (8 + pad), pad + j * (8 + pad)
            canvas[r:r + 8, c:c + 8] = x[i * cols + j]
    fig, ax = plt.subplots(figsize=(0.35 * cols + 0.8, 0.35 * rows + 0.6), dpi=100)
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is None:
        row_labels = [str(i) for i in range(rows)]
    ax.set_yticks([pad + i * (8 + pad) + 3.5 for i in range(rows)])
    ax.set_yticklabels(row_labels)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = out + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)


def grid_labels(rows: int = 10, per_row: int = 10) -> np.ndarray:
    """int64 [rows * per_row]: per_row copies of 0, then of 1, ..., then of rows - 1."""
    return np.repeat(np.arange(rows, dtype=np.int64), per_row)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="?",
                        help=".npy of N images, [N, 1, 8, 8], [N, 8, 8] or [N, 64]")
    parser.add_argument("out", nargs="?", help="output .png")
    parser.add_argument("--rows", type=int, default=10, help="rows (classes; default 10)")
    parser.add_argument("--title", default="")
    parser.add_argument("--write-labels", metavar="LABELS.npy",
                        help="write the grid's labels instead of plotting")
    parser.add_argument("--per-row", type=int, default=10, help="images per row (default 10)")
    args = parser.parse_args()
    if args.write_labels:
        if args.rows < 1 or args.per_row < 1:
            sys.exit("plot_digits: --rows and --per-row must be positive")
        tmp = args.write_labels + ".tmp.npy"
        np.save(tmp, grid_labels(args.rows, args.per_row))
        os.replace(tmp, args.write_labels)
        print(f"wrote {args.write_labels}")
        return
    if not args.samples or not args.out:
        parser.error("SAMPLES.npy and OUT.png are required (or --write-labels)")
    try:
        plot_digit_grid(np.load(args.samples), args.out, args.rows, args.title)
    except ValueError as e:
        sys.exit(f"plot_digits: {args.samples}: {e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
