#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes examples/fourier_mlp.npz (random, untrained weights) for examples/fourier_mlp.json.

The pair shows the npz + JSON input format; `siflow-convert examples/fourier_mlp.npz --arch
examples/fourier_mlp.json -o fourier_mlp.sif` converts it. Deterministic (seed 0).
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    rng = np.random.default_rng(0)
    dim, width, nfreq = 2, 32, 4

    def linear(n_out, n_in):
        bound = 1.0 / np.sqrt(n_in)
        return (rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),
                rng.uniform(-bound, bound, n_out).astype(np.float32))

    w0, b0 = linear(width, 2 * nfreq + dim)
    w1, b1 = linear(width, width)
    w2, b2 = linear(dim, width)
    arrays = {"freqs": (np.pi * np.arange(1, nfreq + 1)).astype(np.float32),
              "w0": w0, "b0": b0, "w1": w1, "b1": b1, "w2": w2, "b2": b2,
              "ln_g": np.ones(width, np.float32), "ln_b": np.zeros(width, np.float32)}
    path = os.path.join(HERE, "fourier_mlp.npz")
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
