#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""CLI round trip: PyTorch -> ONNX -> converter/siflow-convert -> siflow validate / logprob.

Usage: tests/golden/roundtrip_torch.py PATH/TO/siflow

1. A seeded PyTorch velocity net (one input [x, t], t last, d = 3, tanh and SiLU) is exported to
   ONNX and converted with `converter/siflow-convert --time-column last --test-vectors 16`.
2. `siflow validate` must pass on the embedded test vectors.
3. `siflow logprob --method rk4 --steps 32 --divergence exact` on data points must match, within
   1e-3 nats (absolute), a float64 computation done here in PyTorch alone: the exact divergence
   from torch.autograd (one backward pass per coordinate) and a classic RK4 integration of the
   augmented state (X, l), dX/dt = v, dl/dt = div v, from t = 1 back to t = 0 on the same uniform
   grid, log p(x) = log N(X(0); 0, I) + l(0). This oracle is independent of
   siflow_convert.reference.

Exits 1 with a message naming the failing step, the error and the bound.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONVERT = os.path.join(REPO, "converter", "siflow-convert")
DIM, STEPS, N, LOGP_ABS = 3, 32, 24, 1e-3


class TLastNet(nn.Module):
    """v from one input [x, t] (t last): Linear, tanh, Linear, SiLU, Linear."""

    def __init__(self, d=DIM, h=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, h), nn.Tanh(), nn.Linear(h, h), nn.SiLU(),
                                 nn.Linear(h, d))

    def forward(self, xt):
        return self.net(xt)


def velocity(net: nn.Module, t: float, x: torch.Tensor) -> torch.Tensor:
    tcol = torch.full((x.shape[0], 1), t, dtype=x.dtype)
    return net(torch.cat([x, tcol], dim=1))


def velocity_and_divergence(net: nn.Module, t: float, x: torch.Tensor):
    """v(t, x) and its exact divergence trace(dv/dx) per row, by autograd."""
    x = x.detach().requires_grad_(True)
    v = velocity(net, t, x)
    div = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(x.shape[1]):
        g, = torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)
        div = div + g[:, i]
    return v.detach(), div.detach()


def torch_log_prob(net: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """log p(x) by classic RK4 on (X, l) from t = 1 to 0 with h = -1/steps; N(0, I) base."""
    h = -1.0 / steps
    X, ell = x.clone(), torch.zeros(x.shape[0], dtype=x.dtype)
    for n in range(steps):
        t = 1.0 - n / steps
        k1, d1 = velocity_and_divergence(net, t, X)
        k2, d2 = velocity_and_divergence(net, t + h / 2, X + h / 2 * k1)
        k3, d3 = velocity_and_divergence(net, t + h / 2, X + h / 2 * k2)
        k4, d4 = velocity_and_divergence(net, t + h, X + h * k3)
        X = X + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ell = ell + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    base = -0.5 * (X**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return base + ell


def run(cmd: list, what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"roundtrip_torch: FAIL {what}: exit {proc.returncode}\n"
                         f"{proc.stdout}{proc.stderr}")


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    cli = argv[1]
    torch.manual_seed(11)
    net = TLastNet().eval()
    with tempfile.TemporaryDirectory(prefix="siflow-roundtrip-") as tmp:
        onnx_path, sif = os.path.join(tmp, "net.onnx"), os.path.join(tmp, "net.sif")
        torch.onnx.export(net, (torch.zeros(4, DIM + 1),), onnx_path, input_names=["xt"],
                          output_names=["v"], dynamic_axes={"xt": {0: "B"}, "v": {0: "B"}},
                          opset_version=13)
        run([sys.executable, CONVERT, onnx_path, "-o", sif, "--time-column", "last",
             "--interpolant", "trig", "--name", "roundtrip", "--test-vectors", "16"],
            "siflow-convert")
        run([cli, "validate", sif], "siflow validate")
        print("roundtrip_torch: ok   siflow validate passed")

        x = np.random.default_rng(12).normal(size=(N, DIM))
        xin, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "logp.npy")
        np.save(xin, x)
        run([cli, "logprob", sif, "-i", xin, "-o", out, "--divergence", "exact",
             "--method", "rk4", "--steps", str(STEPS)], "siflow logprob")
        got = np.load(out)
    oracle = torch_log_prob(net.double(), torch.from_numpy(x), STEPS).numpy()
    err = float(np.max(np.abs(got - oracle))) if got.shape == oracle.shape else float("inf")
    ok = err <= LOGP_ABS
    print(f"roundtrip_torch: {'ok  ' if ok else 'FAIL'} logprob vs PyTorch float64 oracle: "
          f"absolute error {err:.3e} {'<=' if ok else 'EXCEEDS'} bound {LOGP_ABS:.0e} "
          f"(log p in [{oracle.min():.3f}, {oracle.max():.3f}])")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
