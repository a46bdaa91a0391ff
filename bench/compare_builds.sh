#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Compares two builds of bench_flow in one run, interleaved, on the benchmark models (M1, M2 of
# bench/run.sh): RK4 50 steps, one thread, sampling at batch 1 and 1024, exact log-likelihood at
# batch 256. Prints each build's median seconds and new/old. For restructurings that must not
# change speed.
#   bench/compare_builds.sh OLD_BENCH_FLOW NEW_BENCH_FLOW [ROUNDS]   (default 7 rounds)
set -euo pipefail
old=$1
new=$2
rounds=${3:-7}
models=$(mktemp -d)
trap 'rm -rf "$models"' EXIT
"$new" models "$models" >/dev/null
seconds() { "$1" run "$models/$2.sif" "$3" 50 1 "${@:4}" | awk '{print $2}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-28s %10s %10s %8s\n' configuration old_s new_s new/old
for config in "m1 1" "m1 1024" "m2 1024" "m1 256 --logp" "m2 256 --logp"; do
  # shellcheck disable=SC2086
  set -- $config
  : >"$models/old.txt"
  : >"$models/new.txt"
  for _ in $(seq "$rounds"); do
    seconds "$old" "$@" >>"$models/old.txt"
    seconds "$new" "$@" >>"$models/new.txt"
  done
  o=$(median <"$models/old.txt")
  n=$(median <"$models/new.txt")
  printf '%-28s %10.4f %10.4f %8.3f\n' "$config" "$o" "$n" "$(awk -v n="$n" -v o="$o" 'BEGIN { print n / o }')"
done
