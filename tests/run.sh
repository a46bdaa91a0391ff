#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite. Installs the Debian packages it needs, then:
#   1. builds everything (runtime, CLI, examples, tests) in build/ and runs ctest;
#   1b. on x86-64, runs the unit, oracle and CLI tests again with the simd kernels forced to each
#      narrower variant the CPU has (SIFLOW_SIMD_ISA=avx2, sse2): the paths of older CPUs;
#   2. builds it again with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/ and runs
#      ctest there (all but the install test, whose consumer links without the sanitizers);
#   3. builds the thread test and the training smoke test with ThreadSanitizer in build-tsan/ and
#      runs them (plans shared by threads, a plan's and a trainer's own worker threads);
#   4. fuzz/run.sh: replays the fuzz corpus and regressions and fuzzes each target for a fixed,
#      seeded budget;
#   5. cross-builds for AArch64 and ARMv7 (CMake presets aarch64, armv7) and runs the tests
#      labelled `qemu` under qemu-user, including the bit-identical golden-bits check, and the
#      reduced-precision kernels under -cpu max, cortex-a76 and cortex-a72;
#   6. builds the minimal runtime and examples/embed_c for bare-metal Cortex-M7 and Cortex-M4F
#      (preset cortex-m, newlib), runs each heap-free image under qemu-system-arm (mps2-an500,
#      mps2-an386; semihosting) and checks that it prints the host reference backend's bits;
#   7. builds the WebAssembly preset (wasm) and runs its tests under node and headless chromium.
# Exits non-zero on any failure.
#   tests/run.sh           all of it
#   tests/run.sh --quick   step 1 only
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
case "${1:-}" in
  "") ;;
  --quick) quick=1 ;;
  *) echo "tests/run.sh: unknown option '$1' (expected --quick or nothing)" >&2; exit 2 ;;
esac
tools/install-deps.sh --test
jobs="$(nproc)"
# Each step's title, and how long the one before it took, so a slow CI run shows where.
step_start=$SECONDS
step() {
  [ "$SECONDS" -gt 0 ] && echo "-- previous step took $((SECONDS - step_start)) s (total $SECONDS s)"
  step_start=$SECONDS
  echo "== $*"
}

step "release build and tests (build/)"
# test_loader_asan (the runtime compiled once more, under ASan + UBSan, for the loader test) only
# in --quick runs: the full run's sanitizer step runs every test, the loader's included, that way.
loader_asan=OFF
[ "$quick" = 1 ] && loader_asan=ON
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSIFLOW_BUILD_TESTS=ON -DSIFLOW_BUILD_CLI=ON \
  -DSIFLOW_BUILD_EXAMPLES=ON -DSIFLOW_LOADER_ASAN_TEST="$loader_asan"
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"
[ "$quick" = 1 ] && exit 0

if [ "$(uname -m)" = x86_64 ]; then
  variants=(sse2)
  grep -qw avx512f /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo && variants=(avx2 sse2)
  for isa in "${variants[@]}"; do
    step "unit, oracle and CLI tests on the $isa simd kernels (build/)"
    SIFLOW_SIMD_ISA=$isa ctest --test-dir build --output-on-failure -j"$jobs" -L 'unit|oracle|cli'
  done
fi

step "AddressSanitizer + UndefinedBehaviorSanitizer build and tests (build-asan/)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIFLOW_SANITIZE=address,undefined \
  >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE install

step "ThreadSanitizer: one model shared by threads; a plan's and a trainer's worker threads (build-tsan/)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIFLOW_SANITIZE=thread >/dev/null
cmake --build build-tsan -j"$jobs" --target test_threads test_train_smoke
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure \
  -R '^(test_threads|test_threads_pool|test_train_smoke)$'

step "fuzzing (build-fuzz/)"
fuzz/run.sh

tools/install-cross-deps.sh
for preset in aarch64 armv7; do
  step "$preset cross build, quick tests under qemu (build-$preset/)"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$jobs"
  ctest --preset "$preset" -j"$jobs"
done
# Reduced precision on AArch64 CPUs with and without fp16 arithmetic and dot products: Armv8-max
# (FEAT_FP16, FHM, DotProd: the neon_fhm kernels, FMLAL for fp16), Cortex-A76 (FP16 and DotProd,
# no FHM) and Cortex-A72 (neither): the portable NEON kernels (bf16 emulation, fp16 by conversion,
# int8 weight decoding). The run proves the bits of each path on each CPU model qemu offers, and
# the refusal of SIFLOW_SIMD_ISA=neon_fhm where FHM is missing.
for cpu in max cortex-a76 cortex-a72; do
  for test in test_precision test_model_builder_reduced; do
    step "$test under qemu-aarch64 -cpu $cpu"
    qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "build-aarch64/tests/unit/$test"
  done
done
# The heap-free embed_c image on emulated Cortex-M7 (mps2-an500, double-precision FPU) and
# Cortex-M4F (mps2-an386, single-precision FPU: doubles in software), semihosting for its output
# and exit status, must print the host reference backend's bits for every sample and
# log-likelihood.
build/examples/embed_c/embed_c 8 --bits | grep '^bits' > build/embed_c.bits
[ "$(wc -l < build/embed_c.bits)" -eq 8 ]
for variant in m7:mps2-an500 m4:mps2-an386; do
  cpu=${variant%%:*}
  machine=${variant#*:}
  dir=build-cortex-$cpu
  step "cortex-$cpu bare-metal build, run under qemu-system-arm $machine ($dir/)"
  cmake --preset cortex-m -B "$dir" -DSIFLOW_CORTEX_M="$cpu" >/dev/null
  cmake --build "$dir" -j"$jobs"
  timeout 600 qemu-system-arm -machine "$machine" -nographic -monitor none \
    -semihosting-config enable=on,target=native,arg=embed_c,arg=8,arg=--bits \
    -kernel "$dir/examples/embed_c/embed_c_qemu" | tr -d '\r' | grep '^bits' > "$dir/embed_c.bits"
  if ! cmp -s build/embed_c.bits "$dir/embed_c.bits"; then
    echo "tests/run.sh: the Cortex-${cpu^^} image's bits differ from the host's:" >&2
    diff build/embed_c.bits "$dir/embed_c.bits" >&2 || true
    exit 1
  fi
  echo "Cortex-${cpu^^} under qemu-system-arm: 8 samples and log-likelihoods bit-identical to the host"
done
# ---- WebAssembly (issue 18): begin ----
# The wasm preset (Debian's emscripten): the runtime's unit tests, golden bits and C API test under
# node, the JavaScript wrapper's tests, and the example page in headless chromium.
tools/install-deps.sh --wasm
step "WebAssembly build, tests under node and headless chromium (build-wasm/)"
cmake --preset wasm >/dev/null
cmake --build --preset wasm -j"$jobs"
ctest --preset wasm -j"$jobs"
# ---- WebAssembly (issue 18): end ----
echo "-- previous step took $((SECONDS - step_start)) s"
echo "tests/run.sh: all passed in $SECONDS s"
