#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmarks siflow against the peers a user would otherwise reach for, on the same models,
# steps and batch, in one run, and prints the times and ratios (peer time / siflow time: above 1
# means siflow is faster):
#   - siflow: bench_flow (this build, Release), classic RK4 over 50 steps, backend auto (the
#     simd kernels) and, for comparison, backend xnnpack (dense layers through XNNPACK alone);
#   - PyTorch from Debian's python3-torch with OpenBLAS (libopenblas0-pthread), torch and
#     OpenBLAS pinned to the same thread count, the RK4 loop of peer_torch.py, no autograd;
#   - ONNX Runtime from the npm package onnxruntime-node (CPU), the same RK4 loop in JavaScript.
# Models (written by bench_flow): M1 d = 2, [t, x] -> 256 -> 256 -> 256 -> 2, SiLU;
# M2 d = 16, [x, t] -> 512 -> 512 -> 16, GELU. All produce the same checksum of the result.
# Sections: the machine's FMA peak (peak_fma); sampling at batch 1, 1024, 4096 with 1 and 2
# threads (every program at that thread count), with siflow's GFLOP/s as % of the peak, arena
# and peak RSS; exact log-likelihoods against PyTorch autograd (d backward passes); one training
# step (bench_train) against PyTorch's (peer_torch_train.py): the checkerboard net
# [x, t] -> 256 -> 256 -> 256 -> 2, SiLU, interpolant loss, clipping, AdamW, same batch and threads.
# --wasm: M1 sampling in WebAssembly instead (one thread): siflow's bench_flow built with the wasm
# preset's toolchain (SIMD128 kernels) under node, against the native SSE2 variant (the same vector
# width, SIFLOW_SIMD_ISA=sse2) and ONNX Runtime Web's WebAssembly backend (npm onnxruntime-web,
# ort.env.wasm.numThreads = 1) running the same RK4 loop under node (peer_ort_web.mjs). Both
# WebAssembly programs run with node --no-liftoff: V8 compiles all code with its optimizing tier at
# once instead of starting in its baseline compiler, so short runs measure the code a page runs
# after its first second, not the warm-up.
#   bench/run.sh [--quick|--train|--wasm]   --quick: batch 1 and 1024 only, one thread, no M2
#                                    log-likelihood; --train: the training step section only
# Environment: REPS (default 3) timed runs per configuration after a warm-up (the median is
# reported); configurations that take over 5 s per run are timed once.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
train_only=0
wasm_only=0
case "${1:-}" in
  "") ;;
  --quick) quick=1 ;;
  --train) train_only=1 ;;
  --wasm) wasm_only=1 ;;
  *) echo "bench/run.sh: unknown option '$1' (expected --quick, --train, --wasm or nothing)" >&2
     exit 2 ;;
esac
reps="${REPS:-3}"
if [ "$wasm_only" = 1 ]; then
  tools/install-deps.sh --test --wasm
else
  tools/install-deps.sh --test
fi
if ! dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "install ok installed"; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends libopenblas0-pthread
fi
# onnxruntime-node ships its CPU library in the package; its install script would only fetch
# the CUDA provider, which is not used here.
(cd bench && npm install --no-audit --no-fund --ignore-scripts --silent)

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSIFLOW_BUILD_BENCH=ON \
  -DSIFLOW_BUILD_TESTS=OFF -DSIFLOW_BUILD_EXAMPLES=OFF -DSIFLOW_BUILD_CLI=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bench_flow peak_fma bench_train >/dev/null
models=build-bench/bench-models
mkdir -p "$models"
build-bench/bench/bench_flow models "$models" >/dev/null
for m in m1 m2; do
  /usr/bin/python3 bench/peer_torch.py "$models" "$m" --export-onnx "$models/$m.onnx" 2>/dev/null
done

field() { sed -E "s/.*$1 ([^ ]+).*/\1/"; }
ratio() { echo "$1 $2" | awk '{printf "%.2f", $1/$2}'; }

if [ "$wasm_only" = 1 ]; then
  NODE_PATH=/usr/share/nodejs cmake -S . -B build-bench-wasm \
    -DCMAKE_TOOLCHAIN_FILE="$PWD/toolchains/wasm-emscripten.cmake" -DCMAKE_BUILD_TYPE=Release \
    -DSIFLOW_BUILD_BENCH=ON -DSIFLOW_BUILD_TESTS=OFF >/dev/null
  cmake --build build-bench-wasm -j"$(nproc)" --target bench_flow >/dev/null
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
    "node $(node --version), onnxruntime-web $(node -p "require('./bench/node_modules/onnxruntime-web/package.json').version")"
  echo
  echo "== M1 sampling in WebAssembly, 1 thread: seconds per run (RK4, 50 steps, median of $reps)"
  echo "   ort-web/wasm above 1: siflow faster; wasm/sse2: siflow wasm's time over native SSE2's"
  printf "%6s | %9s %9s %9s | %12s %10s | %s\n" batch wasm sse2 ort-web ort-web/wasm wasm/sse2 \
    checksums
  for batch in 1 256 1024; do
    w_out=$(node --no-experimental-fetch --no-liftoff build-bench-wasm/bench/bench_flow.js run \
            "$models/m1.sif" "$batch" 50 "$reps")
    n_out=$(SIFLOW_SIMD_ISA=sse2 build-bench/bench/bench_flow run "$models/m1.sif" "$batch" 50 \
            "$reps")
    o_out=$(node --no-liftoff bench/peer_ort_web.mjs "$models/m1.onnx" 2 "$batch" 50 "$reps")
    w=$(echo "$w_out" | field median)
    n=$(echo "$n_out" | field median)
    o=$(echo "$o_out" | field median)
    printf "%6s | %9.4f %9.4f %9.4f | %12s %10s | %s %s %s\n" "$batch" "$w" "$n" "$o" \
      "$(ratio "$o" "$w")" "$(ratio "$w" "$n")" "$(echo "$w_out" | field checksum)" \
      "$(echo "$n_out" | field checksum)" "$(echo "$o_out" | field checksum)"
  done
  echo "      wasm kernels: $(echo "$w_out" | field kernels)"
  exit 0
fi
# siflow MODEL BATCH THREADS [ARGS]: bench_flow's output line, timed once when slow.
siflow() {
  local model=$1 batch=$2 threads=$3; shift 3
  local out
  out=$(build-bench/bench/bench_flow run "$models/$model.sif" "$batch" 50 1 --threads "$threads" "$@")
  if [ "$(echo "$out" | field median | awk '{print ($1 <= 5)}')" = 1 ] && [ "$reps" -gt 1 ]; then
    out=$(build-bench/bench/bench_flow run "$models/$model.sif" "$batch" 50 "$reps" \
          --threads "$threads" "$@")
  fi
  echo "$out"
}
torch() {  # MODEL BATCH THREADS [--logp]
  OPENBLAS_NUM_THREADS=$3 OMP_NUM_THREADS=$3 /usr/bin/python3 bench/peer_torch.py "$models" "$1" \
    "$2" 50 "$reps" "$3" ${4:-}
}
ort() {  # MODEL DIM BATCH THREADS
  node bench/peer_ort.mjs "$models/$1.onnx" "$2" "$3" 50 "$reps" "$4"
}

peaks=$(build-bench/bench/peak_fma)
peak=$(echo "$peaks" | grep '^peak_gflops ' | cut -d' ' -f2)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
  "FMA peak per core: $(echo "$peaks" | grep -v '^peak_gflops ' | tr '\n' ' ')GFLOP/s"
batches=(1 1024 4096)
threads_list=(1 2)
if [ "$quick" = 1 ]; then batches=(1 1024); threads_list=(1); fi
if [ "$train_only" = 0 ]; then
echo
echo "== sampling: seconds per run (RK4, 50 steps); ratios = peer / siflow (above 1: siflow faster)"
printf "%-5s %6s %3s | %9s %9s %9s %9s | %8s %8s %8s | %7s %6s %10s %9s\n" model batch thr siflow \
  sf-xnn torch ort torch/sf ort/sf xnn/sf GFLOP/s %peak arena_KiB rss_KiB
declare -A one_thread
for m in m1 m2; do
  dim=2; [ "$m" = m2 ] && dim=16
  for batch in "${batches[@]}"; do
    for threads in "${threads_list[@]}"; do
      s_out=$(siflow "$m" "$batch" "$threads")
      x_out=$(siflow "$m" "$batch" "$threads" --backend xnnpack)
      s=$(echo "$s_out" | field median)
      x=$(echo "$x_out" | field median)
      t=$(torch "$m" "$batch" "$threads" | field median)
      o=$(ort "$m" "$dim" "$batch" "$threads" | field median)
      g=$(echo "$s_out" | field gflops)
      [ "$threads" = 1 ] && one_thread[$m$batch]=$s
      printf "%-5s %6s %3s | %9.4f %9.4f %9.4f %9.4f | %8s %8s %8s | %7s %6s %10s %9s\n" \
        "$m" "$batch" "$threads" "$s" "$x" "$t" "$o" "$(ratio "$t" "$s")" "$(ratio "$o" "$s")" \
        "$(ratio "$x" "$s")" "$g" "$(echo "$g $peak $threads" | awk '{printf "%.0f", 100*$1/($2*$3)}')" \
        "$(( $(echo "$s_out" | field arena) / 1024 ))" "$(echo "$s_out" | field rss_kib)"
      if [ "$threads" != 1 ]; then
        echo "      $threads threads: $(ratio "${one_thread[$m$batch]}" "$s")x the 1-thread throughput"
      fi
    done
  done
  echo "      $m kernels: $(echo "$s_out" | field kernels)"
done
echo "      batch 1: seconds per RK4 step = the batch-1 time / 50; %peak is of all threads' peak"

echo
echo "== exact log-likelihood (RK4, 50 steps, 1 thread): siflow forward-mode divergence vs"
echo "   PyTorch autograd (d backward passes per evaluation); logp_sum must agree"
printf "%-5s %6s | %9s %9s | %8s | %12s %12s\n" model batch siflow torch torch/sf sf_logp_sum \
  torch_logp_sum
lp_cases=("m1 1024" "m2 256")
[ "$quick" = 1 ] && lp_cases=("m1 1024")
for c in "${lp_cases[@]}"; do
  set -- $c
  s_out=$(siflow "$1" "$2" 1 --logp)
  t_out=$(torch "$1" "$2" 1 --logp)
  s=$(echo "$s_out" | field median)
  t=$(echo "$t_out" | field median)
  printf "%-5s %6s | %9.4f %9.4f | %8s | %12s %12s\n" "$1" "$2" "$s" "$t" "$(ratio "$t" "$s")" \
    "$(echo "$s_out" | field logp_sum)" "$(echo "$t_out" | field logp_sum)"
done
fi

echo
echo "== training step (checkerboard net 256,256,256 SiLU, interpolant loss, clip, AdamW): ms per"
echo "   step (wall: median of 30 after 5 warm-up; cpu: process CPU time per step, all threads),"
echo "   siflow f32 and --precision bf16; ratio = torch / siflow on CPU time (above 1: siflow faster)"
printf "%6s %3s | %9s %9s %9s | %9s %9s %9s | %8s %9s\n" batch thr sf_f32 sf_bf16 torch \
  cpu_f32 cpu_bf16 cpu_torch torch/sf torch/bf16
kv() { sed -E "s/.*$1=([^ ]+).*/\\1/"; }
train_batches=(1024 4096)
[ "$quick" = 1 ] && train_batches=(1024)
for batch in "${train_batches[@]}"; do
  for threads in "${threads_list[@]}"; do
    s_out=$(build-bench/bench/bench_train --batch "$batch" --threads "$threads" --steps 30)
    b_out=$(build-bench/bench/bench_train --batch "$batch" --threads "$threads" --steps 30 \
      --precision bf16)
    t_out=$(/usr/bin/python3 bench/peer_torch_train.py --batch "$batch" --threads "$threads" \
      --steps 30)
    s=$(echo "$s_out" | kv step_ms_median) b=$(echo "$b_out" | kv step_ms_median)
    t=$(echo "$t_out" | kv step_ms_median)
    sc=$(echo "$s_out" | kv cpu_ms_mean) bc=$(echo "$b_out" | kv cpu_ms_mean)
    tc=$(echo "$t_out" | kv cpu_ms_mean)
    printf "%6s %3s | %9.2f %9.2f %9.2f | %9.2f %9.2f %9.2f | %8s %9s\n" "$batch" "$threads" \
      "$s" "$b" "$t" "$sc" "$bc" "$tc" "$(ratio "$tc" "$sc")" "$(ratio "$tc" "$bc")"
  done
done
