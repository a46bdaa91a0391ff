#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The fuzz check: builds the libFuzzer targets with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (its alignment check named explicitly: a misaligned load of file
# bytes is a finding) in build-fuzz/, replays the committed corpus and every regression
# input once, then fuzzes each target for a fixed, seeded budget. Fails on any finding (crash,
# sanitizer report, leak, timeout, or a successful call that returned non-finite numbers); the
# input that triggered it is left in build-fuzz/findings/ and belongs in fuzz/regressions/TARGET/.
#   fuzz/run.sh [--runs N]        N executions of fuzz_model and fuzz_checkpoint, 10 N of the much
#                                 cheaper fuzz_capi and fuzz_arrays (default 30000; 0 = replay only)
#   fuzz/run.sh --regen-corpus    rewrite fuzz/corpus/ with make_fuzz_corpus, then run
set -euo pipefail
cd "$(dirname "$0")/.."
runs=30000
regen=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --regen-corpus) regen=1; shift ;;
    *) echo "fuzz/run.sh: unknown option '$1' (expected --runs N or --regen-corpus)" >&2; exit 2 ;;
  esac
done
command -v clang++ >/dev/null || { echo "fuzz/run.sh: clang++ is missing (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSIFLOW_BUILD_FUZZERS=ON -DSIFLOW_SANITIZE=address,undefined,alignment -DSIFLOW_BUILD_TESTS=OFF \
  -DSIFLOW_BUILD_CLI=OFF -DSIFLOW_BUILD_EXAMPLES=OFF -DSIFLOW_BUILD_TRAINING=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_model fuzz_capi fuzz_arrays fuzz_checkpoint \
  make_fuzz_corpus

if [ "$regen" = 1 ]; then
  rm -rf fuzz/corpus/model fuzz/corpus/capi fuzz/corpus/arrays fuzz/corpus/checkpoint
  mkdir -p fuzz/corpus/model fuzz/corpus/capi fuzz/corpus/arrays fuzz/corpus/checkpoint
  build-fuzz/fuzz/make_fuzz_corpus fuzz/corpus
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
findings=build-fuzz/findings
mkdir -p "$findings"
common=(-seed=1 -timeout=20 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=0
        -artifact_prefix="$findings/")
for target in model checkpoint capi arrays; do
  bin=build-fuzz/fuzz/fuzz_$target
  inputs=(fuzz/corpus/$target)
  [ -d fuzz/regressions/$target ] && inputs+=(fuzz/regressions/$target)
  [ "$target" = model ] && inputs+=(examples/models)
  echo "== fuzz_$target: replaying ${inputs[*]}"
  "$bin" "${common[@]}" -runs=0 "${inputs[@]}" 2>&1 | tail -n 3
  if [ "$runs" -gt 0 ]; then
    n=$runs
    case "$target" in model | checkpoint) ;; *) n=$((runs * 10)) ;; esac
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "== fuzz_$target: $n seeded runs"
    "$bin" "${common[@]}" -runs="$n" "$work" "${inputs[@]}" 2>&1 | tail -n 3
    rm -rf "$work"
  fi
done
echo "fuzz: no findings"
