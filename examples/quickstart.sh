#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job: installs what it needs, builds the siflow CLI, samples the bundled checkerboard
# model (trained by examples/train_examples.py; model card in examples/MODELS.md) and writes
# out/samples.npy, out/logp.npy (their log-likelihoods) and out/samples.png; then samples the
# class-conditional digits model, 6 digits of each class at guidance 2, into out/digits.npy and
# out/digits.png (one row per class).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target siflow_cli
mkdir -p out
model=examples/models/checkerboard.sif
build/runtime/cli/siflow info "$model"
build/runtime/cli/siflow validate "$model"
build/runtime/cli/siflow sample "$model" -n 2000 --seed 1 --method rk4 --steps 50 \
  -o out/samples.npy --logprob-out out/logp.npy
/usr/bin/python3 examples/plot_samples.py out/samples.npy out/logp.npy out/samples.png \
  --title "siflow sample: $(basename "$model")"
digits=examples/models/digits.sif
/usr/bin/python3 examples/plot_digits.py --write-labels out/digit_labels.npy --per-row 6
build/runtime/cli/siflow sample "$digits" -n 60 --labels out/digit_labels.npy --guidance 2 \
  --seed 1 --method rk4 --steps 5 -o out/digits.npy
/usr/bin/python3 examples/plot_digits.py out/digits.npy out/digits.png \
  --title "siflow sample: $(basename "$digits"), guidance 2"
