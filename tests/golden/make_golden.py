#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Regenerates the golden fixtures in tests/golden/fixtures/.

Four small PyTorch velocity nets of different shapes, with seeded random weights (no training):

  a_relu_tfirst    one input [t, x] (t first), ReLU MLP, d = 2, trig interpolant
  b_selu_tanh_tlast  one input [x, t] (t last), SELU and tanh, d = 3, linear interpolant,
                     base N(mu, diag sigma^2)
  c_fourier_resnet two inputs x [B, 8] and t [B, 1]; Fourier time features sin/cos(t * freqs)
                     concatenated with x, SiLU, one residual block, d = 8, with a stored data
                     normalisation
  d_layernorm_gelu two inputs x [B, 16] and a scalar t repeated over the batch (the paper's
                     `t.repeat(B)` style), LayerNorm (opset 17), GELU (erf) and GELU (tanh), d = 16

Each is exported to ONNX, converted with siflow_convert, and written as <name>.sif next to
<name>.npz holding the inputs and the float64 references from siflow_convert.reference:

  vel_y, vel_t, vel_ref       velocity at points (flow coordinates) and per-row times
  z, decode_ref, decode_logp_ref   decode of base points z, classic RK4, DECODE_STEPS steps
  x, logprob_ref              exact log p of data-space points x, RK4, LOGPROB_STEPS steps
  sample_ref, sample_logp_ref sample(n = SAMPLE_N, seed = SAMPLE_SEED), RK4, SAMPLE_STEPS steps

check_golden.py compares the siflow CLI against these.

Run: tests/golden/make_golden.py [--out DIR]     (default: tests/golden/fixtures)
     tests/golden/make_golden.py --check         regenerate into a temporary directory and exit
                                                 1 if any committed fixture differs (stale)
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "converter"))

from siflow_convert import ir, reference, sif_io  # noqa: E402
from siflow_convert.onnx_import import from_onnx  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")
DECODE_STEPS = 32
LOGPROB_STEPS = 32
SAMPLE_STEPS = 32
SAMPLE_N = 16
SAMPLE_SEED = 20240611
N_POINTS = 16


# ----------------------------------------------------------------------------- the nets


class TFirstReLU(nn.Module):
    """(a) v from one input [t, x], t in column 0; ReLU MLP."""

    def __init__(self, d=2, h=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                 nn.Linear(h, d))

    def forward(self, tx):
        return self.net(tx)


class TLastSeluTanh(nn.Module):
    """(b) v from one input [x, t], t in the last column; SELU then tanh."""

    def __init__(self, d=3, h=24):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(d + 1, h), nn.Linear(h, h), nn.Linear(h, d)

    def forward(self, xt):
        return self.l3(torch.tanh(self.l2(torch.selu(self.l1(xt)))))


class FourierResNet(nn.Module):
    """(c) v(x, t) with x [B, d], t [B, 1]: Fourier time features, SiLU, a residual block."""

    def __init__(self, d=8, h=32, nfreq=4):
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, nfreq + 1, dtype=torch.float32) * math.pi)
        self.inp = nn.Linear(d + 2 * nfreq, h)
        self.r1, self.r2 = nn.Linear(h, h), nn.Linear(h, h)
        self.out = nn.Linear(h, d)
        self.act = nn.SiLU()

    def forward(self, x, t):
        tf = t * self.freqs[None, :]
        h = self.act(self.inp(torch.cat([x, torch.sin(tf), torch.cos(tf)], dim=1)))
        h = h + self.r2(self.act(self.r1(h)))
        return self.out(self.act(h))


class LayerNormGelu(nn.Module):
    """(d) v(x, t) with a scalar t repeated over the batch; LayerNorm, GELU erf and tanh."""

    def __init__(self, d=16, h=48):
        super().__init__()
        self.l1, self.norm = nn.Linear(d + 1, h), nn.LayerNorm(h)
        self.l2, self.l3 = nn.Linear(h, h), nn.Linear(h, d)

    def forward(self, x, t):
        tt = t.repeat(x.shape[0])[:, None]
        h = nn.functional.gelu(self.norm(self.l1(torch.cat([x, tt], dim=1))))
        h = nn.functional.gelu(self.l2(h), approximate="tanh")
        return self.l3(h)


def _spec():
    """name -> (module factory, seed, example inputs, ONNX names, opset, converter kwargs,
    interpolant, base, normalisation)."""
    rs = np.random.default_rng(5)
    return {
        "a_relu_tfirst": dict(
            make=lambda: TFirstReLU(), seed=1, d=2, inputs=lambda d: (torch.zeros(4, d + 1),),
            names=["tx"], opset=13, convert=dict(time_column="first"),
            interpolant=ir.Interpolant("trig"), base=ir.Base("normal"), norm=None),
        "b_selu_tanh_tlast": dict(
            make=lambda: TLastSeluTanh(), seed=2, d=3, inputs=lambda d: (torch.zeros(4, d + 1),),
            names=["xt"], opset=13, convert=dict(time_column="last"),
            interpolant=ir.Interpolant("linear"),
            base=ir.Base("normal", mean=[0.5, -0.25, 0.0], std=[1.5, 0.75, 1.0]), norm=None),
        "c_fourier_resnet": dict(
            make=lambda: FourierResNet(), seed=3, d=8,
            inputs=lambda d: (torch.zeros(4, d), torch.zeros(4, 1)),
            names=["x", "t"], opset=13, convert=dict(),
            interpolant=ir.Interpolant("trig"), base=ir.Base("normal"),
            norm=ir.Normalization(rs.normal(size=8), rs.uniform(0.5, 2.0, size=8))),
        "d_layernorm_gelu": dict(
            make=lambda: LayerNormGelu(), seed=4, d=16,
            inputs=lambda d: (torch.zeros(4, d), torch.tensor(0.5)),
            names=["x", "t"], opset=17, convert=dict(),
            interpolant=ir.Interpolant("trig"), base=ir.Base("normal"), norm=None),
    }


# ----------------------------------------------------------------------------- build


def export_onnx(module: nn.Module, inputs: tuple, names: list, opset: int) -> bytes:
    """ONNX bytes of `module` with a dynamic batch axis on every [B, ...] input."""
    dyn = {n: {0: "batch"} for n, a in zip(names, inputs) if a.dim() >= 1}
    dyn["v"] = {0: "batch"}
    buf = io.BytesIO()
    torch.onnx.export(module, inputs, buf, input_names=names, output_names=["v"],
                      dynamic_axes=dyn, opset_version=opset)
    return buf.getvalue()


def build_model(name: str, s: dict) -> ir.FlowModel:
    """Seeded torch net -> ONNX -> ir.FlowModel (with interpolant, base, normalisation)."""
    torch.manual_seed(s["seed"])
    module = s["make"]().eval()
    onnx_bytes = export_onnx(module, s["inputs"](s["d"]), s["names"], s["opset"])
    graph = from_onnx(onnx_bytes, dim=s["d"], **s["convert"])
    return ir.FlowModel(graph=graph, name=f"golden {name}", interpolant=s["interpolant"],
                        base=s["base"], normalization=s["norm"],
                        metadata={"generator": "tests/golden/make_golden.py"})


def _f32(a: np.ndarray) -> np.ndarray:
    """Rounds inputs to float32 (what the runtime computes with), kept as float64 values."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def references(model: ir.FlowModel, seed: int) -> dict:
    """Inputs (float32-representable) and float64 references for one model (for the .npz)."""
    rng = np.random.default_rng(seed)
    d = model.dim
    vel_t = _f32(np.repeat([0.0, 0.3, 0.77, 1.0], N_POINTS // 4))
    vel_y = _f32(1.5 * rng.normal(size=(N_POINTS, d)))
    vel_ref = reference.velocity(model, vel_t, vel_y)
    z = _f32(rng.normal(size=(N_POINTS, d)))
    decode_ref, decode_logp_ref = reference.decode(model, z, method="rk4", steps=DECODE_STEPS,
                                                   with_logprob=True)
    # Data points: pushed-forward base points plus a little noise (in the flow's bulk).
    x = _f32(decode_ref + 0.05 * rng.normal(size=decode_ref.shape))
    logprob_ref = reference.log_prob(model, x, method="rk4", steps=LOGPROB_STEPS)
    sample_ref, sample_logp_ref = reference.sample(model, SAMPLE_N, SAMPLE_SEED, method="rk4",
                                                   steps=SAMPLE_STEPS, with_logprob=True)
    return dict(vel_t=vel_t, vel_y=vel_y, vel_ref=vel_ref, z=z, decode_ref=decode_ref,
                decode_logp_ref=decode_logp_ref, x=x, logprob_ref=logprob_ref,
                sample_ref=sample_ref, sample_logp_ref=sample_logp_ref,
                steps=np.array([DECODE_STEPS, LOGPROB_STEPS, SAMPLE_STEPS]),
                sample_seed=np.array(SAMPLE_SEED, dtype=np.int64))


def _atomic(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def generate(out: str) -> list:
    """Writes every fixture into `out`; returns the file names written."""
    os.makedirs(out, exist_ok=True)
    files = []
    for k, (name, s) in enumerate(_spec().items()):
        model = build_model(name, s)
        sif = os.path.join(out, f"{name}.sif")
        sif_io.write_sif(model, sif)
        # References are computed from the model as stored (float32 weights), not the torch one.
        stored = sif_io.read_sif(sif)
        arrays = references(stored, seed=100 + k)
        _atomic(os.path.join(out, f"{name}.npz"), lambda f: np.savez(f, **arrays))
        files += [f"{name}.sif", f"{name}.npz"]
        print(f"{name}: d={model.dim}, {len(model.graph.nodes)} nodes, "
              f"{os.path.getsize(sif)} bytes")
    return files


def stale(fresh_dir: str, files: list) -> list:
    """Names of committed fixtures that differ from a fresh regeneration (or are missing).
    .sif files must match byte for byte; .npz arrays to 1e-12 relative: numpy's float64 products
    and transcendentals pick SIMD kernels by CPU, so the same code gives results a few ulps
    (~2e-16) apart on different machines, while a stale fixture (another model, formula or
    option) differs by many orders more."""
    bad = []
    for f in files:
        old, new = os.path.join(FIXTURES, f), os.path.join(fresh_dir, f)
        if not os.path.exists(old):
            bad.append(f"{f}: missing")
        elif f.endswith(".sif"):
            with open(old, "rb") as a, open(new, "rb") as b:
                if a.read() != b.read():
                    bad.append(f"{f}: bytes differ")
        else:
            a, b = np.load(old), np.load(new)
            for key in sorted(set(a.files) | set(b.files)):
                if key not in a.files or key not in b.files:
                    bad.append(f"{f}: array {key} missing")
                elif a[key].shape != b[key].shape or a[key].dtype != b[key].dtype:
                    bad.append(f"{f}: array {key} has another shape or type")
                elif a[key].dtype.kind == "f":
                    scale = np.maximum(1.0, np.abs(a[key]))
                    if not np.all(np.abs(a[key] - b[key]) <= 1e-12 * scale):
                        bad.append(f"{f}: array {key} differs")
                elif not np.array_equal(a[key], b[key]):
                    bad.append(f"{f}: array {key} differs")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=FIXTURES, help="output directory (default: fixtures/)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary directory and compare with fixtures/")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not args.check:
        generate(args.out)
        return 0
    with tempfile.TemporaryDirectory(prefix="siflow-golden-fresh-") as tmp:
        bad = stale(tmp, generate(tmp))
    if bad:
        print("golden fixtures are stale (re-run tests/golden/make_golden.py):\n  "
              + "\n  ".join(bad))
        return 1
    print("golden fixtures are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
