#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Converts a small PyTorch velocity net with converter/siflow-convert, then checks the siflow
# runtime against PyTorch from Python: velocities, and log-likelihoods of the RK4 flow with the
# exact divergence (PyTorch in float64 with autograd, siflow in float32). Exits 1 on a mismatch.
#   PYTHONPATH=build/python /usr/bin/python3 examples/python_validate.py
import math
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

try:
    import torch
except ImportError:
    print("SKIPPED: PyTorch is not installed (Debian: python3-torch)")
    sys.exit(77)

import siflow

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 20


class Velocity(torch.nn.Module):
    """v(t, x) for x in R^2: [x, t] -> 64 -> 64 -> 2 with SiLU (untrained, seeded)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(),
                                       torch.nn.Linear(64, 64), torch.nn.SiLU(),
                                       torch.nn.Linear(64, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t], dim=1))


def torch_log_prob(v, x, steps):
    """log rho_1(x) for a N(0, I) base: RK4 on (X, l) from t = 1 down to 0 with
    dX/dt = v, dl/dt = div v (docs/math.md), then log N(X(0)) + l(0)."""

    def field(t, y):
        y = y.detach().requires_grad_(True)
        out = v(y, torch.full((y.shape[0], 1), t, dtype=y.dtype))
        div = sum(torch.autograd.grad(out[:, i].sum(), y, retain_graph=True)[0][:, i]
                  for i in range(y.shape[1]))
        return out.detach(), div.detach()

    y, ell, h = x.clone(), torch.zeros(x.shape[0], dtype=x.dtype), -1.0 / steps
    for k in range(steps):
        t = 1.0 + k * h
        k1 = field(t, y)
        k2 = field(t + h / 2, y + h / 2 * k1[0])
        k3 = field(t + h / 2, y + h / 2 * k2[0])
        k4 = field(t + h, y + h * k3[0])
        y = y + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        ell = ell + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return -0.5 * (y ** 2).sum(1) - y.shape[1] / 2 * math.log(2 * math.pi) + ell


def main():
    torch.manual_seed(0)
    net = Velocity().eval()
    with tempfile.TemporaryDirectory() as tmp:
        scripted, sif = pathlib.Path(tmp) / "velocity.pt", pathlib.Path(tmp) / "velocity.sif"
        torch.jit.script(net).save(str(scripted))
        converted = subprocess.run([sys.executable, str(ROOT / "converter" / "siflow-convert"),
                                    str(scripted), "-o", str(sif), "--dim", "2"],
                                   capture_output=True, text=True)
        if converted.returncode != 0:
            sys.exit(f"siflow-convert failed:\n{converted.stderr}")
        print(converted.stdout, end="")
        model = siflow.load(sif)

    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 2))
    t = rng.uniform(size=256)
    net64 = net.double()
    with torch.no_grad():
        v_torch = net64(torch.from_numpy(x), torch.from_numpy(t)[:, None]).numpy()
    v_siflow = model.velocity(x, t)
    lp_torch = torch_log_prob(net64, torch.from_numpy(x), STEPS).numpy()
    lp_siflow = model.log_prob(x, method="rk4", steps=STEPS, divergence="exact")

    # float32 against float64: a velocity carries a few float32 roundings per layer (each
    # 6e-8 relative; measured 8e-8 in all); the log-likelihood adds STEPS RK4 steps of float32
    # state and divergence on top (measured 2e-6 nats). The tolerances leave 10x room.
    v_error = np.abs(v_siflow - v_torch).max() / max(1.0, np.abs(v_torch).max())
    lp_error = np.abs(lp_siflow - lp_torch).max()
    report = model.validate()  # the converter's embedded test vectors, re-run by the runtime
    print(f"velocity        256 points: max relative error {v_error:.2e} (tolerance 1e-6)")
    print(f"log-likelihood  256 points, RK4 {STEPS} steps, exact divergence: "
          f"max error {lp_error:.2e} nats (tolerance 2e-5)")
    print(f"validate        {report.velocity_count} embedded velocities: max relative error "
          f"{report.velocity_max_error:.2e} ({'ok' if report.ok else 'FAILED'})")
    model.close()
    return 0 if v_error <= 1e-6 and lp_error <= 2e-5 and report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
