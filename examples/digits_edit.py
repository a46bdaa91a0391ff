#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Editing a digit with the class-conditional digits model through the siflow CLI: encode a
held-out image with its own label, decode the base point with another label.

    siflow encode digits.sif -i x.npy --labels y.npy -o z.npy
    siflow decode digits.sif -i z.npy --labels y2.npy --guidance W -o edited.npy

The base point keeps what the label does not decide (stroke width, slant, position), the new
label decides the class. Also decodes z with the original label (the round trip, which must
return x up to the integration error) and classifies the edited images with the card's SVC
(examples/digits_card.py; trained on the training split) to count how many became the new class.

--check (ctest example_digits_edit) fails unless the round trip returns x within --tolerance and
the edited images are classified as their new label more often than chance (1/10) by a margin;
exits 77 (skipped) without python3-sklearn. --png writes original / round trip / edited rows.

Usage: digits_edit.py [--model M] [--siflow CLI] [--per-class K] [--shift S] [--png OUT] [--check]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import digits_data as dd  # noqa: E402


def run(cli, args):
    r = subprocess.run([cli] + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"digits_edit: siflow {args[0]} failed ({r.returncode}): {r.stderr.strip()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(HERE, "models", "digits.sif"))
    ap.add_argument("--siflow", default=os.path.join(os.path.dirname(HERE), "build", "runtime",
                                                     "cli", "siflow"))
    ap.add_argument("--per-class", type=int, default=1,
                    help="held-out images per class to edit (the first K of each; default 1)")
    ap.add_argument("--shift", type=int, default=5,
                    help="the new label is (y + shift) mod 10 (default 5)")
    ap.add_argument("--steps", type=int, default=20,
                    help="RK4 steps of encode and decode on the power:2 grid (default 20)")
    ap.add_argument("--guidance", type=float, default=2.0,
                    help="guidance weight of the edit's decode (default 2; encode and the "
                    "round trip use 1)")
    ap.add_argument("--tolerance", type=float, default=1e-3,
                    help="--check: max |x - decode(encode(x, y), y)| allowed (default 1e-3)")
    ap.add_argument("--min-accuracy", type=float, default=0.5,
                    help="--check: least fraction of edits classified as the new label "
                    "(default 0.5; chance is 0.1)")
    ap.add_argument("--png", help="write original / round trip / edited as a PNG grid")
    ap.add_argument("--check", action="store_true", help="exit 1 unless both checks pass")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.shift % dd.NUM_CLASSES == 0:
        ap.error("--shift must not be a multiple of 10 (the edit would keep the label)")
    import digits_card
    try:
        import sklearn.svm  # noqa: F401 (digits_card.train_classifier's SVC)
    except ImportError as e:
        print(f"SKIPPED: python3-sklearn is not installed ({e})")
        return 77
    if not os.access(args.siflow, os.X_OK):
        print(f"SKIPPED: siflow CLI not built ({args.siflow})")
        return 77

    xt, labels = dd.load_heldout()
    idx = np.concatenate([np.flatnonzero(labels == c)[:args.per_class]
                          for c in range(dd.NUM_CLASSES)])
    x, y = xt[idx], labels[idx].astype(np.int64)
    y2 = (y + args.shift) % dd.NUM_CLASSES
    common = ["--method", "rk4", "--steps", str(args.steps), "--grid-kind", "power:2",
              "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as d:
        p = {n: os.path.join(d, n + ".npy") for n in ("x", "y", "y2", "z", "back", "edit")}
        np.save(p["x"], x)
        np.save(p["y"], y)
        np.save(p["y2"], y2)
        run(args.siflow, ["encode", args.model, "-i", p["x"], "--labels", p["y"], "-o",
                          p["z"]] + common)
        run(args.siflow, ["decode", args.model, "-i", p["z"], "--labels", p["y"], "-o",
                          p["back"]] + common)
        run(args.siflow, ["decode", args.model, "-i", p["z"], "--labels", p["y2"], "--guidance",
                          repr(args.guidance), "-o", p["edit"]] + common)
        back = np.load(p["back"]).astype(np.float64).reshape(x.shape)
        edit = np.load(p["edit"]).astype(np.float64).reshape(x.shape)

    err = float(np.max(np.abs(back - x)))
    change = float(np.mean(np.abs(edit - x)))
    clf = digits_card.train_classifier(0)
    pred = clf.predict(edit.reshape(len(edit), -1))
    acc = float(np.mean(pred == y2))
    kept = float(np.mean(pred == y))
    print(f"{len(x)} held-out digits, encode with y, decode with y' = (y + {args.shift}) mod 10 "
          f"at guidance {args.guidance:g} (RK4 {args.steps} on the power:2 grid)")
    print(f"round trip decode(encode(x, y), y): max |error| {err:.3g} (grey levels x~ in [0, 1))")
    print(f"edit: mean |x' - x| {change:.3f}; classified as y' {acc:.2f}, still as y {kept:.2f} "
          f"(chance 0.10)")
    if args.png:
        import plot_digits
        plot_digits.plot_digit_grid(np.concatenate([x, back, edit]), args.png, rows=3,
                                    title=f"encode with y, decode with y + {args.shift}",
                                    row_labels=["x", "round trip", "edited"])
        print(f"wrote {args.png}")
    if args.check:
        bad = []
        if not err <= args.tolerance:
            bad.append(f"round-trip error {err:.3g} above {args.tolerance:g}")
        if not acc >= args.min_accuracy:
            bad.append(f"edited images classified as the new label {acc:.2f} < "
                       f"{args.min_accuracy:g}")
        if bad:
            print("FAIL: " + "; ".join(bad))
            return 1
        print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
