#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The reduced-precision speed targets of M1 (d = 2, [t,x] -> 3x256 SiLU -> 2, RK4 50 steps, one
# thread) in one run: siflow fp32/bf16/fp16/int8 (bench_flow, simd backend) against ONNX Runtime
# f32 (bench/peer_ort.mjs, npm onnxruntime-node) at batch 1024 and batch 1; prints seconds per
# run (median of REPS, and the minimum) and the ratios of the issue's targets.
# Usage: bench/precision_speed.sh BENCH_FLOW MODELS_DIR [REPS]
#   MODELS_DIR holds m1.sif (bench_flow models DIR) and m1.onnx (peer_torch.py --export-onnx).
set -euo pipefail
bench=$1 models=$2 reps=${3:-5}
cd "$(dirname "$0")/.."
field() { tr ' ' '\n' | grep -A1 "^$1\$" | tail -1; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "onnxruntime-node $(node -p "require('./bench/node_modules/onnxruntime-node/package.json').version")"
declare -A med min
for batch in 1024 1; do
  r=$reps; [ "$batch" = 1 ] && r=$((reps * 40 + 1))
  for p in fp32 bf16 fp16 int8; do
    out=$("$bench" run "$models/m1.sif" "$batch" 50 "$r" --backend simd --precision "$p")
    med[$p.$batch]=$(echo "$out" | field median)
    min[$p.$batch]=$(echo "$out" | field min)
    echo "siflow $p batch $batch: median ${med[$p.$batch]} s, min ${min[$p.$batch]} s" \
      "($bench run m1.sif $batch 50 $r --backend simd --precision $p)"
  done
  out=$(node bench/peer_ort.mjs "$models/m1.onnx" 2 "$batch" 50 "$r" 1)
  med[ort.$batch]=$(echo "$out" | field median)
  min[ort.$batch]=$(echo "$out" | field min)
  echo "onnxruntime f32 batch $batch: median ${med[ort.$batch]} s, min ${min[ort.$batch]} s" \
    "(node bench/peer_ort.mjs m1.onnx 2 $batch 50 $r 1)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "targets (ratios of medians; of minima in brackets):"
echo "  batch 1024 bf16 vs siflow fp32: $(ratio "${med[fp32.1024]}" "${med[bf16.1024]}")x" \
  "[$(ratio "${min[fp32.1024]}" "${min[bf16.1024]}")x] (target >= 1.6x)"
echo "  batch 1024 bf16 vs ORT f32:     $(ratio "${med[ort.1024]}" "${med[bf16.1024]}")x" \
  "[$(ratio "${min[ort.1024]}" "${min[bf16.1024]}")x] (target >= 1.3x)"
for p in int8 fp16; do
  echo "  batch 1 $p vs ORT f32:          $(ratio "${med[ort.1]}" "${med[$p.1]}")x" \
    "[$(ratio "${min[ort.1]}" "${min[$p.1]}")x] (target >= 10x)"
done
