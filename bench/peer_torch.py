#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The PyTorch peer of bench/run.sh: the same network as bench_flow's model, built from its
.npy weights, integrated by the classic-RK4 loop a user would write, in float32 without
autograd. Threads are pinned for torch and OpenBLAS alike (set OPENBLAS_NUM_THREADS and
OMP_NUM_THREADS before starting, as bench/run.sh does).

  peer_torch.py DIR MODEL BATCH STEPS REPS THREADS     prints "median S min S checksum C"
  peer_torch.py DIR MODEL BATCH STEPS REPS THREADS --logp
                                                        the same RK4 loop integrating the exact
                                                        log-likelihood too, as a PyTorch user
                                                        would: autograd, d backward passes per
                                                        velocity evaluation for the divergence;
                                                        prints "median S min S checksum C
                                                        logp_sum L", L the sum over rows of
                                                        -integral of div v dt (the change of log
                                                        density along the path, without the
                                                        base's log N(z))
  peer_torch.py DIR MODEL --export-onnx OUT.onnx        the same network as ONNX (inputs x, t)
"""
import statistics
import sys
import time

import numpy as np
import torch

MODELS = {  # name: (dim, time first, activation)
    "m1": (2, True, torch.nn.SiLU),
    "m2": (16, False, lambda: torch.nn.GELU(approximate="none")),
}


class Net(torch.nn.Module):
    def __init__(self, directory, name):
        super().__init__()
        self.dim, self.t_first, act = MODELS[name]
        layers, i = [], 0
        while True:
            try:
                w = np.load(f"{directory}/{name}_w{i}.npy")
            except FileNotFoundError:
                break
            b = np.load(f"{directory}/{name}_b{i}.npy").reshape(-1)
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin, act()]
            i += 1
        self.net = torch.nn.Sequential(*layers[:-1])  # no activation after the last layer

    def forward(self, x, t):
        return self.net(torch.cat([t, x] if self.t_first else [x, t], dim=1))


def rk4(net, x, steps):
    h = 1.0 / steps
    t = torch.empty(x.shape[0], 1)
    for n in range(steps):
        t0 = n * h
        k1 = net(x, t.fill_(t0))
        k2 = net(x + 0.5 * h * k1, t.fill_(t0 + 0.5 * h))
        k3 = net(x + 0.5 * h * k2, t.fill_(t0 + 0.5 * h))
        k4 = net(x + h * k3, t.fill_(t0 + h))
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def velocity_div(net, x, t):
    """v(x, t) and its exact divergence, sum_i dv_i/dx_i, by one backward pass per dimension."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = net(x, t)
        div = torch.zeros(x.shape[0])
        for i in range(net.dim):
            g, = torch.autograd.grad(v[:, i].sum(), x, retain_graph=i + 1 < net.dim)
            div += g[:, i]
    return v.detach(), div


def rk4_logp(net, x, steps):
    """Classic RK4 on the augmented ODE dx/dt = v, dl/dt = -div v; returns x and l (per row)."""
    h = 1.0 / steps
    t = torch.empty(x.shape[0], 1)
    logp = torch.zeros(x.shape[0])
    for n in range(steps):
        t0 = n * h
        k1, d1 = velocity_div(net, x, t.fill_(t0))
        k2, d2 = velocity_div(net, x + 0.5 * h * k1, t.fill_(t0 + 0.5 * h))
        k3, d3 = velocity_div(net, x + 0.5 * h * k2, t.fill_(t0 + 0.5 * h))
        k4, d4 = velocity_div(net, x + h * k3, t.fill_(t0 + h))
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        logp = logp - (h / 6.0) * (d1 + 2 * d2 + 2 * d3 + d4)
    return x, logp


def main(argv):
    directory, name = argv[1], argv[2]
    net = Net(directory, name).eval()
    if argv[3] == "--export-onnx":
        x, t = torch.zeros(4, net.dim), torch.zeros(4, 1)
        torch.onnx.export(net, (x, t), argv[4], input_names=["x", "t"], output_names=["v"],
                          dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                          opset_version=17)
        return 0
    logp_mode = "--logp" in argv[7:]
    extra = [a for a in argv[7:] if a != "--logp"]
    if len(argv) < 7 or extra:
        print("usage: peer_torch.py DIR MODEL BATCH STEPS REPS THREADS [--logp] | "
              "peer_torch.py DIR MODEL --export-onnx OUT.onnx", file=sys.stderr)
        return 2
    batch, steps, reps, threads = (int(a) for a in argv[3:7])
    torch.set_num_threads(threads)
    if logp_mode:
        net.requires_grad_(False)  # gradients are only ever taken with respect to x
    n = np.arange(batch * net.dim, dtype=np.float64)
    z = torch.from_numpy(np.sin(0.7 * n + 0.3).astype(np.float32).reshape(batch, net.dim))
    seconds = []
    with torch.no_grad():
        for r in range(reps + 1 if reps > 1 else 1):
            start = time.perf_counter()
            if logp_mode:
                x, logp = rk4_logp(net, z, steps)
            else:
                x = rk4(net, z, steps)
            sec = time.perf_counter() - start
            if reps <= 1 or r > 0:
                seconds.append(sec)
    line = (f"median {statistics.median(seconds):.6f} min {min(seconds):.6f} "
            f"checksum {float(x.double().sum()):.6g}")
    if logp_mode:
        line += f" logp_sum {float(logp.double().sum()):.6g}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
