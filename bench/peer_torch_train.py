#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The PyTorch peer of siflow's training-step benchmark: the same MLP v([x, t]), batch, interpolant
and loss, one CPU float32 step = draw data, forward, loss, backward, clip (norm 1), AdamW, timed
whole after warm-up. Prints one key=value line (step_ms_median, ...; --profile: prof_*_ms per phase).
"""
import argparse
import math
import os
import statistics
import time

ACTIVATIONS = ("silu", "relu", "tanh", "gelu", "gelu_tanh", "softplus", "elu", "sigmoid",
               "leaky_relu", "mish")
ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--dim", type=int, default=2)
ap.add_argument("--hidden", default="256,256,256")
ap.add_argument("--activation", choices=ACTIVATIONS, default="silu")
ap.add_argument("--batch", type=int, default=4096)
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--loss", choices=["interpolant", "regression"], default="interpolant")
ap.add_argument("--interpolant", choices=["trig", "linear"], default="trig")
ap.add_argument("--profile", action="store_true",
                help="also the median ms of data+forward+loss, backward (with zero_grad), clip, step")
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
# OpenBLAS and OpenMP read these when loaded, so before torch is imported; unless already set,
# both are pinned to --threads and OpenMP waits passively: with 2 threads, torch's spinning OpenMP
# workers otherwise starve OpenBLAS's own threads (no speed-up, medians 1.3-3.7x worse).
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

MODULES = {
    "silu": torch.nn.SiLU, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
    "gelu": lambda: torch.nn.GELU(approximate="none"),
    "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh"),
    "softplus": torch.nn.Softplus, "elu": torch.nn.ELU, "sigmoid": torch.nn.Sigmoid,
    "leaky_relu": torch.nn.LeakyReLU, "mish": torch.nn.Mish,
}


class Net(torch.nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        layers, width = [], dim + 1
        for h in hidden:
            layers += [torch.nn.Linear(width, h), MODULES[act]()]
            width = h
        layers.append(torch.nn.Linear(width, dim))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x, t):
        return self.net(torch.cat([x, t], dim=1))


def sample_data(n, dim):
    """FFJORD's checkerboard at its x2 scale for dim 2, N(1, 2^2) per coordinate otherwise."""
    if dim != 2:
        return torch.randn(n, dim) * 2 + 1
    x1 = torch.rand(n) * 4 - 2
    x2 = torch.rand(n) - torch.randint(0, 2, (n,)).float() * 2 + torch.remainder(x1.floor(), 2)
    return torch.stack([x1, x2], dim=1) * 2


def coefficients(t, kind):
    """a, b, a_dot, b_dot of x_t = a x0 + b x1."""
    if kind == "linear":
        return 1 - t, t, torch.full_like(t, -1.0), torch.ones_like(t)
    c, s = torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
    return c, s, -0.5 * math.pi * s, 0.5 * math.pi * c


def main():
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    hidden = [int(h) for h in args.hidden.split(",") if h]
    net = Net(args.dim, hidden, args.activation)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    ref = sample_data(100_000, args.dim)
    mean, std = ref.mean(0), ref.std(0)

    def step():
        marks = [time.perf_counter()]
        x1 = (sample_data(args.batch, args.dim) - mean) / std
        x0 = torch.randn(args.batch, args.dim)
        t = torch.rand(args.batch, 1)
        a, b, a_dot, b_dot = coefficients(t, args.interpolant)
        xt, u = a * x0 + b * x1, a_dot * x0 + b_dot * x1
        v = net(xt, t)
        if args.loss == "interpolant":
            loss = ((v * v).sum(1) - 2 * (u * v).sum(1)).mean()
        else:
            loss = ((v - u) ** 2).sum(1).mean()
        marks.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        return loss.item(), [1e3 * (m1 - m0) for m0, m1 in zip(marks, marks[1:])]

    for _ in range(args.warmup):
        step()
    total_ms, phases = [], []
    cpu_start = time.process_time()
    for _ in range(args.steps):
        start = time.perf_counter()
        loss, split = step()
        total_ms.append(1e3 * (time.perf_counter() - start))
        phases.append(split)
    cpu_ms = 1e3 * (time.process_time() - cpu_start) / args.steps

    blas = "unknown"  # BLAS_INFO says "generic" on Debian: name the library actually mapped
    with open("/proc/self/maps") as maps:
        libs = maps.read()
    for name, key in (("mkl", "libmkl"), ("openblas-pthread", "openblas-pthread"),
                      ("openblas-openmp", "openblas-openmp"), ("openblas", "openblas"),
                      ("reference", "blas/libblas")):
        if key in libs:
            blas = name
            break
    info = torch.__config__.show()
    blas_info = info.split("BLAS_INFO=")[1].split(",")[0] if "BLAS_INFO=" in info else "?"
    line = (f"peer=torch torch={torch.__version__} blas_info={blas_info} blas={blas} "
            f"omp_wait={os.environ['OMP_WAIT_POLICY']} "
            f"threads={args.threads} dim={args.dim} hidden={args.hidden} "
            f"activation={args.activation} loss={args.loss} interpolant={args.interpolant} "
            f"batch={args.batch} params={params} steps={args.steps} "
            f"step_ms_median={statistics.median(total_ms):.3f} step_ms_min={min(total_ms):.3f} "
            f"cpu_ms_mean={cpu_ms:.3f} "
            f"loss_last={loss:.6g}")
    if args.profile:
        names = ("data_fwd_loss", "backward", "clip", "opt")
        line += "".join(f" prof_{n}_ms={statistics.median(p[i] for p in phases):.3f}"
                        for i, n in enumerate(names))
    print(line)


if __name__ == "__main__":
    main()
