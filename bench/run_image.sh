#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Image-net benchmarks (issue 15): siflow against ONNX Runtime (npm onnxruntime-node) and PyTorch
# (Debian python3-torch) on the U-Nets of bench/unet28.py, the same nets (exported to ONNX and
# converted to .sif at bench time), the same base points, steps, batch and threads, in one run.
# Prints a markdown table: median CPU seconds per run (the processes' own CPU time: on a loaded
# machine wall time counts the time others held the core), peer / siflow CPU time (above 1:
# siflow is faster), the median wall seconds, siflow's GFLOP/s per CPU second and % of the FMA
# peak, siflow's arena and every program's peak RSS.
#   bench/run_image.sh [--quick|--batch1]   --quick: unet8 and batch 1 only; --batch1: the
#                                           sampling rows of batch 1 only (unet8 and unet28)
# Environment: REPS (default 3) timed runs after a warm-up (median reported); THREADS (default 1);
# BUILD_DIR: an existing Release build with SIFLOW_BUILD_BENCH=ON to use instead of build-bench;
# SIFLOW_ARGS: extra bench_image options for siflow's rows, e.g. "--backend xnnpack" or "--tune".
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build-bench}"
quick=0
batch1=0
[ "${1:-}" = "--quick" ] && quick=1
[ "${1:-}" = "--batch1" ] && batch1=1
reps="${REPS:-3}"
threads="${THREADS:-1}"
(cd bench && npm install --no-audit --no-fund --ignore-scripts --silent)
if [ -z "${BUILD_DIR:-}" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSIFLOW_BUILD_BENCH=ON \
    -DSIFLOW_BUILD_TESTS=OFF -DSIFLOW_BUILD_EXAMPLES=OFF -DSIFLOW_BUILD_CLI=OFF >/dev/null
fi
cmake --build "$build" -j2 --target bench_image peak_fma >/dev/null
models="$build/image-models"
mkdir -p "$models"
for m in unet8 unet28; do
  # Re-exported when bench/unet28.py changed since (the converter's self-check line is printed).
  [ "$models/$m.sif" -nt bench/unet28.py ] || /usr/bin/python3 bench/unet28.py export "$m" "$models" 2>/dev/null
done
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"

field() { # field NAME LINE: the value after NAME in LINE
  awk -v k="$1" '{for (i = 1; i < NF; ++i) if ($i == k) { print $(i + 1); exit }}' <<<"$2"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(lscpu | sed -n "s/^CPU(s): *//p") CPUs; load: $(uptime | sed 's/.*load average: //')"
peak=$("$build/bench/peak_fma" 2>/dev/null | awk '$1 == "peak_gflops" { print $2 }')
echo "FMA peak (peak_fma, one thread): ${peak:-?} GFLOP/s; threads: $threads; reps: $reps"
echo
echo "| net | work | batch | CPU s siflow | CPU s ORT | CPU s torch | ORT/siflow | torch/siflow | wall s siflow / ORT / torch | siflow GFLOP/s (% peak) | arena MiB | RSS MiB siflow/ORT/torch |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"

sample_row() { # net size method steps batch
  local net=$1 size=$2 method=$3 steps=$4 batch=$5
  local nfe=$steps
  [ "$method" = rk4 ] && nfe=$((4 * steps))
  local s o p
  s=$("$build/bench/bench_image" sample "$models/$net.sif" "$batch" "$steps" "$reps" "$method" --threads "$threads" ${SIFLOW_ARGS:-})
  o=$(node bench/peer_ort_image.mjs "$models/$net.onnx" "$size" "$batch" "$steps" "$reps" "$threads" "$method")
  p=$(/usr/bin/python3 bench/unet28.py run "$net" "$batch" "$steps" "$reps" "$threads" "$method")
  local ts to tp flops gf wall
  ts=$(field cpu_median "$s"); to=$(field cpu_median "$o"); tp=$(field cpu_median "$p")
  wall="$(field median "$s") / $(field median "$o") / $(field median "$p")"
  flops=$(/usr/bin/python3 bench/unet28.py flops "$net")
  gf=$(awk -v f="$flops" -v n="$nfe" -v b="$batch" -v t="$ts" -v pk="${peak:-0}" \
    'BEGIN { g = f * n * b / t * 1e-9; if (pk > 0) printf "%.1f (%.0f %%)", g, 100 * g / pk; else printf "%.1f", g }')
  echo "| $net | $method, NFE $nfe | $batch | $ts | $to | $tp | $(ratio "$to" "$ts") | $(ratio "$tp" "$ts") | $wall | $gf |" \
    "$(awk -v a="$(field arena "$s")" 'BEGIN { printf "%.1f", a / 1048576 }') |" \
    "$(awk -v a="$(field rss_kib "$s")" -v b="$(field rss_kib "$o")" -v c="$(field rss_kib "$p")" 'BEGIN { printf "%.0f / %.0f / %.0f", a / 1024, b / 1024, c / 1024 }') |"
}

logp_row() { # net mode probes steps batch
  local net=$1 mode=$2 k=$3 steps=$4 batch=$5
  local s p args=("$mode")
  [ "$mode" = hutchinson ] && args+=("$k")
  s=$("$build/bench/bench_image" logp "$models/$net.sif" "$batch" "$steps" "$reps" "${args[@]}" --threads "$threads" ${SIFLOW_ARGS:-})
  p=$(/usr/bin/python3 bench/unet28.py logp "$net" "$batch" "$steps" "$reps" "$threads" "${args[@]}")
  local ts tp
  ts=$(field cpu_median "$s"); tp=$(field cpu_median "$p")
  echo "| $net | log p, $mode${k:+ K=$k}, RK4 $steps steps | $batch | $ts | - | $tp | - | $(ratio "$tp" "$ts") | $(field median "$s") / - / $(field median "$p") | - |" \
    "$(awk -v a="$(field arena "$s")" 'BEGIN { printf "%.1f", a / 1048576 }') |" \
    "$(awk -v a="$(field rss_kib "$s")" -v c="$(field rss_kib "$p")" 'BEGIN { printf "%.0f / - / %.0f", a / 1024, c / 1024 }') |"
}

batches="1 64"
[ "$quick" = 1 ] || [ "$batch1" = 1 ] && batches="1"
for batch in $batches; do
  sample_row unet8 8 euler 16 "$batch"
  sample_row unet8 8 rk4 4 "$batch"
  [ "$quick" = 1 ] && continue
  sample_row unet28 28 euler 16 "$batch"
  sample_row unet28 28 rk4 4 "$batch"
done
[ "$batch1" = 1 ] && exit 0
logp_row unet8 exact "" 2 8
[ "$quick" = 1 ] && exit 0
logp_row unet28 hutchinson 1 2 8
logp_row unet28 hutchinson 4 2 8
