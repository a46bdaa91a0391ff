#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The image benchmark models of bench/run_image.sh and their PyTorch peer.

Models (random weights drawn from a fixed seed, PyTorch's default initialisation):
  unet28  x 1x28x28: conv_in to 32 channels, levels of 32, 64, 64 channels (multipliers 1, 2, 2),
          one residual block per level (GroupNorm(8), SiLU, 3x3 conv, the time embedding
          projected to one value per channel and added, GroupNorm(8), SiLU, 3x3 conv, 1x1 skip
          conv where the channels change), stride-2 3x3 down-sampling, single-head
          self-attention (GroupNorm, 1x1 q/k/v and output convs, matmul and softmax) at 7x7,
          the mirror decoder: nearest up-sampling and a 3x3 conv, the encoder's skip
          concatenated on the channels, a residual block; GroupNorm, SiLU and a 3x3 conv back
          to 1 channel.
  unet8   the same design on 1x8x8 (the digits shape, d = 64): 32 channels, multipliers (1, 2),
          attention at 4x4.

  unet28.py export MODEL DIR              DIR/MODEL.onnx (inputs x [B,1,H,W], t [B,1]; output v)
                                          and DIR/MODEL.sif through the converter (trig
                                          interpolant, N(0, I) base, no test vectors; the
                                          converter's self-check against the ONNX graph
                                          refuses a wrong conversion and its line is printed)
  unet28.py flops MODEL                   multiply-adds x 2 of one evaluation (convs, linears,
                                          attention matmuls)
  unet28.py run MODEL BATCH STEPS REPS THREADS euler|rk4
                                          times the sampling loop a PyTorch user writes (fixed
                                          steps from z, float32, no autograd); prints "median S
                                          min S cpu_median S checksum C rss_kib K" (cpu: CPU seconds)
  unet28.py logp MODEL BATCH STEPS REPS THREADS exact|hutchinson K
                                          times RK4 log-likelihood integration with the divergence
                                          by autograd: exact = d backward passes per evaluation,
                                          hutchinson = K Rademacher probes (one vector-Jacobian
                                          product each); prints the same plus "logp_sum L"
Threads are pinned (torch.set_num_threads; set OMP_NUM_THREADS and OPENBLAS_NUM_THREADS too).
"""
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = {"unet28": (28, (1, 2, 2)), "unet8": (8, (1, 2))}
BASE = 32
TEMB = 128


class ResBlock(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(8, cin)
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = torch.nn.Linear(TEMB, cout)
        self.norm2 = torch.nn.GroupNorm(8, cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = torch.nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = torch.nn.GroupNorm(8, c)
        self.q = torch.nn.Conv2d(c, c, 1)
        self.k = torch.nn.Conv2d(c, c, 1)
        self.v = torch.nn.Conv2d(c, c, 1)
        self.out = torch.nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q = self.q(n).reshape(b, c, h * w)
        k = self.k(n).reshape(b, c, h * w)
        v = self.v(n).reshape(b, c, h * w)
        a = torch.softmax(torch.matmul(q.transpose(1, 2), k) * (1.0 / math.sqrt(c)), dim=-1)
        o = torch.matmul(v, a.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.out(o)


class UNet(torch.nn.Module):
    def __init__(self, mults):
        super().__init__()
        chans = [BASE * m for m in mults]
        self.t1 = torch.nn.Linear(1, TEMB)
        self.t2 = torch.nn.Linear(TEMB, TEMB)
        self.conv_in = torch.nn.Conv2d(1, BASE, 3, padding=1)
        self.down_blocks = torch.nn.ModuleList()
        self.downs = torch.nn.ModuleList()
        prev = BASE
        for i, c in enumerate(chans):
            self.down_blocks.append(ResBlock(prev, c))
            if i + 1 < len(chans):
                self.downs.append(torch.nn.Conv2d(c, c, 3, stride=2, padding=1))
            prev = c
        self.attn = Attention(chans[-1])
        self.up_blocks = torch.nn.ModuleList()
        self.ups = torch.nn.ModuleList()
        for i in reversed(range(len(chans) - 1)):
            self.ups.append(torch.nn.Conv2d(prev, chans[i], 3, padding=1))
            self.up_blocks.append(ResBlock(2 * chans[i], chans[i]))
            prev = chans[i]
        self.norm_out = torch.nn.GroupNorm(8, prev)
        self.conv_out = torch.nn.Conv2d(prev, 1, 3, padding=1)

    def forward(self, x, t):
        emb = self.t2(F.silu(self.t1(t)))
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, emb)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        h = self.attn(h)
        for up, block in zip(self.ups, self.up_blocks):
            u = up(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = block(torch.cat([u, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def build(name):
    size, mults = SHAPES[name]
    torch.manual_seed(15 if name == "unet28" else 8)
    net = UNet(mults).eval()
    return net, size


def flops(name):
    net, size = build(name)
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += 2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        net(torch.zeros(1, 1, size, size), torch.zeros(1, 1))
    # Attention: Q^T K and V A^T, 2 c (hw)^2 flops each.
    c, hw = BASE * SHAPES[name][1][-1], (size // 2 ** (len(SHAPES[name][1]) - 1)) ** 2
    return total[0] + 4 * c * hw * hw


def export(name, out_dir):
    net, size = build(name)
    onnx_path = os.path.join(out_dir, name + ".onnx")
    x = torch.zeros(3, 1, size, size)
    t = torch.zeros(3, 1)
    torch.onnx.export(net, (x, t), onnx_path, input_names=["x", "t"], output_names=["v"],
                      dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                      opset_version=17)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "converter"))
    import siflow_convert as sc
    model = sc.convert(onnx_path, os.path.join(out_dir, name + ".sif"), test_vectors=0)
    if model.self_check is not None:
        print(f"{name}: {model.self_check.line()}")


def base_points(batch, size):
    n = batch * size * size
    z = torch.sin(0.7 * torch.arange(n, dtype=torch.float64) + 0.3).float()
    return z.reshape(batch, 1, size, size)


def timed(fn, reps):
    seconds, cpu = [], []
    out = None
    for r in range(0 if reps > 1 else 1, reps + 1):
        cpu_start = time.process_time()
        start = time.perf_counter()
        out = fn()
        sec = time.perf_counter() - start
        if r > 0:
            seconds.append(sec)
            cpu.append(time.process_time() - cpu_start)
    seconds.sort()
    return statistics.median(seconds), seconds[0], statistics.median(cpu), out


def sample(net, z, steps, method):
    h = 1.0 / steps
    x = z.clone()
    tb = torch.empty(z.shape[0], 1)
    with torch.no_grad():
        for s in range(steps):
            t0 = s * h
            if method == "euler":
                x = x + h * net(x, tb.fill_(t0))
                continue
            k1 = net(x, tb.fill_(t0))
            k2 = net(x + 0.5 * h * k1, tb.fill_(t0 + 0.5 * h))
            k3 = net(x + 0.5 * h * k2, tb.fill_(t0 + 0.5 * h))
            k4 = net(x + h * k3, tb.fill_(t0 + h))
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def divergence(net, x, t, mode, probes, gen):
    """v(x, t) and its divergence per row by autograd."""
    x = x.detach().requires_grad_(True)
    v = net(x, t)
    b = x.shape[0]
    flat_v, d = v.reshape(b, -1), x[0].numel()
    div = torch.zeros(b)
    if mode == "exact":
        for i in range(d):
            g, = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=True)
            div += g.reshape(b, -1)[:, i]
    else:
        for _ in range(probes):
            e = torch.randint(0, 2, flat_v.shape, generator=gen).float() * 2 - 1
            g, = torch.autograd.grad(flat_v, x, grad_outputs=e, retain_graph=True)
            div += (g.reshape(b, -1) * e).sum(1)
    return v.detach(), div.detach()


def log_likelihood(net, x1, steps, mode, probes):
    """RK4 backwards from the data (t = 1) to the base, accumulating -int div v dt."""
    gen = torch.Generator().manual_seed(0)
    h = 1.0 / steps
    x = x1.clone()
    acc = torch.zeros(x.shape[0], dtype=torch.float64)
    tb = torch.empty(x.shape[0], 1)
    for s in range(steps):
        t0 = 1.0 - s * h
        k1, d1 = divergence(net, x, tb.fill_(t0), mode, probes, gen)
        k2, d2 = divergence(net, x - 0.5 * h * k1, tb.fill_(t0 - 0.5 * h), mode, probes, gen)
        k3, d3 = divergence(net, x - 0.5 * h * k2, tb.fill_(t0 - 0.5 * h), mode, probes, gen)
        k4, d4 = divergence(net, x - h * k3, tb.fill_(t0 - h), mode, probes, gen)
        x = x - (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        acc += (h / 6) * (d1 + 2 * d2 + 2 * d3 + d4).double()
    return x, acc


def main(argv):
    if len(argv) == 3 and argv[0] == "export":
        export(argv[1], argv[2])
        return 0
    if len(argv) == 2 and argv[0] == "flops":
        print(flops(argv[1]))
        return 0
    if len(argv) >= 7 and argv[0] in ("run", "logp"):
        name, batch, steps, reps, threads = argv[1], *map(int, argv[2:6])
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        net, size = build(name)
        z = base_points(batch, size)
        if argv[0] == "run":
            med, lo, cpu, x = timed(lambda: sample(net, z, steps, argv[6]), reps)
            extra = ""
        else:
            probes = int(argv[7]) if argv[6] == "hutchinson" else 0
            med, lo, cpu, (x, acc) = timed(
                lambda: log_likelihood(net, z, steps, argv[6], probes), reps)
            extra = f" logp_sum {float(acc.sum()):.6g}"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"median {med:.6f} min {lo:.6f} cpu_median {cpu:.6f} checksum {float(x.double().sum()):.6g} "
              f"rss_kib {rss}{extra}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
