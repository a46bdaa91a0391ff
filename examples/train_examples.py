#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Trains the bundled example flows and converts them to .sif.

Each model is a velocity net v(t, x) trained with the stochastic-interpolant loss of Albergo &
Vanden-Eijnden (ICLR 2023),

    G(v) = E_{t, x0, x1} [ |v(t, x_t)|^2 - 2 (a'(t) x0 + b'(t) x1) . v(t, x_t) ],
    x_t = a(t) x0 + b(t) x1,  x0 ~ N(0, I),  x1 ~ data,  t ~ U[0, 1],

with the trig interpolant a = cos(pi t / 2), b = sin(pi t / 2) (the paper's setup). The net
reads one concatenated input [t, x] (t first, like the paper's code), so the converter is called
with --time-column first.

Datasets follow FFJORD's toy generators (checkerboard, 8 Gaussians, two moons), rewritten in
numpy, plus an 8-dimensional Gaussian mixture with diagonal covariances whose density is known
exactly. Training data are drawn fresh every step from a seeded generator; held-out data come
from a separate seed and are written to examples/data/<name>.npy.

One image model, trained only when named (--only digits): a class-conditional flow on
scikit-learn's 8x8 handwritten digits (split, dequantization and scaling in digits_data.py), a
small U-Net v(x, t, y) with inputs x [B, 1, 8, 8], t [B, 1] and an int64 label y [B] (10 = the
null label of classifier-free guidance); its card's numbers come from digits_card.py. Its
stages: train -> <work-dir>/digits.pt; export -> <work-dir>/digits.onnx (opset 17, dynamic
batch) and <work-dir>/digits_reference.npz (float64 PyTorch velocities at seeded points);
convert -> export, then <out-dir>/digits.sif through the converter's CLI with the label input.

Stages (--stage; `all` = train then convert):
  train    -> <work-dir>/<name>.pt   (EMA weights, normalisation, training record) and the
              held-out set <data-dir>/<name>.npy
  convert  -> <work-dir>/<name>.onnx, then <out-dir>/<name>.sif (siflow_convert, with
              metadata and 64 embedded test vectors), from the saved weights
  measure  -> held-out NLL with `siflow logprob` (RK4, 100 and 200 steps, exact divergence)
  entropy  -> Monte Carlo entropies of the datasets whose density is known

Usage: examples/train_examples.py [--only NAME ...] [--steps K] [--stage STAGE]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG32 = math.log(32.0)


# ----------------------------------------------------------------------------- datasets


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """FFJORD's checkerboard at its x2 scale: uniform on 8 of the 16 2x2 squares of [-4, 4]^2
    (total area 32, entropy log 32)."""
    x1 = rng.random(n) * 4 - 2
    x2_ = rng.random(n) - rng.integers(0, 2, n) * 2
    x2 = x2_ + (np.floor(x1) % 2)
    return np.stack([x1, x2], axis=1) * 2


_SQ = 1.0 / math.sqrt(2.0)
EIGHT_CENTRES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1),
                          (_SQ, _SQ), (_SQ, -_SQ), (-_SQ, _SQ), (-_SQ, -_SQ)]) * 4.0
EIGHT_SCALE = 1.414   # FFJORD divides the whole set by 1.414, not sqrt(2)
EIGHT_SIGMA = 0.5


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """FFJORD's 8 Gaussians: centres at radius 4 on the compass directions, sigma 0.5, then
    everything divided by 1.414 (vectorised; same distribution as FFJORD's per-point loop)."""
    point = rng.standard_normal((n, 2)) * EIGHT_SIGMA
    idx = rng.integers(0, 8, n)
    return (point + EIGHT_CENTRES[idx]) / EIGHT_SCALE


def eight_gaussians_log_prob(x: np.ndarray) -> np.ndarray:
    """Exact log-density of `eight_gaussians` (equal-weight isotropic mixture)."""
    means = EIGHT_CENTRES / EIGHT_SCALE
    s = EIGHT_SIGMA / EIGHT_SCALE
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    comp = -0.5 * sq / s**2 - 2 * math.log(s) - math.log(2 * math.pi) - math.log(8.0)
    return _logsumexp(comp, axis=1)


def two_moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """sklearn's make_moons(n, noise=0.1, shuffle=True) in numpy, then FFJORD's x*2 + [-1, -0.2]."""
    n_out = n // 2
    n_in = n - n_out
    th_out = np.linspace(0, math.pi, n_out)
    th_in = np.linspace(0, math.pi, n_in)
    x = np.concatenate([np.cos(th_out), 1 - np.cos(th_in)])
    y = np.concatenate([np.sin(th_out), 1 - np.sin(th_in) - 0.5])
    pts = np.stack([x, y], axis=1)[rng.permutation(n)]
    pts = pts + rng.normal(scale=0.1, size=pts.shape)
    return pts * 2 + np.array([-1.0, -0.2])


class DiagonalMixture:
    """A Gaussian mixture with diagonal covariances: exact sampling and log-density."""

    def __init__(self, weights, means, stds):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.stds = np.asarray(stds, dtype=np.float64)

    @staticmethod
    def make(dim: int, components: int, seed: int) -> "DiagonalMixture":
        """A fixed random mixture: means spread on a radius-3 scale, stds in [0.3, 0.9]."""
        rng = np.random.default_rng(seed)
        w = rng.dirichlet(np.full(components, 5.0))
        means = rng.normal(scale=1.5, size=(components, dim))
        stds = rng.uniform(0.3, 0.9, size=(components, dim))
        return DiagonalMixture(w, means, stds)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[k] + self.stds[k] * rng.standard_normal((n, self.means.shape[1]))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        z = (x[:, None, :] - self.means[None]) / self.stds[None]
        comp = (-0.5 * (z**2).sum(-1) - np.log(self.stds).sum(-1)[None]
                - 0.5 * x.shape[1] * math.log(2 * math.pi) + np.log(self.weights)[None])
        return _logsumexp(comp, axis=1)


MIXTURE8D = DiagonalMixture.make(dim=8, components=5, seed=20230501)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def mc_entropy(sampler, log_prob, n: int = 1_000_000, seed: int = 7, chunk: int = 100_000):
    """Monte Carlo entropy H = -E log p(X) from the exact density, with its standard error."""
    rng = np.random.default_rng(seed)
    vals = np.concatenate([-log_prob(sampler(rng, chunk)) for _ in range(n // chunk)])
    return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(vals.size))


@dataclass
class Spec:
    """One example: its data generator, true entropy (if known) and training setup."""
    dim: int
    sampler: Callable[[np.random.Generator, int], np.ndarray]
    entropy: Optional[Callable[[], tuple]]    # () -> (H, standard error); None = unknown
    entropy_note: str
    hidden: int = 256
    layers: int = 3
    steps: int = 4_000
    batch: int = 512
    lr: float = 2e-3
    heldout: int = 2000


SPECS: Dict[str, Spec] = {
    "checkerboard": Spec(2, checkerboard, lambda: (LOG32, 0.0), "log 32 (exact)",
                         steps=32_000),
    "eight_gaussians": Spec(2, eight_gaussians,
                            lambda: mc_entropy(eight_gaussians, eight_gaussians_log_prob),
                            "Monte Carlo from the exact mixture density",
                            hidden=128, steps=16_000),
    "two_moons": Spec(2, two_moons, None, "no closed form", hidden=128, steps=16_000),
    "mixture8d": Spec(8, MIXTURE8D.sample, lambda: mc_entropy(MIXTURE8D.sample, MIXTURE8D.log_prob),
                      "Monte Carlo from the exact mixture density", steps=12_000,
                      heldout=1000),
}


# ----------------------------------------------------------------------------- model, loss


class VelocityMLP(nn.Module):
    """v(t, x) from one concatenated input [t, x] (t first): layers x (Linear, SiLU), Linear."""

    def __init__(self, dim: int, hidden: int, layers: int):
        super().__init__()
        mods, width = [], dim + 1
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        mods.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*mods)

    def forward(self, tx: torch.Tensor) -> torch.Tensor:
        return self.net(tx)


def interpolant_loss(net: nn.Module, x0: torch.Tensor, x1: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    """The paper's G(v) for the trig interpolant, a Monte Carlo mean over the batch."""
    half_pi = 0.5 * math.pi
    a, b = torch.cos(half_pi * t), torch.sin(half_pi * t)
    da, db = -half_pi * torch.sin(half_pi * t), half_pi * torch.cos(half_pi * t)
    xt = a * x0 + b * x1
    v = net(torch.cat([t, xt], dim=1))
    target = da * x0 + db * x1
    return ((v * v).sum(1) - 2 * (target * v).sum(1)).mean()


def cosine_lr(step: int, total: int, lr: float, warmup: int = 200) -> float:
    """Linear warm-up, then a cosine decay to 1% of the peak."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p)))


def data_normalisation(spec: Spec, seed: int, n: int = 200_000):
    """Per-coordinate mean and std of a large training draw (stored in the .sif)."""
    x = spec.sampler(np.random.default_rng(seed + 1), n)
    return x.mean(0), x.std(0)


def train(name: str, spec: Spec, steps: int, seed: int, work_dir: str) -> dict:
    """Trains one net (Adam, cosine schedule, EMA of weights) and saves the record to work_dir."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mu, sigma = data_normalisation(spec, seed)
    net = VelocityMLP(spec.dim, spec.hidden, spec.layers)
    ema = VelocityMLP(spec.dim, spec.hidden, spec.layers)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    ema_decay = 0.999
    start, running = time.time(), None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, spec.lr)
        x1 = torch.from_numpy((spec.sampler(rng, spec.batch) - mu) / sigma).float()
        x0 = torch.randn(spec.batch, spec.dim)
        t = torch.rand(spec.batch, 1)
        loss = interpolant_loss(net, x0, x1, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.mul_(ema_decay).add_(p, alpha=1 - ema_decay)
        running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
        if step % 1000 == 0 or step == steps - 1:
            print(f"  {name} step {step:6d}  loss {running:.4f}  "
                  f"{time.time() - start:6.1f} s", flush=True)
    record = {
        "name": name, "dim": spec.dim, "hidden": spec.hidden, "layers": spec.layers,
        "steps": steps, "batch": spec.batch, "lr": spec.lr, "seed": seed, "ema": ema_decay,
        "train_seconds": time.time() - start, "final_loss": running,
        "mean": mu.tolist(), "std": sigma.tolist(),
        "state_dict": ema.state_dict(),
    }
    _atomic_torch_save(record, os.path.join(work_dir, f"{name}.pt"))
    print(f"  {name}: trained {steps} steps in {record['train_seconds']:.1f} s", flush=True)
    return record


# ----------------------------------------------------------------------------- export, convert


def load_net(record: dict) -> VelocityMLP:
    net = VelocityMLP(record["dim"], record["hidden"], record["layers"])
    net.load_state_dict(record["state_dict"])
    return net.eval()


def export_onnx(record: dict, path: str) -> None:
    """Exports the EMA net with one input `tx` [B, 1 + d] (t first)."""
    net = load_net(record)
    example = torch.zeros(4, record["dim"] + 1)
    tmp = path + ".tmp"
    torch.onnx.export(net, (example,), tmp, input_names=["tx"], output_names=["v"],
                      dynamic_axes={"tx": {0: "batch"}, "v": {0: "batch"}}, opset_version=13)
    os.replace(tmp, path)


def convert(record: dict, onnx_path: str, sif_path: str, test_vectors: int) -> None:
    """Converts the ONNX export with siflow_convert: trig interpolant, N(0, I) base, stored
    normalisation, metadata and embedded test vectors."""
    sys.path.insert(0, os.path.join(REPO, "converter"))
    from siflow_convert import ir, reference, sif_io
    from siflow_convert.onnx_import import from_onnx

    graph = from_onnx(onnx_path, time_column="first", dim=record["dim"])
    model = ir.FlowModel(graph=graph, name=record["name"], interpolant=ir.Interpolant("trig"))
    model.normalization = ir.Normalization(np.array(record["mean"]), np.array(record["std"]))
    model.metadata = {
        "dataset": record["name"] + " (" + DATASET_NOTES[record["name"]] + ")",
        "steps": str(record["steps"]), "seed": str(record["seed"]),
        "loss": "stochastic interpolant G(v) = E|v|^2 - 2(a' x0 + b' x1).v, trig interpolant",
        "architecture": f"[t, x] -> {record['layers']}x{record['hidden']} SiLU MLP -> {record['dim']}",
        "trainer": "examples/train_examples.py",
    }
    model.test_vectors = reference.make_test_vectors(model, count=test_vectors)
    sif_io.write_sif(model, sif_path)


DATASET_NOTES = {
    "checkerboard": "FFJORD generator, x2 scale, support [-4,4]^2",
    "eight_gaussians": "FFJORD generator, radius 4, sigma 0.5, divided by 1.414",
    "two_moons": "sklearn make_moons noise 0.1, FFJORD x*2 + [-1,-0.2]",
    "mixture8d": "5-component diagonal Gaussian mixture in d=8, seed 20230501",
}


def write_heldout(name: str, spec: Spec, seed: int, data_dir: str) -> str:
    """Held-out points from a seed disjoint from training (seed + 1000), float64 .npy."""
    x = spec.sampler(np.random.default_rng(seed + 1000), spec.heldout)
    path = os.path.join(data_dir, f"{name}.npy")
    _atomic_np_save(x.astype(np.float64), path)
    return path


def _atomic_np_save(a: np.ndarray, path: str) -> None:
    tmp = path + ".tmp.npy"
    np.save(tmp, a)
    os.replace(tmp, path)


def _atomic_torch_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- measure


TRUE_LOG_PROB = {
    "checkerboard": lambda x: np.full(len(x), -LOG32),
    "eight_gaussians": eight_gaussians_log_prob,
    "mixture8d": MIXTURE8D.log_prob,
}


def measure(name: str, siflow: str, model_dir: str, data_dir: str, steps_list=(100, 200)) -> None:
    """Held-out NLL with `siflow logprob` (exact divergence, RK4) at each step count, next to
    the true density's mean -log p on the same points where it is known."""
    sif = os.path.join(model_dir, f"{name}.sif")
    data = os.path.join(data_dir, f"{name}.npy")
    x = np.load(data)
    previous = None
    for steps in steps_list:
        out = os.path.join(model_dir, f".{name}.logp.tmp.npy")
        cmd = [siflow, "logprob", sif, "-i", data, "-o", out, "--method", "rk4",
               "--steps", str(steps), "--divergence", "exact"]
        start = time.time()
        subprocess.run(cmd, check=True)
        nll = -np.load(out)
        os.remove(out)
        print(f"  {name}: RK4 {steps} steps: held-out NLL {nll.mean():.4f} "
              f"+- {nll.std(ddof=1) / math.sqrt(nll.size):.4f} (n={nll.size}, "
              f"{time.time() - start:.1f} s)", flush=True)
        if previous is not None:
            print(f"  {name}: max |log p({steps}) - log p({steps_list[0]})| = "
                  f"{np.max(np.abs(nll - previous)):.2e}, mean difference "
                  f"{np.mean(nll - previous):.2e}", flush=True)
        previous = nll
    if name in TRUE_LOG_PROB:
        true = -TRUE_LOG_PROB[name](x)
        print(f"  {name}: true density on the same points: mean -log p {true.mean():.4f}; "
              f"model - true = {nll.mean() - true.mean():.4f} "
              f"+- {(nll - true).std(ddof=1) / math.sqrt(nll.size):.4f}")


# ----------------------------------------------------------------------------- digits (images)
#
# A class-conditional flow on scikit-learn's 8x8 handwritten digits (examples/digits_data.py:
# split, dequantization x~ = (x + u)/17, flow space z = 2 x~ - 1). Same loss and interpolant as
# the MLPs above, summed over the 64 pixels; the net is a small U-Net v(x, t, y) with three
# inputs x [B, 1, 8, 8], t [B, 1] and an integer label y [B] (10 = the null label; 10 % of the
# training labels are replaced by it, for classifier-free guidance).


DIGITS_NULL_LABEL = 10


def sinusoidal_features(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[B, 1] times -> [B, 2F]: sin(f t) for every frequency f, then cos(f t). The product is
    written as [B, 1] @ [1, F] (one multiplication per entry, the same numbers as t * freqs),
    which exports as a MatMul by a constant instead of a broadcasting Mul."""
    a = t @ freqs.reshape(1, -1)
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, + per-channel projection of the embedding, GroupNorm, SiLU,
    3x3 conv, + skip (1x1 conv when the channel count changes)."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int = 8):
        super().__init__()
        self.cout = cout
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.proj = nn.Linear(emb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self.act(self.norm1(h)))
        r = r + self.proj(e).reshape(-1, self.cout, 1, 1)
        r = self.conv2(self.act(self.norm2(r)))
        return self.skip(h) + r


class DigitsUNet(nn.Module):
    """v(x, t, y) on [B, 1, 8, 8] images: two resolutions (8x8 with C channels, 4x4 with 2C),
    a stride-2 conv down, nearest x2 up, one skip concat; time (sinusoidal, F frequencies from
    1 to 200 rad) and label (nn.Embedding(11, E)) embeddings summed, SiLU, then projected into
    every block."""

    def __init__(self, channels: int = 32, emb: int = 64, freqs: int = 16):
        super().__init__()
        c = channels
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(200.0), freqs)))
        self.time_mlp = nn.Sequential(nn.Linear(2 * freqs, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_emb = nn.Embedding(DIGITS_NULL_LABEL + 1, emb)
        self.act = nn.SiLU()
        self.conv_in = nn.Conv2d(1, c, 3, padding=1)
        self.down_block = ResBlock(c, c, emb)
        self.down = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.mid1 = ResBlock(c, 2 * c, emb)
        self.mid2 = ResBlock(2 * c, 2 * c, emb)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.up_block = ResBlock(3 * c, c, emb)
        self.norm_out = nn.GroupNorm(8, c)
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = self.time_mlp(sinusoidal_features(t, self.freqs)) + self.label_emb(y)
        e = self.act(e)
        h0 = self.down_block(self.conv_in(x), e)          # [B, C, 8, 8]
        h = self.mid1(self.down(h0), e)                     # [B, 2C, 4, 4]
        h = self.mid2(h, e)
        h = torch.cat([self.up(h), h0], dim=1)              # [B, 3C, 8, 8]
        h = self.up_block(h, e)
        return self.conv_out(self.act(self.norm_out(h)))


@dataclass
class DigitsSpec:
    channels: int = 32
    emb: int = 64
    freqs: int = 16
    steps: int = 3000
    batch: int = 128
    lr: float = 2e-3
    label_drop: float = 0.1
    ema: float = 0.999


def digits_loss(net: nn.Module, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
    """interpolant_loss for images: G(v) summed over pixels, mean over the batch."""
    half_pi = 0.5 * math.pi
    tt = t.reshape(-1, 1, 1, 1)
    a, b = torch.cos(half_pi * tt), torch.sin(half_pi * tt)
    da, db = -half_pi * torch.sin(half_pi * tt), half_pi * torch.cos(half_pi * tt)
    v = net(a * x0 + b * x1, t, y)
    target = da * x0 + db * x1
    return ((v * v).sum((1, 2, 3)) - 2 * (target * v).sum((1, 2, 3))).mean()


def digits_net(record: dict) -> DigitsUNet:
    net = DigitsUNet(record["channels"], record["emb"], record["freqs"])
    net.load_state_dict(record["state_dict"])
    return net.eval()


def train_digits(spec: DigitsSpec, steps: int, seed: int, work_dir: str) -> dict:
    """Trains the digits U-Net (Adam, cosine schedule, EMA) on the training split: every step a
    batch of training images with replacement, a fresh dequantization, 10 % null labels."""
    import digits_data as dd
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = dd.train_set()
    net = DigitsUNet(spec.channels, spec.emb, spec.freqs)
    ema = DigitsUNet(spec.channels, spec.emb, spec.freqs)
    ema.load_state_dict(net.state_dict())
    params = sum(p.numel() for p in net.parameters())
    print(f"  digits: U-Net with {params} parameters, {xs.shape[0]} training images", flush=True)
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    start, cpu_start, running = time.time(), time.process_time(), None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, spec.lr)
        idx = rng.integers(0, xs.shape[0], spec.batch)
        x1 = dd.to_flow(dd.dequantize(xs[idx], rng)).reshape((-1,) + dd.SHAPE)
        labels = np.where(rng.random(spec.batch) < spec.label_drop, DIGITS_NULL_LABEL, ys[idx])
        x1 = torch.from_numpy(x1).float()
        y = torch.from_numpy(labels.astype(np.int64))
        x0 = torch.randn(x1.shape)
        t = torch.rand(spec.batch, 1)
        loss = digits_loss(net, x0, x1, t, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.mul_(spec.ema).add_(p, alpha=1 - spec.ema)
        running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
        if step % 250 == 0 or step == steps - 1:
            print(f"  digits step {step:6d}  loss {running:.4f}  "
                  f"{time.time() - start:6.1f} s", flush=True)
    record = {
        "name": "digits", "channels": spec.channels, "emb": spec.emb, "freqs": spec.freqs,
        "params": params, "steps": steps, "batch": spec.batch, "lr": spec.lr, "seed": seed,
        "ema": spec.ema, "label_drop": spec.label_drop, "null_label": DIGITS_NULL_LABEL,
        "train_seconds": time.time() - start,
        "train_cpu_seconds": time.process_time() - cpu_start,
        "final_loss": running, "mean": dd.MEAN, "std": dd.STD, "state_dict": ema.state_dict(),
    }
    _atomic_torch_save(record, os.path.join(work_dir, "digits.pt"))
    print(f"  digits: trained {steps} steps in {record['train_seconds']:.1f} s "
          f"({record['train_cpu_seconds']:.1f} s CPU), "
          f"final loss (running mean) {running:.4f}", flush=True)
    return record


def export_digits_onnx(record: dict, path: str, opset: int = 17) -> None:
    """Exports the EMA net with inputs x [B, 1, 8, 8], t [B, 1], y [B] (int64) and output v,
    batch axis dynamic."""
    net = digits_net(record)
    args = (torch.zeros(3, 1, 8, 8), torch.full((3, 1), 0.5), torch.tensor([0, 5, 10]))
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(net, args, tmp, input_names=["x", "t", "y"], output_names=["v"],
                          dynamic_axes={n: {0: "batch"} for n in ("x", "t", "y", "v")},
                          opset_version=opset, do_constant_folding=True)
    os.replace(tmp, path)


def digits_reference(record: dict, path: str, count: int = 32, seed: int = 5) -> None:
    """Float64 PyTorch velocities at seeded test points (x ~ N(0, I) images, t ~ U[0, 1],
    labels 0..10 including the null label) next to the ONNX file, as an .npz (x, t, y, v)."""
    net = digits_net(record).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.rand(count, 1, generator=g, dtype=torch.float64)
    y = torch.arange(count, dtype=torch.int64) % (DIGITS_NULL_LABEL + 1)
    with torch.no_grad():
        v = net(x, t, y)
    tmp = path + ".tmp.npz"
    np.savez(tmp, x=x.numpy(), t=t.numpy(), y=y.numpy(), v=v.numpy())
    os.replace(tmp, path)


def onnx_op_counts(path: str) -> Dict[str, int]:
    import onnx
    counts: Dict[str, int] = {}
    for node in onnx.load(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def convert_digits(record: dict, onnx_path: str, sif_path: str, test_vectors: int) -> None:
    """Converts the ONNX export with the converter's CLI: label input y with null label 10,
    the affine scaling z = (x~ - 0.5)/0.5 stored as the normalisation (--mean/--std),
    trig interpolant, N(0, I) base; the test vectors (random labels, the null one included, and
    RK4 trajectories) are guided with w = 2."""
    cmd = [sys.executable, os.path.join(REPO, "converter", "siflow-convert"), onnx_path,
           "-o", sif_path, "--label-input", "y", "--null-label", str(record["null_label"]),
           "--mean", str(record["mean"]), "--std", str(record["std"]),
           "--interpolant", "trig", "--guidance", "2",
           "--name", "digits", "--test-vectors", str(test_vectors),
           "--meta", "dataset=scikit-learn load_digits (UCI optdigits test set), 8x8, "
                     "dequantized x~ = (x + u)/17",
           "--meta", f"steps={record['steps']}", "--meta", f"seed={record['seed']}",
           "--meta", "loss=stochastic interpolant G(v), trig interpolant, 10% null labels",
           "--meta", f"architecture=U-Net {record['channels']}/{2 * record['channels']} "
                     f"channels, 8x8 and 4x4, GroupNorm, SiLU, label embedding 11x{record['emb']}",
           "--meta", "trainer=examples/train_examples.py --only digits"]
    subprocess.run(cmd, check=True)


def run_digits(args) -> None:
    import digits_data as dd
    dd.write_heldout()
    pt = os.path.join(args.work_dir, "digits.pt")
    if args.stage in ("all", "train"):
        record = train_digits(DigitsSpec(), args.steps or DigitsSpec.steps, args.seed,
                              args.work_dir)
    else:
        record = torch.load(pt)
    if args.stage in ("all", "convert", "export"):
        onnx_path = os.path.join(args.work_dir, "digits.onnx")
        export_digits_onnx(record, onnx_path)
        digits_reference(record, os.path.join(args.work_dir, "digits_reference.npz"))
        print(f"  digits: wrote {onnx_path}; ONNX ops {onnx_op_counts(onnx_path)}")
    if args.stage in ("all", "convert"):
        sif = os.path.join(args.out_dir, "digits.sif")
        convert_digits(record, onnx_path, sif, args.test_vectors)
        print(f"  digits: wrote {sif} ({os.path.getsize(sif)} bytes)")


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(SPECS) + ["digits"],
                    help="train only these (digits, the image model, runs only when named)")
    ap.add_argument("--steps", type=int, help="training steps (default: per model)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    ap.add_argument("--stage", choices=("all", "train", "export", "convert", "entropy",
                                        "measure"),
                    default="all", help="all = train + convert; convert reuses saved weights; "
                    "export (digits only) = ONNX export and float64 reference velocities; "
                    "entropy = Monte Carlo entropies; measure = held-out NLL with the CLI "
                    "(default all)")
    ap.add_argument("--siflow", default=os.path.join(REPO, "build", "runtime", "cli", "siflow"),
                    help="the siflow CLI used by --stage measure")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "examples", "models"))
    ap.add_argument("--data-dir", default=os.path.join(REPO, "examples", "data"))
    ap.add_argument("--work-dir", default="/tmp/siflow-train",
                    help="torch weights and ONNX exports (default /tmp/siflow-train)")
    ap.add_argument("--test-vectors", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for d in (args.out_dir, args.data_dir, args.work_dir):
        os.makedirs(d, exist_ok=True)
    for name in args.only or list(SPECS):
        if name == "digits":
            if args.stage in ("entropy", "measure"):
                print("digits: no entropy; measure it with examples/digits_card.py")
            else:
                run_digits(args)
            continue
        spec = SPECS[name]
        if args.stage == "entropy":
            h = spec.entropy() if spec.entropy else None
            print(f"{name}: entropy {h} ({spec.entropy_note})")
            continue
        if args.stage == "measure":
            measure(name, args.siflow, args.out_dir, args.data_dir)
            continue
        write_heldout(name, spec, args.seed, args.data_dir)
        pt = os.path.join(args.work_dir, f"{name}.pt")
        if args.stage in ("all", "train"):
            record = train(name, spec, args.steps or spec.steps, args.seed, args.work_dir)
        else:
            record = torch.load(pt)
        if args.stage in ("all", "convert"):
            onnx_path = os.path.join(args.work_dir, f"{name}.onnx")
            export_onnx(record, onnx_path)
            sif = os.path.join(args.out_dir, f"{name}.sif")
            convert(record, onnx_path, sif, args.test_vectors)
            print(f"  {name}: wrote {sif} ({os.path.getsize(sif)} bytes); trained "
                  f"{record['steps']} steps in {record['train_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
