#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Compares the siflow CLI against the float64 golden references in tests/golden/fixtures/.

Usage: tests/golden/check_golden.py PATH/TO/siflow [--fixtures DIR] [FIXTURE_NAME ...]

For every fixture (<name>.sif + <name>.npz written by make_golden.py) it runs the CLI and checks

  velocity   max|v - v_ref| / max|v_ref|             <= 1e-5   (float32 compute, float64 ref)
  decode     max|x - x_ref| / max|x_ref|             <= 1e-4   (classic RK4, 32 steps)
  decode logp, logprob  max|l - l_ref|               <= 1e-3   (exact divergence, RK4, 32 steps)
  sample     max|x - x_ref| / max|x_ref|             <= 1e-4   (--seed S, RK4, 32 steps)
  sample logp          max|l - l_ref|                <= 1e-3

Sample uses decode's bound: the Python reproduction draws the same Philox normals (they agree
to float32 rounding, ~1e-7 relative, since the runtime's own log/sin/cos and numpy's differ by
ulps in double) and then integrates the same ODE, so the only remaining difference is the
float32-vs-float64 trajectory error that the decode bound already covers.

Every failure names the model, the quantity, the error and the bound; the exit status is 1 if
any check fails, 0 otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")

VELOCITY_REL = 1e-5
TRAJECTORY_REL = 1e-4
LOGP_ABS = 1e-3


def run(cli: str, *args: str) -> None:
    """Runs one CLI command; a non-zero exit is reported with its stderr."""
    proc = subprocess.run([cli, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`siflow {' '.join(args)}` exited {proc.returncode}: "
                           f"{proc.stderr.strip()}")


def rel_inf(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (inf when shapes differ or values are not finite)."""
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def abs_inf(got: np.ndarray, ref: np.ndarray) -> float:
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - ref)))


class Checker:
    """Runs the CLI for one fixture in a scratch directory and records every comparison."""

    def __init__(self, cli: str, name: str, scratch: str, fixtures: str = FIXTURES):
        self.cli, self.name, self.dir = cli, name, scratch
        self.sif = os.path.join(fixtures, f"{name}.sif")
        self.ref = dict(np.load(os.path.join(fixtures, f"{name}.npz")))
        self.failures, self.lines = [], []

    def path(self, stem: str) -> str:
        return os.path.join(self.dir, f"{self.name}.{stem}.npy")

    def save(self, stem: str, a: np.ndarray) -> str:
        p = self.path(stem)
        np.save(p, a)
        return p

    def expect(self, quantity: str, err: float, bound: float, kind: str) -> None:
        ok = err <= bound
        line = (f"{self.name}: {quantity}: {kind} error {err:.3e} "
                f"{'<=' if ok else 'EXCEEDS'} bound {bound:.0e}")
        self.lines.append(("ok   " if ok else "FAIL ") + line)
        if not ok:
            self.failures.append(line)

    def velocity(self) -> None:
        r = self.ref
        run(self.cli, "velocity", self.sif, "-i", self.save("vel_y", r["vel_y"]),
            "-t", self.save("vel_t", r["vel_t"]), "-o", self.path("vel_out"))
        got = np.load(self.path("vel_out"))
        self.expect("velocity", rel_inf(got, r["vel_ref"]), VELOCITY_REL, "relative")

    def decode(self) -> None:
        r = self.ref
        steps = str(int(r["steps"][0]))
        run(self.cli, "decode", self.sif, "-i", self.save("z", r["z"]), "-o", self.path("dec"),
            "--logprob-out", self.path("dec_logp"), "--method", "rk4", "--steps", steps)
        self.expect("decode", rel_inf(np.load(self.path("dec")), r["decode_ref"]),
                    TRAJECTORY_REL, "relative")
        self.expect("decode logprob", abs_inf(np.load(self.path("dec_logp")),
                                              r["decode_logp_ref"]), LOGP_ABS, "absolute")

    def logprob(self) -> None:
        r = self.ref
        steps = str(int(r["steps"][1]))
        run(self.cli, "logprob", self.sif, "-i", self.save("x", r["x"]), "-o",
            self.path("logp"), "--divergence", "exact", "--method", "rk4", "--steps", steps)
        self.expect("logprob", abs_inf(np.load(self.path("logp")), r["logprob_ref"]),
                    LOGP_ABS, "absolute")

    def sample(self) -> None:
        r = self.ref
        steps, n = str(int(r["steps"][2])), str(len(r["sample_ref"]))
        run(self.cli, "sample", self.sif, "-n", n, "-o", self.path("smp"), "--logprob-out",
            self.path("smp_logp"), "--seed", str(int(r["sample_seed"])), "--method", "rk4",
            "--steps", steps)
        self.expect("sample", rel_inf(np.load(self.path("smp")), r["sample_ref"]),
                    TRAJECTORY_REL, "relative")
        self.expect("sample logprob", abs_inf(np.load(self.path("smp_logp")),
                                              r["sample_logp_ref"]), LOGP_ABS, "absolute")

    def all(self) -> None:
        for check in (self.velocity, self.decode, self.logprob, self.sample):
            try:
                check()
            except RuntimeError as e:
                line = f"{self.name}: {check.__name__}: {e}"
                self.lines.append("FAIL " + line)
                self.failures.append(line)


def fixture_names(fixtures: str):
    return sorted(f[:-4] for f in os.listdir(fixtures) if f.endswith(".sif"))


def main(argv) -> int:
    args = list(argv[1:])
    fixtures = FIXTURES
    if "--fixtures" in args:
        i = args.index("--fixtures")
        fixtures = args[i + 1]
        del args[i:i + 2]
    if not args:
        print(__doc__)
        return 2
    cli, names = args[0], args[1:] or fixture_names(fixtures)
    if len(names) < 4 and len(args) == 1:
        print(f"expected at least 4 fixtures in {fixtures}, found {names}")
        return 1
    failures = []
    with tempfile.TemporaryDirectory(prefix="siflow-golden-") as scratch:
        for name in names:
            c = Checker(cli, name, scratch, fixtures)
            c.all()
            print("\n".join(c.lines))
            failures += c.failures
    if failures:
        print(f"\n{len(failures)} golden check(s) failed:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nall golden checks passed ({len(names)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
