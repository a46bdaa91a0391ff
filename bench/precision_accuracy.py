#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Accuracy of the reduced precisions (PlanOptions::precision) on the bundled models, through the
siflow CLI: per model and precision, the velocity error of `siflow validate --precision P`
against the fp32 test vectors, the RMS distance of 2000 samples to the fp32 samples of the same
seed (RK4 50), and the held-out NLL (RK4 100, exact divergence, examples/data/<name>.npy) and its
difference to fp32. Prints a Markdown table.

Usage: bench/precision_accuracy.py SIFLOW_CLI [MODEL ...]   (default: examples/models/*.sif)
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def run(cli, *args):
    out = subprocess.run([cli, *args], capture_output=True, text=True)
    return out.returncode, out.stdout + out.stderr


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cli = argv[1]
    # By default the point models; the class-conditional digits.sif needs labels (own card).
    bundled = glob.glob(os.path.join(REPO, "examples", "models", "*.sif"))
    models = argv[2:] or sorted(m for m in bundled if os.path.basename(m) != "digits.sif")
    print("| model | precision | velocity error (validate) | sample RMS distance to fp32 | "
          "held-out NLL | NLL - NLL(fp32) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            name = os.path.splitext(os.path.basename(model))[0]
            data = os.path.join(REPO, "examples", "data", name + ".npy")
            base_samples = base_nll = None
            for p in PRECISIONS:
                _, text = run(cli, "validate", model, "--precision", p)
                m = re.search(r"velocity\s+\d+ points: max relative error (\S+)", text)
                verror = m.group(1) if m else "?"
                samples = os.path.join(tmp, f"{name}_{p}.npy")
                code, text = run(cli, "sample", model, "-n", "2000", "--seed", "1", "-o", samples,
                                 "--precision", p)
                if code != 0:
                    raise SystemExit(f"sample {name} {p}: {text}")
                x = np.load(samples).astype(np.float64)
                if base_samples is None:
                    base_samples = x
                rms = float(np.sqrt(np.mean(np.sum((x - base_samples) ** 2, axis=1))))
                nll_text = diff_text = "—"
                if os.path.exists(data):
                    logp = os.path.join(tmp, f"{name}_{p}_logp.npy")
                    code, text = run(cli, "logprob", model, "-i", data, "-o", logp, "--method",
                                     "rk4", "--steps", "100", "--divergence", "exact",
                                     "--precision", p)
                    if code != 0:
                        raise SystemExit(f"logprob {name} {p}: {text}")
                    nll = float(-np.mean(np.load(logp)))
                    if base_nll is None:
                        base_nll = nll
                    nll_text = f"{nll:.4f}"
                    diff_text = f"{nll - base_nll:+.4f}"
                print(f"| {name} | {p} | {verror} | {rms:.3g} | {nll_text} | {diff_text} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
