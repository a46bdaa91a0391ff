#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The 8x8 handwritten digits of the bundled class-conditional flow: seeded train/held-out split,
dequantization and the scaling between data space and the flow's space.

Data: scikit-learn's `load_digits` (Debian python3-sklearn), 1797 images of 8x8 pixels with
integer grey levels 0..16 (17 levels) and labels 0..9; a copy of the test set of the UCI
"Optical Recognition of Handwritten Digits" data (E. Alpaydin, C. Kaynak, 1998; see NOTICE).

- Split: per class, a seeded permutation (numpy default_rng(SPLIT_SEED)) of that class's
  images in load_digits order puts the first HELDOUT_PER_CLASS into the held-out set and the
  rest into the training set (10 x 30 = 300 held-out, 1497 training images).
- Dequantization: x~ = (x + u) / 17 with u ~ U[0, 1)^64, so x~ lies in [0, 1)^64 and the
  discrete probability of x is at least exp(E_u log p(x~)) * 17^-64 (Jensen). Training draws a
  fresh u every step; the held-out set is dequantized once with HELDOUT_DEQUANT_SEED and written
  to examples/data/digits_heldout.npy (float64 [300, 1, 8, 8], x~) with the labels in
  examples/data/digits_heldout_labels.npy (int64 [300]); the integer image is floor(17 x~).
  `digits_data.py --check` regenerates both from scikit-learn and compares them bit for bit
  (ctest example_digits_heldout); without an option it rewrites them.
- Flow space: z = (x~ - MEAN) / STD = 2 x~ - 1 in [-1, 1); the .sif stores MEAN and STD as its
  normalisation, so siflow's sample/logprob speak x~ and log p(x~) = log p(z) + 64 log 2.
"""
from __future__ import annotations

import math
import os

import numpy as np

NUM_CLASSES = 10
NULL_LABEL = 10              # the unconditional label of classifier-free guidance
LEVELS = 17                  # grey levels 0..16
SHAPE = (1, 8, 8)
DIM = 64
SPLIT_SEED = 14
HELDOUT_PER_CLASS = 30
HELDOUT_DEQUANT_SEED = 1014
MEAN = 0.5                   # z = (x~ - MEAN) / STD, the same for every pixel
STD = 0.5
LOG_DET = DIM * math.log(1.0 / STD)    # log p(x~) = log p(z) + LOG_DET

HERE = os.path.dirname(os.path.abspath(__file__))
HELDOUT_PATH = os.path.join(HERE, "data", "digits_heldout.npy")
HELDOUT_LABELS_PATH = os.path.join(HERE, "data", "digits_heldout_labels.npy")


def load_all():
    """All 1797 images as int64 [N, 64] grey levels 0..16 and int64 labels [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.data).astype(np.int64)
    y = d.target.astype(np.int64)
    if x.shape != (1797, DIM) or x.min() < 0 or x.max() >= LEVELS:
        raise RuntimeError(f"load_digits returned an unexpected array {x.shape}, "
                           f"range {x.min()}..{x.max()}")
    return x, y


def split_indices(labels: np.ndarray):
    """(train, heldout) index arrays: per class the first HELDOUT_PER_CLASS of a seeded
    permutation are held out. Both sorted."""
    rng = np.random.default_rng(SPLIT_SEED)
    held = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        held.append(idx[rng.permutation(idx.size)[:HELDOUT_PER_CLASS]])
    held = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(labels.size), held)
    return train, held


def dequantize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x~ = (x + u) / 17, u ~ U[0, 1), float64, same shape as x."""
    return (x + rng.random(x.shape)) / LEVELS


def to_flow(xt: np.ndarray) -> np.ndarray:
    return (xt - MEAN) / STD


def from_flow(z: np.ndarray) -> np.ndarray:
    return z * STD + MEAN


def train_set():
    """Training images (int64 [N, 64]) and labels."""
    x, y = load_all()
    train, _ = split_indices(y)
    return x[train], y[train]


def heldout_set():
    """Held-out images (int64 [300, 64]), labels, and their seeded dequantization x~
    (float64 [300, 1, 8, 8])."""
    x, y = load_all()
    _, held = split_indices(y)
    xt = dequantize(x[held], np.random.default_rng(HELDOUT_DEQUANT_SEED))
    return x[held], y[held], xt.reshape((-1,) + SHAPE)


def write_heldout(path: str = HELDOUT_PATH, labels_path: str = HELDOUT_LABELS_PATH) -> None:
    """Writes the dequantized held-out images and their labels (atomically)."""
    _, labels, xt = heldout_set()
    for p, a in ((path, xt.astype(np.float64)), (labels_path, labels.astype(np.int64))):
        tmp = p + ".tmp.npy"
        np.save(tmp, a)
        os.replace(tmp, p)


def load_heldout(path: str = HELDOUT_PATH, labels_path: str = HELDOUT_LABELS_PATH):
    """The committed held-out x~ [N, 1, 8, 8] and labels [N], checked against the split."""
    xt = np.load(path)
    labels = np.load(labels_path)
    if xt.shape != (NUM_CLASSES * HELDOUT_PER_CLASS,) + SHAPE or labels.shape != xt.shape[:1]:
        raise RuntimeError(f"{path}: unexpected shapes {xt.shape}, {labels.shape}")
    return xt, labels


def check_heldout(path: str = HELDOUT_PATH, labels_path: str = HELDOUT_LABELS_PATH) -> list:
    """Differences between the committed held-out files and the split regenerated from
    scikit-learn's data (empty when they agree bit for bit and the split is sound)."""
    problems = []
    x, y = load_all()
    train, held = split_indices(y)
    if np.intersect1d(train, held).size or train.size + held.size != y.size:
        problems.append("the training and held-out indices overlap or miss images")
    counts = np.bincount(y[held], minlength=NUM_CLASSES)
    if not np.all(counts == HELDOUT_PER_CLASS):
        problems.append(f"held-out images per class {counts.tolist()}, expected "
                        f"{HELDOUT_PER_CLASS} each")
    _, labels, xt = heldout_set()
    try:
        c_xt, c_labels = load_heldout(path, labels_path)
    except (OSError, ValueError, RuntimeError) as e:
        return problems + [str(e)]
    if c_xt.dtype != np.float64 or not np.array_equal(c_xt, xt):
        problems.append(f"{path} differs from the regenerated dequantized images")
    if c_labels.dtype != np.int64 or not np.array_equal(c_labels, labels):
        problems.append(f"{labels_path} differs from the regenerated labels")
    if not np.array_equal(np.floor(c_xt * LEVELS).reshape(-1, DIM), x[held]):
        problems.append("floor(17 x~) of the committed images is not the original image")
    if c_xt.min() < 0 or c_xt.max() >= 1:
        problems.append("committed x~ outside [0, 1)")
    return problems


def main(argv) -> int:
    if argv[1:] == ["--check"]:
        import importlib.util
        if importlib.util.find_spec("sklearn") is None:
            print("SKIPPED: scikit-learn is not installed (Debian: python3-sklearn)")
            return 77
        problems = check_heldout()
        for p in problems:
            print(f"digits_data: {p}")
        if not problems:
            print("digits_data: the committed held-out split matches load_digits and the seeds")
        return 1 if problems else 0
    if argv[1:]:
        print("usage: digits_data.py [--check]  (no option: write the held-out files)")
        return 2
    write_heldout()
    xt, labels = load_heldout()
    print(f"wrote {HELDOUT_PATH} {xt.shape} and {HELDOUT_LABELS_PATH} {labels.shape}")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv))
