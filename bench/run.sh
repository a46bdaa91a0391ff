#!/usr/bin/env bash
# Benchmarks siflow against the peers a user would otherwise reach for, on the same models,
# steps and batch, in one run, and prints the times and ratios (time of siflow / time of peer;
# below 1 means siflow is faster):
#   - siflow: bench_flow (this build, Release), classic RK4 over 50 steps;
#   - PyTorch from Debian's python3-torch with OpenBLAS (libopenblas0-pthread), torch and
#     OpenBLAS pinned to the same thread count, the RK4 loop of peer_torch.py, no autograd;
#   - ONNX Runtime from the npm package onnxruntime-node (CPU), the same RK4 loop in JavaScript.
# Models (written by bench_flow): M1 d = 2, [t, x] -> 256 -> 256 -> 256 -> 2, SiLU;
# M2 d = 16, [x, t] -> 512 -> 512 -> 16, GELU. All three produce the same checksum of the result.
#   bench/run.sh [--quick]     --quick: batch 1 and 1024 only, one thread
# Environment: REPS (default 3) timed runs per configuration after a warm-up (the median is
# reported); siflow's configurations that take over 5 s per run are timed once.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
case "${1:-}" in
  "") ;;
  --quick) quick=1 ;;
  *) echo "bench/run.sh: unknown option '$1' (expected --quick or nothing)" >&2; exit 2 ;;
esac
reps="${REPS:-3}"
tools/install-deps.sh --test
if ! dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "install ok installed"; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends libopenblas0-pthread
fi
# onnxruntime-node ships its CPU library in the package; its install script would only fetch
# the CUDA provider, which is not used here.
(cd bench && npm install --no-audit --no-fund --ignore-scripts --silent)

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSIFLOW_BUILD_BENCH=ON \
  -DSIFLOW_BUILD_TESTS=OFF -DSIFLOW_BUILD_EXAMPLES=OFF -DSIFLOW_BUILD_CLI=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bench_flow >/dev/null
models=build-bench/bench-models
mkdir -p "$models"
build-bench/bench/bench_flow models "$models" >/dev/null
for m in m1 m2; do
  /usr/bin/python3 bench/peer_torch.py "$models" "$m" --export-onnx "$models/$m.onnx" 2>/dev/null
done

batches=(1 1024 4096)
threads_list=(1 2)
if [ "$quick" = 1 ]; then batches=(1 1024); threads_list=(1); fi
steps=50
field() { sed -E "s/.*$1 ([^ ]+).*/\1/"; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
printf "%-5s %6s %7s | %10s %10s %10s | %12s %12s\n" model batch threads siflow_s torch_s ort_s \
  siflow/torch siflow/ort
for m in m1 m2; do
  dim=2; [ "$m" = m2 ] && dim=16
  for batch in "${batches[@]}"; do
    # siflow runs single-threaded (the reference backend has no worker threads yet).
    sreps=$reps
    probe=$(build-bench/bench/bench_flow run "$models/$m.sif" "$batch" "$steps" 1)
    [ "$(echo "$probe" | field median | awk '{print ($1 > 5)}')" = 1 ] && sreps=1
    if [ "$sreps" = 1 ]; then out=$probe; else
      out=$(build-bench/bench/bench_flow run "$models/$m.sif" "$batch" "$steps" "$sreps"); fi
    s=$(echo "$out" | field median)
    for threads in "${threads_list[@]}"; do
      t=$(OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads /usr/bin/python3 \
          bench/peer_torch.py "$models" "$m" "$batch" "$steps" "$reps" "$threads" | field median)
      o=$(node bench/peer_ort.mjs "$models/$m.onnx" "$dim" "$batch" "$steps" "$reps" "$threads" |
          field median)
      label="$threads"; [ "$threads" != 1 ] && label="$threads(s:1)"
      printf "%-5s %6s %7s | %10.4f %10.4f %10.4f | %12.2f %12.2f\n" "$m" "$batch" "$label" "$s" \
        "$t" "$o" "$(echo "$s $t" | awk '{print $1/$2}')" "$(echo "$s $o" | awk '{print $1/$2}')"
    done
  done
done
echo "threads: the peers' thread count; siflow always runs on 1 thread (s:1)."
