#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# End-to-end tests of the siflow CLI on the models make_test_model writes: every command in .npy
# and .csv, --help, numerical consistency, and each bad input's exit code and message. Works only
# inside its scratch directory (argument 3), which it recreates; it must never write elsewhere.
# Usage: cli_test.sh SIFLOW MAKE_TEST_MODEL WORK_DIR [main|threads]
#   main (the default): everything but the checks that need worker threads; in a build without a
#                       thread pool (SIFLOW_TEST_THREADS=OFF), that --threads N > 1 is refused
#   threads:            the worker-thread checks only (the same bytes for any thread count);
#                       without a thread pool it prints SKIPPED and exits with 77
# In a cross build SIFLOW_TEST_EMULATOR names the emulator command (words separated by spaces)
# that runs both programs.
set -u
SIFLOW=$1
MAKE_MODEL=$2
WORK=$3
PART=${4:-main}
case "$PART" in
  main | threads) ;;
  *) echo "cli_test.sh: unknown part '$PART' (expected main or threads)" >&2; exit 2 ;;
esac
HAVE_POOL=${SIFLOW_TEST_THREADS:-ON}
if [ "$PART" = threads ] && [ "$HAVE_POOL" = OFF ]; then
  echo "SKIPPED: the CLI's worker-thread checks: this build has no thread pool (no threads: bare metal, minimal or WebAssembly)"
  exit 77
fi
# shellcheck disable=SC2206  # the emulator command is meant to split into words
EMULATOR=(${SIFLOW_TEST_EMULATOR:-})
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
"${EMULATOR[@]}" "$MAKE_MODEL" . || { echo "FAIL: make_test_model"; exit 1; }
M=normal.sif      # Gaussian base, embedded test vectors
B=bad_tests.sif   # embedded test vectors that do not match
U=uniform.sif     # uniform base, no test vectors
Z=normalized.sif  # Gaussian base with a normalization

checks=0
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# run ARGS...: runs the CLI; stdout, stderr and the exit code go to out.txt, err.txt and $rc. A
# run that hangs (a FIFO read, say) is killed after 300 s and fails with exit code 124.
run() {
  timeout 300 "${EMULATOR[@]}" "$SIFLOW" "$@" >out.txt 2>err.txt
  rc=$?
}

# ok TEXT ARGS...: expects exit 0 and, unless TEXT is empty, TEXT in stdout or stderr.
ok() {
  local want=$1
  shift
  checks=$((checks + 1))
  run "$@"
  if [ "$rc" -ne 0 ] || { [ -n "$want" ] && ! grep -qF -- "$want" out.txt err.txt; }; then
    fail "siflow $* -> exit $rc; expected 0 and '$want'"
    sed 's/^/  | /' out.txt err.txt
  fi
}

# fails CODE TEXT ARGS...: expects exit CODE and TEXT in stderr.
fails() {
  local code=$1 want=$2
  shift 2
  checks=$((checks + 1))
  run "$@"
  if [ "$rc" -ne "$code" ] || ! grep -qF -- "$want" err.txt; then
    fail "siflow $* -> exit $rc; expected $code and '$want' on stderr"
    sed 's/^/  | /' out.txt err.txt
  fi
}

# check CONDITION-COMMAND... : records a failure when the command fails.
check() {
  checks=$((checks + 1))
  "$@" || fail "$*"
}

# differ A B: the files' bytes differ.
differ() {
  ! cmp -s "$1" "$2"
}

# has_header FILE DESCR SHAPE: the .npy header names this dtype and shape.
has_header() {
  head -c 128 "$1" | grep -aqF "{'descr': '$2', 'fortran_order': False, 'shape': $3, }"
}

# csv_is FILE HEADER ROWS: the CSV has this header line and this many data rows.
csv_is() {
  [ "$(head -n 1 "$1")" = "$2" ] && [ "$(($(wc -l <"$1") - 1))" -eq "$3" ]
}

# close A.csv B.csv TOL: same shape, and every value within TOL (headers skipped).
close() {
  [ "$(wc -l <"$1")" -eq "$(wc -l <"$2")" ] || return 1
  paste -d, "$1" "$2" | awk -F, -v tol="$3" '
    NR > 1 { n = NF / 2; for (i = 1; i <= n; ++i) { d = $i - $(i + n); if (d < 0) d = -d;
             if (d > m) m = d } }
    END { if (m > tol) { printf "max difference %g > %g\n", m, tol; exit 1 } }'
}

# npy FILE DICT DATA: writes a v1.0 .npy with header DICT and raw DATA (printf escapes).
npy() {
  local dict=$2
  local pad=$(((64 - (10 + ${#dict} + 1) % 64) % 64))
  dict="$dict$(printf '%*s' "$pad" '')"
  local len=$((${#dict} + 1))
  {
    printf '\x93NUMPY\x01\x00'
    printf "\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))"
    printf '%s\n' "$dict"
    printf "$3"
  } >"$1"
}

PY=/usr/bin/python3
if [ -x "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; then
  have_numpy=1
else
  have_numpy=0
  echo "note: /usr/bin/python3 with numpy not found; .npy checks use headers and CSV only"
fi
# py CODE: a numpy assertion (skipped without numpy).
py() {
  [ "$have_numpy" = 1 ] || return 0
  checks=$((checks + 1))
  "$PY" -c "import numpy as np; $1" || fail "python: $1"
}

F1='\x00\x00\x80\x3f'  # float32 1.0
NAN='\x00\x00\xc0\x7f' # float32 NaN

# siflow train (builds with the training library): a short run. One thread unless a check is
# about threads: ctest runs tests side by side.
if "${EMULATOR[@]}" "$SIFLOW" train --help >/dev/null 2>&1; then
  have_train=1
else
  have_train=0
fi
T="--data moons --hidden 16,16 --batch 64 --steps 30 --warmup 5 --eval-every 20 --eval-points 50
   --eval-steps 4 --holdout-points 100 --checkpoint-every 10"
T1="$T --threads 1"

# --- worker threads: any thread count gives the same bytes (part `threads`) -----------------
if [ "$PART" = threads ]; then
  ok "kernels       backend simd, 2 threads" info $M --backend simd --threads 2
  check grep -qE "node 1 +fully_connected +[0-9]+ -> [0-9]+ +simd/" out.txt
  for b in reference simd; do
    ok "" sample $M -n 300 --seed 3 -o b1.npy --logprob-out bl1.npy --backend $b
    ok "" sample $M -n 300 --seed 3 -o b3.npy --logprob-out bl3.npy --backend $b --threads 3
    check cmp -s b1.npy b3.npy
    check cmp -s bl1.npy bl3.npy
  done
  ok "velocity      8 points" validate $M --backend simd
  # A tuned plan of one block may sample on the caller's thread alone (forced here: the timed
  # choice depends on the machine); info says so, and the samples keep their bytes.
  SIFLOW_VELOCITY_ON_CALLER=1 ok "sampling runs on 1 thread: SIFLOW_VELOCITY_ON_CALLER=1 keeps" \
    info $M --batch 1 --threads 2 --tune-kernels on
  SIFLOW_VELOCITY_ON_CALLER=0 ok "kernels       backend auto (tuned), 2 threads" \
    info $M --batch 1 --threads 2 --tune-kernels on
  check test "$(grep -c "sampling runs on" out.txt)" = 0
  if [ "$have_train" = 1 ]; then
    # shellcheck disable=SC2086
    ok "held-out NLL" train $T1 -o whole.sif
    # shellcheck disable=SC2086
    ok "" train $T -o threads.sif --threads 2 --final-eval 0
    check cmp -s whole.sif threads.sif
  fi
  echo "$checks checks, $failures failures"
  [ "$failures" -eq 0 ]
  exit
fi
# A build without a thread pool refuses worker threads by name (their checks are part `threads`).
if [ "$HAVE_POOL" = OFF ]; then
  fails 1 "threads = 2, but this build has no thread pool" info $M --backend simd --threads 2
  fails 1 "threads = 3, but this build has no thread pool" sample $M -n 3 -o x.npy --threads 3
  if [ "$have_train" = 1 ]; then
    # shellcheck disable=SC2086
    fails 1 "threads = 2, but this build has no thread pool" train $T -o x.sif --threads 2
  fi
fi

# --- help and version ----------------------------------------------------------------------
ok "Usage: siflow COMMAND" --help
ok "Commands:" help
ok "siflow 0." --version
fails 2 "Usage: siflow COMMAND"
fails 2 "unknown command 'bogus'" bogus
fails 2 "unknown command 'nope'" help nope
for c in info sample decode encode logprob velocity validate; do
  ok "Usage: siflow $c" "$c" --help
  ok "Usage: siflow $c" help "$c"
  ok "-h, --help" "$c" -h
done
ok "(default rk4)" help sample
ok "(default 50)" help decode
ok "(default 256)" help encode
ok "(default heun)" help sample

# --- reduced precision ---------------------------------------------------------------------
# --precision on every command; fp32 is the default, bit for bit; validate derives its tolerance.
ok "precision int8" info $M --precision int8
ok "" sample $M -n 50 --seed 2 -o p0.npy
ok "" sample $M -n 50 --seed 2 -o p1.npy --precision fp32
check cmp -s p0.npy p1.npy
for p in bf16 fp16 int8; do
  ok "" sample $M -n 50 --seed 2 -o p2.npy --precision $p
  ok "" logprob $M -i p2.npy -o p2l.npy --precision $p
  ok "" encode $M -i p2.npy -o p2e.npy --precision $p
  ok "velocity      8 points" validate $M --precision $p
done
fails 2 "--precision: unknown precision 'fp8' (expected fp32, bf16, fp16 or int8)" \
  sample $M -n 3 -o x.npy --precision fp8
ok "--precision P" help validate
# --tune-kernels: times the layers at plan creation (a faster kernel may round differently, so
# only the run's success and the refusals are checked here; the choice is test_conv_xnnpack's).
ok "kernels       backend auto (tuned), 1 thread" info $M --tune-kernels on
ok "" sample $M -n 50 --seed 2 -o tk.npy --tune-kernels on
ok "--tune-kernels on|off" help sample
fails 2 "--tune-kernels on chooses between kernels: it needs --backend auto, not simd" \
  sample $M -n 3 -o x.npy --backend simd --tune-kernels on
fails 2 "--tune-kernels: expected on or off, not 'yes'" sample $M -n 3 -o x.npy --tune-kernels yes

# --- info ----------------------------------------------------------------------------------
ok "cli-normal" info $M
for want in "dim           2" "base          normal" "8 velocity points, 3 trajectories" \
  "purpose = siflow CLI tests" "for batch 256 with exact divergence" "total memory"; do
  check grep -qF "$want" out.txt
done
ok "base          uniform" info $U
ok "normalized    yes" info $Z
ok "for batch 7 with exact divergence" info $M --batch 7
check grep -qE "static load +[0-9]+ bytes" out.txt
fails 2 "--batch: 0 is outside" info $M --batch 0
ok "kernels       backend reference, 1 thread" info $M --backend reference
check grep -qE "node 1 +fully_connected +[0-9]+ -> [0-9]+ +reference" out.txt
ok "kernels       backend simd, 1 thread" info $M --backend simd
check grep -qE "node 1 +fully_connected +[0-9]+ -> [0-9]+ +simd/" out.txt
fails 2 "--backend: unknown backend 'gpu'" info $M --backend gpu
fails 2 "--threads: 0 is outside [1, 256]" sample $M -n 4 -o x.npy --threads 0

# --- backends agree closely (thread counts: part `threads`) --------------------------------
for b in reference simd; do
  ok "" sample $M -n 300 --seed 3 -o b_$b.npy --logprob-out bl_$b.npy --backend $b
done
check differ b_reference.npy b_simd.npy # different kernels: the comparison below can fail
py "a = np.load('b_reference.npy'); b = np.load('b_simd.npy')
assert np.max(np.abs(a - b)) < 1e-4, np.max(np.abs(a - b))"
ok "velocity      8 points" validate $M --backend reference
ok "velocity      8 points" validate $M --backend simd

# --- sample --------------------------------------------------------------------------------
ok "siflow sample: 40 rows, rk4, 50 steps, exact divergence" \
  sample $M -n 40 --seed 3 -o s.npy --logprob-out lp.npy
check [ "$(wc -l <err.txt)" -eq 1 ] # the summary only: no progress line off a terminal
check has_header s.npy '<f4' '(40, 2)'
check has_header lp.npy '<f8' '(40,)'
ok "" sample $M -n 40 --seed 3 -o s.csv --logprob-out lp.csv
check csv_is s.csv x0,x1 40
check csv_is lp.csv logp 40
py "a = np.load('s.npy'); b = np.loadtxt('s.csv', delimiter=',', skiprows=1, dtype=np.float32)
assert a.dtype == np.float32 and a.shape == (40, 2) and np.array_equal(a, b)"
py "a = np.load('lp.npy'); b = np.loadtxt('lp.csv', skiprows=1)
assert a.dtype == np.float64 and a.shape == (40,) and np.allclose(a, b, rtol=1e-8, atol=0)"
ok "" sample $M -n 40 --seed 3 -o s7.npy --max-batch 7
check cmp -s s.npy s7.npy # the same draws whatever the chunking
ok "" sample $M -n 40 --seed 4 -o s4.npy
check differ s.npy s4.npy
ok "" sample $M -n 40 -o sh.npy --logprob-out lph.npy --divergence hutchinson:2 --probe gaussian
check has_header lph.npy '<f8' '(40,)'
for m in euler heun midpoint rk4 rk4-38; do
  ok "siflow sample: 5 rows, $m, 8 steps" sample $M -n 5 --method=$m --steps=8 -o m.csv
done
ok "" sample $U -n 40 -o us.csv
check csv_is us.csv x0,x1 40

# --- logprob agrees with sample's --logprob-out; encode and decode invert each other -------
ok "siflow logprob: 40 rows, rk4, 50 steps, exact divergence" logprob $M -i s.csv -o lp2.csv
check close lp.csv lp2.csv 1e-3
ok "" logprob $M -i s.npy -o lp2.npy
check has_header lp2.npy '<f8' '(40,)'
py "assert np.allclose(np.load('lp.npy'), np.load('lp2.npy'), rtol=0, atol=1e-3)"
ok "" encode $M -i s.csv -o e.csv
ok "" decode $M -i e.csv -o d.csv --logprob-out dl.csv
check close d.csv s.csv 1e-3
check close dl.csv lp.csv 1e-3
ok "" encode $M -i s.npy -o e.npy
check has_header e.npy '<f4' '(40, 2)'
ok "" sample $Z -n 40 --seed 5 -o zs.csv --logprob-out zl.csv
ok "" logprob $Z -i zs.csv -o zl2.csv
check close zl.csv zl2.csv 1e-3
ok "" encode $Z -i zs.csv -o ze.csv
ok "" decode $Z -i ze.csv -o zd.csv
check close zd.csv zs.csv 1e-3
ok "Hutchinson divergence (16 gaussian probes)" \
  logprob $M -i s.csv -o lh.csv --divergence hutchinson:16 --probe gaussian --seed 5
check csv_is lh.csv logp 40
ok "" logprob $M -i s.csv -o lt.csv --time 0.5
printf 'x0,x1\n50,50\n' >far.csv
ok "" logprob $U -i far.csv -o far_lp.csv # far outside the uniform base's box
check csv_is far_lp.csv logp 1
check grep -qx -- -inf far_lp.csv

# --- explicit time grids ----------------------------------------------------------------------
awk 'BEGIN { print "t"; for (i = 0; i <= 50; ++i) printf "%.17g\n", i / 50 }' >grid.csv
ok "rk4, grid of 50 steps" sample $M -n 40 --seed 3 -o sg.csv --grid grid.csv
check close sg.csv s.csv 1e-5
awk 'BEGIN { for (i = 0; i <= 20; ++i) printf "%.17g\n", i / 40 }' >half.csv
ok "grid of 20 steps" logprob $M -i s.csv -o lg.csv --time 0.5 --grid half.csv
npy grid.npy "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }" \
  '\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xe0\x3f\x00\x00\x00\x00\x00\x00\xf0\x3f'
ok "grid of 2 steps" encode $M -i s.csv -o g2.csv --grid grid.npy
fails 1 "time grid runs from 0 to 0.5, but this run needs 0 to 1" \
  sample $M -n 4 -o x.npy --grid half.csv
printf 't\n0\n0.5\n0.5\n1\n' >flat.csv
fails 1 "time grid is not strictly increasing at point 2" sample $M -n 4 -o x.npy --grid flat.csv
fails 1 "s.csv: shape (40, 2); expected a vector" sample $M -n 4 -o x.npy --grid s.csv
fails 2 "--steps and --grid are mutually exclusive" sample $M -n 4 -o x.npy --steps 5 --grid grid.csv

# --- SDE sampling --------------------------------------------------------------------------
ok "SDE heun, eps 0.5, schedule a, 50 steps" sample $M -n 40 --sde 0.5 -o sde.npy
check has_header sde.npy '<f4' '(40, 2)'
ok "SDE em, eps 0.5, schedule constant, stop 0.1 then heun, 20 steps" sample $M -n 40 \
  --sde 0.5 --sde-schedule constant --sde-stop 0.1 --sde-method em --method heun --steps 20 \
  -o sde.csv
fails 1 "SDE sampling needs a Gaussian base" sample $U -n 10 --sde 0.5 -o x.npy
fails 1 "SDE samples have no per-sample log-likelihood" \
  sample $M -n 10 --sde 0.5 -o x.npy --logprob-out y.npy
fails 1 "constant epsilon without a stop" sample $M -n 10 --sde 0.5 --sde-schedule constant -o x.npy
fails 2 "--sde-stop applies only with --sde" sample $M -n 10 --sde-stop 0.1 -o x.npy
fails 2 "--sde: EPS must be positive" sample $M -n 10 --sde 0 -o x.npy
fails 2 "--sde-method: unknown method 'rk4'" sample $M -n 10 --sde 1 --sde-method rk4 -o x.npy

# --- velocity and validate -----------------------------------------------------------------
ok "" velocity $M -i s.csv -t 0.25 -o v.csv
check csv_is v.csv x0,x1 40
awk 'BEGIN { print "t"; for (i = 0; i < 40; ++i) print 0.25 }' >t.csv
ok "" velocity $M -i s.csv -t t.csv -o v2.csv
check cmp -s v.csv v2.csv
ok "" velocity $M -i s.npy --times 0.25 -o v.npy
check has_header v.npy '<f4' '(40, 2)'
printf '0.1\n0.2\n0.3\n' >t3.csv
fails 1 "--times: 't3.csv' holds 3 times, but the input has 40 rows" velocity $M -i s.csv -t t3.csv -o x.csv
fails 2 "--times: 'soon' is neither a number nor a .npy or .csv file" velocity $M -i s.csv -t soon -o x.csv
ok "trajectories  3 of 20 RK4 steps" validate $M
check grep -q "^velocity      8 points: .* ok$" out.txt
fails 1 "validation failed" validate $B
check grep -q FAILED out.txt
fails 1 "the model has no test vectors" validate $U
ok "velocity      40 points" validate $M --inputs s.csv --times 0.25 --expected v.csv
awk -F, 'NR == 1 { print; next } { printf "%.9g,%s\n", $1 + 0.01, $2 }' v.csv >vbad.csv
fails 1 "validation failed" validate $M --inputs s.csv --times t.csv --expected vbad.csv
ok "(tolerance 0.1) ok" validate $M --inputs s.csv --times 0.25 --expected vbad.csv --tolerance 0.1
fails 2 "--tolerance applies only with --inputs" validate $M --tolerance 1
fails 2 "missing required option --expected" validate $M --inputs s.csv --times 0.5
head -n 4 s.csv >s3.csv
fails 1 "--expected: 'us.csv' has 40 rows, but --inputs 's3.csv' has 3" \
  validate $M --inputs s3.csv --times 0.1 --expected us.csv
# A stop signal cancels a validation through its progress callback within a second, with the
# exit status of an interrupted run (130); slow_validate.sif's test vectors would run for tens
# of seconds.
"$SIFLOW" validate slow_validate.sif >out.txt 2>err.txt &
pid=$!
sleep 1
start=$(date +%s%N)
kill -INT $pid
for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
stopped_ms=$((($(date +%s%N) - start) / 1000000))
kill -KILL $pid 2>/dev/null
wait $pid
rc=$?
checks=$((checks + 1))
if [ "$rc" -ne 130 ] || [ "$stopped_ms" -gt 1000 ] || ! grep -q "stopped (interrupted)" err.txt; then
  fail "SIGINT during validate: exit $rc after $stopped_ms ms (expected 130 within 1000 ms)"
  sed 's/^/  | /' out.txt err.txt
fi
echo "note: SIGINT during validate stopped it in $stopped_ms ms"

# --- image shapes: .npy [N, C, H, W] in and out, [N, d] accepted, .csv stays [N, d] ---------------
npy img.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 2, 2), }" "$F1$F1$F1$F1$F1$F1$F1$F1"
ok "" velocity image.sif -i img.npy -t 0.5 -o v_img.npy
checks=$((checks + 1))
if ! head -c 128 v_img.npy | grep -qF "'shape': (2, 1, 2, 2)"; then
  fail "velocity on an image model: output .npy is not in the model's shape [N, 1, 2, 2]"
fi
npy flat.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }" "$F1$F1$F1$F1$F1$F1$F1$F1"
ok "" decode image.sif -i flat.npy -o d_img.npy --steps 2
checks=$((checks + 1))
if ! head -c 128 d_img.npy | grep -qF "'shape': (2, 1, 2, 2)"; then
  fail "decode on an image model: output .npy is not in the model's shape [N, 1, 2, 2]"
fi
ok "" sample image.sif -n 3 -o s_img.csv --steps 2
checks=$((checks + 1))
if [ "$(head -1 s_img.csv)" != "x0,x1,x2,x3" ]; then
  fail "sample on an image model: .csv output is not [N, d] (header $(head -1 s_img.csv))"
fi
npy img_bad.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 2), }" "$F1$F1$F1$F1"
fails 1 "img_bad.npy: shape (1, 2, 1, 2) does not match the model: expected [N, 4] or [N, 1, 2, 2]" \
  encode image.sif -i img_bad.npy -o o.npy
npy five.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2, 2), }" "$F1$F1$F1$F1"
fails 1 "five.npy: a 5-D array of shape (1, 1, 1, 2, 2); expected 1-D to 4-D" \
  encode image.sif -i five.npy -o o.npy
ok "x shape       [1, 2, 2]" info image.sif
ok "transpose" info image.sif
checks=$((checks + 1))
if ! grep -qF "[2, 2]" out.txt || ! grep -qF "reshape" out.txt; then
  fail "siflow info on an image model does not print the nodes' shapes"
  sed 's/^/  | /' out.txt
fi
# tune-solver copies a format 1.4 model whole: x's shape and the layout ops' fields survive.
ok "" tune-solver image.sif --nfe 4 -o image_tuned.sif --sweeps 1
ok "x shape       [1, 2, 2]" info image_tuned.sif
ok "solvers       1 stored" validate image_tuned.sif
ok "" velocity image_tuned.sif -i img.npy -t 0.5 -o v_img_tuned.npy
check cmp -s v_img.npy v_img_tuned.npy

# --- bad inputs --------------------------------------------------------------------------------
printf 'a,b,c\n1,2,3\n4,5,6\n' >three.csv
fails 1 "three.csv: shape (2, 3) does not match the model: expected [N, 2]" \
  decode $M -i three.csv -o o.npy
npy vec.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" "$F1$F1"
fails 1 "vec.npy: shape (2,) does not match the model" encode $M -i vec.npy -o o.npy
: >empty.csv
fails 1 "empty.csv: no data rows" decode $M -i empty.csv -o o.npy
printf 'x0,x1\n\n' >header_only.csv
fails 1 "header_only.csv: no data rows" logprob $M -i header_only.csv -o o.npy
npy empty.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2), }" ''
fails 1 "empty.npy: empty array of shape (0, 2)" decode $M -i empty.npy -o o.npy
fails 2 "-n: 0 is outside [1," sample $M -n 0 -o o.npy
printf 'x0,x1\n1,2\n3,nan\n' >nan.csv
fails 1 "nan.csv: line 3, column 2: 'nan' is not a finite number" decode $M -i nan.csv -o o.npy
printf '1,2\n3,1e999\n' >inf.csv
fails 1 "inf.csv: line 2, column 2: '1e999' is not a finite number" encode $M -i inf.csv -o o.npy
npy nan.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }" "$F1$F1$NAN$F1"
fails 1 "nan.npy: element [1, 0] is NaN" logprob $M -i nan.npy -o o.npy
printf 'x0,x1\n1,2\n3\n' >ragged.csv
fails 1 "ragged.csv: line 3 has 1 column, expected 2 (as on line 2)" decode $M -i ragged.csv -o o.npy
printf 'a,b,c\n1,2\n' >short.csv
fails 1 "short.csv: line 2 has 2 columns, but the header on line 1 has 3" decode $M -i short.csv -o o.npy
printf '1,2\n3,x\n' >word.csv
fails 1 "word.csv: line 2, column 2: 'x' is not a number" decode $M -i word.csv -o o.npy
printf '1,2\n,4\n' >hole.csv
fails 1 "hole.csv: line 2, column 1 is empty" decode $M -i hole.csv -o o.npy
npy fortran.npy "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2), }" "$F1$F1"
fails 1 "fortran.npy: fortran_order is True" decode $M -i fortran.npy -o o.npy
npy int.npy "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 2), }" "$F1$F1"
fails 1 "int.npy: dtype '<i4' is not supported" decode $M -i int.npy -o o.npy
npy big.npy "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }" "$F1$F1"
fails 1 "big.npy: dtype '>f4' is not supported" decode $M -i big.npy -o o.npy
npy trunc.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }" "$F1$F1"
fails 1 "trunc.npy: truncated: shape (2, 2) of <f4 needs 16 bytes of data, but 8 follow" \
  decode $M -i trunc.npy -o o.npy
npy long.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }" "$F1$F1$F1"
fails 1 "long.npy: 4 unexpected bytes after the data" decode $M -i long.npy -o o.npy
printf 'x0,x1\n' >fake.npy
fails 1 "fake.npy: not a .npy file" decode $M -i fake.npy -o o.npy
npy f8.npy "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }" \
  '\x00\x00\x00\x00\x00\x00\xe0\x3f\x00\x00\x00\x00\x00\x00\xd0\xbf'
ok "siflow decode: 1 row," decode $M -i f8.npy -o o1.csv
printf 'x0,x1\r\n\r\n1,2\r\n\n3,4\r\n' >crlf.csv
ok "siflow encode: 2 rows" encode $M -i crlf.csv -o o2.csv
fails 1 "cannot open 'missing.csv'" decode $M -i missing.csv -o o.npy
fails 1 "cannot open model 'missing.sif'" info missing.sif
head -c 300 $M >truncated.sif
fails 1 "truncated.sif: FlatBuffers verification failed" info truncated.sif
printf 'not a model at all' >junk.sif
fails 1 "junk.sif: not a siflow model" sample junk.sif -n 2 -o o.npy
fails 2 "--method: unknown method 'rk5'" sample $M -n 2 -o o.npy --method rk5
fails 2 "unknown option '--bogus'" decode $M -i s.csv -o o.npy --bogus 1
fails 2 "unexpected argument 'extra'" info $M extra
fails 2 "missing MODEL" info
fails 2 "--max-batch: 0 is outside [1, 1048576]" encode $M -i s.csv -o o.npy --max-batch 0
fails 2 "option '--steps' needs a value (K)" encode $M -i s.csv -o o.npy --steps
fails 2 "--steps: 'ten' is not a non-negative integer" encode $M -i s.csv -o o.npy --steps ten
fails 2 "--steps: 0 is outside [1," encode $M -i s.csv -o o.npy --steps 0
fails 2 "--seed: '-1' is not a non-negative integer" sample $M -n 2 -o o.npy --seed -1
fails 2 "option '--seed' is given more than once" sample $M -n 2 -o o.npy --seed 1 --seed 2
fails 2 "--output: 'o.txt' has neither a .npy nor a .csv extension" sample $M -n 2 -o o.txt
fails 2 "--input: 's.dat' has neither a .npy nor a .csv extension" decode $M -i s.dat -o o.npy
fails 2 "missing required option -o FILE" sample $M -n 2
fails 2 "--output 'o.npy' and --logprob-out 'o.npy' name the same file" \
  sample $M -n 2 -o o.npy --logprob-out o.npy
fails 2 "--divergence applies only with --logprob-out" sample $M -n 2 -o o.npy --divergence exact
fails 2 "--seed applies only with --logprob-out" decode $M -i s.csv -o o.npy --seed 3
fails 2 "--probe applies only with --divergence hutchinson" logprob $M -i s.csv -o o.npy --probe gaussian
fails 2 "--divergence: unknown mode 'trace'" logprob $M -i s.csv -o o.npy --divergence trace
fails 2 "--divergence hutchinson:K: 0 is outside [1, 1024]" \
  logprob $M -i s.csv -o o.npy --divergence hutchinson:0
fails 2 "--time: -1 is negative" logprob $M -i s.csv -o o.npy --time -1
fails 1 "time 2 is outside the model's range (0, 1]" logprob $M -i s.csv -o o.npy --time 2
fails 1 "cannot write 'nodir/o.npy'" encode $M -i s.csv -o nodir/o.npy
fails 2 "unknown option '--seed'" encode $M -i s.csv -o o.npy --seed 1

# --- outputs are compared with inputs and each other by identity, not by spelling -------------
mkdir -p od
fails 2 "--output 'od/s.npy' and --logprob-out 'od/./s.npy' name the same file" \
  sample $M -n 4 -o od/s.npy --logprob-out od/./s.npy
check [ -z "$(ls od)" ]
cp s.csv keep.csv
fails 2 "--output 's.csv' is the input --input 's.csv'" encode $M -i s.csv -o s.csv
fails 2 "--output './od/../s.csv' is the input --input 's.csv'" decode $M -i s.csv -o ./od/../s.csv
ln -s s.csv link.csv
fails 2 "--output 'link.csv' is the input --input 's.csv'" logprob $M -i s.csv -o link.csv
ln s.csv hard.csv
fails 2 "--output 'hard.csv' is the input --input 's.csv'" encode $M -i s.csv -o hard.csv
fails 2 "--logprob-out 's.csv' is the input --input 's.csv'" \
  decode $M -i s.csv -o od/d.csv --logprob-out s.csv
fails 2 "--output 'grid.csv' is the input --grid 'grid.csv'" sample $M -n 4 -o grid.csv --grid grid.csv
fails 2 "--output 't.csv' is the input --times 't.csv'" velocity $M -i s.csv -t t.csv -o t.csv
check cmp -s s.csv keep.csv
rm -f link.csv hard.csv

# --- outputs appear all or none; temporaries are exclusive and cleaned after a killed run ---
mkdir lpdir.npy # the log-likelihood output's rename fails after the samples are ready
fails 1 "cannot rename" sample $M -n 4 -o all.npy --logprob-out lpdir.npy
check [ ! -e all.npy ]
check [ -z "$(find . -name '*siflow-tmp*')" ]
rmdir lpdir.npy
dead=$(bash -c 'echo $$') # a pid that has exited
touch "st.npy.siflow-tmp-$dead-abcdef" "st.npy.siflow-tmp-$$-abcdef" "notes.tmp.$dead"
ok "" sample $M -n 4 -o st.npy
check [ ! -e "st.npy.siflow-tmp-$dead-abcdef" ] # the dead run's temporary is gone
check [ -e "st.npy.siflow-tmp-$$-abcdef" ]      # a running process's is kept
check [ -e "notes.tmp.$dead" ]                  # and so is anything not of its pattern
rm -f "st.npy.siflow-tmp-$$-abcdef" "notes.tmp.$dead"
ln -s st.npy planted.npy # an output name that is a symlink: replaced, never written through
cp st.npy st_keep.npy
ok "" sample $M -n 3 --seed 9 -o planted.npy
check [ ! -L planted.npy ] && check cmp -s st.npy st_keep.npy

# --- hostile inputs: BOMs, headers by rule, NUL bytes, duplicate keys, FIFOs, devices --------
printf '\xef\xbb\xbf1,2\n3,4\n' >bom.csv
ok "siflow encode: 2 rows" encode $M -i bom.csv -o bom_out.csv # the first row is data
printf '\xef\xbb\xbfx0,x1\n1,2\n' >bom_header.csv
ok "siflow encode: 1 row" encode $M -i bom_header.csv -o bom_out.csv
printf '1,2x\n3,4\n' >typo.csv
fails 1 "typo.csv: line 1, column 2: '2x' is not a number" encode $M -i typo.csv -o o.npy
printf 'x0,1\n3,4\n' >mixed.csv
fails 1 "mixed.csv: line 1, column 1: 'x0' is not a number" encode $M -i mixed.csv -o o.npy
printf '0.2\0junk,1\n' >nul.csv
fails 1 "nul.csv: line 1 holds a NUL byte" encode $M -i nul.csv -o o.npy
npy dup.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'shape': (2,), }" \
  "$F1$F1$F1$F1$F1$F1$F1$F1"
fails 1 "key 'shape' appears twice" encode $M -i dup.npy -o o.npy
mkfifo fifo.sif fifo.csv
fails 1 "model 'fifo.sif' is not a regular file" info fifo.sif
fails 1 "'fifo.csv' is not a regular file" encode $M -i fifo.csv -o o.npy
ln -s /dev/zero zero.npy
fails 1 "'zero.npy' is not a regular file" decode $M -i zero.npy -o o.npy
fails 1 "model 'od' is not a regular file" info od
fails 1 "time 1.0000001 is outside the model's range (0, 1]" \
  logprob $M -i s.csv -o o.npy --time 1.0000001
fails 1 "--times: time -5 is outside the model's range [0, 1]" velocity $M -i s.csv -t -5 -o o.npy
fails 1 "--times: time 1e+30 is outside the model's range [0, 1]" velocity $M -i s.csv -t 1e30 -o o.npy
awk 'BEGIN { print "t"; for (i = 0; i < 40; ++i) print (i == 6 ? 1.5 : 0.5) }' >t_bad.csv
fails 1 "--times: time 1.5 (row 7) is outside" velocity $M -i s.csv -t t_bad.csv -o o.npy
ok "" velocity $M -i s.csv -t 1 -o v1.csv # the range's ends are in it
ok "" velocity $M -i s.csv -t 0 -o v0.csv

# --- memory and threads: a plan for the rows asked for; a warning past the core count --------
ok "for 4 rows" sample $M -n 4 -o a4.npy --logprob-out a4l.npy
a4=$(grep -o 'arena [0-9]*' err.txt | cut -d' ' -f2)
ok "" info $M --batch 4
i4=$(grep 'with exact divergence (log-likelihoods)' out.txt | grep -o '[0-9]* bytes' | cut -d' ' -f1)
check [ -n "$a4" ] && check [ "$a4" = "$i4" ]
ok "for 40 rows" logprob $M -i s.csv -o lp40.npy --max-batch 300
ok "for 7 rows" logprob $M -i s.csv -o lp7.npy --max-batch 7
cores=$(nproc)
ok "exceeds the $cores core" sample $M -n 4 -o w.npy --threads $((cores + 1))
check grep -q "warning: --threads $((cores + 1))" err.txt
ok "" sample $M -n 4 -o w.npy --threads 1
check [ "$(wc -l <err.txt)" -eq 1 ] # no warning within the cores

# siflow train (builds with the training library): a short run writes a model the other
# commands read, a CSV log and a checkpoint; a run stopped with --stop-after and resumed writes
# the same bytes as the uninterrupted run; bad options are refused by name.
if [ "$have_train" = 1 ]; then
  ok "--hidden W,W,...        hidden layer widths (default 256,256,256)" train --help
  ok "--steps N               optimisation steps (default 20000)" train --help
  # shellcheck disable=SC2086
  ok "held-out NLL" train $T1 -o whole.sif --log whole.csv
  check [ -s whole.sif ] && check [ -s whole.sif.ckpt ]
  check grep -qx "step,seconds,lr,loss,g,v_squared,grad_norm,heldout_nll,path_energy" whole.csv
  check grep -q '^20,.*,[0-9.-]*,[0-9]' whole.csv
  ok "interpolant   trig" info whole.sif
  ok "" sample whole.sif -n 5 -o whole_samples.npy --logprob-out whole_logp.npy
  # shellcheck disable=SC2086
  ok "stopped (--stop-after) after step 13" train $T1 -o part.sif --stop-after 13 --log part.csv
  check [ ! -e part.sif ]
  ok "resuming at 13" train --data moons -o part.sif --resume part.sif.ckpt --log part.csv \
    --threads 0
  check cmp -s whole.sif part.sif
  check cmp -s <(cut -d, -f1 whole.csv) <(cut -d, -f1 part.csv)
  # --precision bf16: the 32 -> 32 layers' GEMMs in bf16; recorded in the model and the
  # checkpoint (a resumed bf16 run equals the whole one); other precisions are refused.
  B="--data moons --hidden 32,32,32 --batch 64 --steps 30 --warmup 5 --eval-every 0 --final-eval 0
     --checkpoint-every 10 --threads 1"
  # shellcheck disable=SC2086
  ok "30 steps, 1 thread, bf16 GEMMs" train $B -o bf.sif --precision bf16
  ok "train_precision = bf16" info bf.sif
  # shellcheck disable=SC2086
  ok "" train $B -o bf32.sif --precision fp32
  check [ "$(grep -ac train_precision bf32.sif)" = 0 ]
  check differ bf.sif bf32.sif
  # shellcheck disable=SC2086
  ok "stopped (--stop-after) after step 13" train $B -o bfpart.sif --precision bf16 --stop-after 13
  ok "bf16 GEMMs" train --data moons -o bfpart.sif --resume bfpart.sif.ckpt --final-eval 0 \
    --threads 1
  check cmp -s bf.sif bfpart.sif
  fails 2 "--precision cannot be given with --resume" \
    train --data moons -o x.sif --resume bfpart.sif.ckpt --precision bf16
  fails 2 "--precision: train runs fp32 or bf16, not fp16" \
    train --data moons -o x.sif --precision fp16
  fails 2 "--precision: train runs fp32 or bf16, not int8" \
    train --data moons -o x.sif --precision int8
  fails 2 "--precision: unknown precision 'fp8'" train --data moons -o x.sif --precision fp8
  fails 1 "bf16 training runs on the simd kernels" \
    train --data moons -o x.sif --precision bf16 --kernels reference
  printf 'x,y\n1,2\n2,1\n3,5\n4,4\n5,9\n6,7\n7,3\n8,8\n9,6\n10,1\n' >rows.csv
  ok "held-out NLL" train --data rows.csv -o rows.sif --hidden 8 --batch 16 --steps 5 --holdout 0.2 \
    --eval-steps 4 --threads 1
  ok "normalized    yes" info rows.sif
  ok "no held-out rows, so no held-out NLL" train --data rows.csv -o rows0.sif --hidden 8 \
    --batch 16 --steps 5 --holdout 0 --eval-every 2 --threads 1
  ok "the data's own density on the same points" train --data 8gaussians -o g.sif --hidden 8 \
    --batch 32 --steps 3 --holdout-points 50 --eval-steps 2 --threads 1
  ok "(time budget reached)" train --data rings -o budget.sif --hidden 16 --batch 64 \
    --steps 100000000 --time-budget 1 --final-eval 0 --threads 1
  check [ -s budget.sif ] && check [ -s budget.sif.ckpt ]
  fails 2 "--data: 'spiral' is neither a built-in dataset" train --data spiral -o x.sif
  fails 2 "--output: 'x.npy' must name a .sif model file" train --data moons -o x.npy
  fails 2 "--lr cannot be given with --resume" train --data moons -o x.sif --resume whole.sif.ckpt --lr 1
  fails 2 "--interpolant: unknown interpolant 'cubic'" train --data moons -o x.sif --interpolant cubic
  fails 2 "--hidden: 0 is outside" train --data moons -o x.sif --hidden 8,0
  fails 1 "a learned interpolant must sample t uniformly" \
    train --data moons -o x.sif --interpolant learned --time beta
  fails 1 "not a siflow training checkpoint" train --data moons -o x.sif --resume whole.csv
  fails 1 "trained on moons" train --data rings -o x.sif --resume whole.sif.ckpt
  check [ ! -e x.sif ]
  # Every option is checked before any work: nothing is trained or written.
  fails 2 "--final-eval: 'bogus' is not a non-negative integer" \
    train --data moons -o x.sif --hidden 8 --batch 16 --steps 3 --threads 1 --final-eval bogus
  check [ ! -e x.sif ] && check [ ! -e x.sif.ckpt ]
  # No output may be an input or another output.
  cp rows.csv rows_keep.csv
  fails 2 "--log 'rows.csv' is the input --data 'rows.csv'" \
    train --data rows.csv -o x.sif --steps 2 --log rows.csv
  fails 2 "--checkpoint './rows.csv' is the input --data 'rows.csv'" \
    train --data rows.csv -o x.sif --steps 2 --checkpoint ./rows.csv
  check cmp -s rows.csv rows_keep.csv
  fails 2 "--output 'm.sif' and --checkpoint 'm.sif' name the same file" \
    train --data moons -o m.sif --steps 2 --checkpoint m.sif
  fails 2 "--log 'whole.csv' is the input --resume 'whole.csv'" \
    train --data moons -o x.sif --resume whole.csv --log whole.csv
  # A killed run's checkpoint temporary is removed by the next run writing there.
  dead=$(bash -c 'echo $$')
  touch "k.sif.ckpt.siflow-tmp-$dead-Abc123"
  ok "" train --data moons -o k.sif --hidden 8 --batch 16 --steps 2 --threads 1 --final-eval 0
  check [ ! -e "k.sif.ckpt.siflow-tmp-$dead-Abc123" ]
  # A stop signal ends a held-out evaluation (periodic or final) within a second, with the
  # exit status of an interrupted run (130). The evaluations here would run for minutes.
  for phase in periodic final; do
    if [ $phase = periodic ]; then E="--eval-every 1 --steps 5"; else E="--eval-every 0 --steps 1"; fi
    # shellcheck disable=SC2086
    "${EMULATOR[@]}" "$SIFLOW" train --data moons -o sig.sif --hidden 64,64 --batch 16 --holdout-points 20000 \
      --eval-points 20000 --eval-steps 1000 --threads 1 $E >out.txt 2>err.txt &
    pid=$!
    sleep 3 # past the first step: inside the evaluation
    start=$(date +%s%N)
    kill -INT $pid
    for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    stopped_ms=$((($(date +%s%N) - start) / 1000000))
    kill -KILL $pid 2>/dev/null
    wait $pid
    rc=$?
    checks=$((checks + 1))
    if [ "$rc" -ne 130 ] || [ "$stopped_ms" -gt 1000 ] || ! grep -q "stopped (interrupted)" err.txt; then
      fail "SIGINT during the $phase evaluation: exit $rc after $stopped_ms ms (expected 130 within 1000 ms)"
      sed 's/^/  | /' err.txt
    fi
    echo "note: SIGINT during the $phase evaluation stopped the run in $stopped_ms ms"
  done
  check [ -s sig.sif.ckpt ]
fi

# --- few-step sampling: multistep methods, grid kinds, dopri5, stored solvers ------------------
ok "ab3, 8 steps on the power:2 grid, NFE 10" sample $M -n 50 -o fs1.npy --method ab3 --steps 8 --grid-kind power:2
ok "NFE 200" sample $M -n 50 -o fs2.npy
ok "ab4, 12 steps, exact divergence, NFE 21" logprob $M -i fs2.npy -o fsl.npy --method ab4 --steps 12
ok "NFE 8" encode $M -i fs2.npy -o fse.npy --method ab2 --steps 8 --grid-kind cosine
ok "dopri5, adaptive, rtol 1e-07" decode $M -i fse.npy -o fsd.npy --method dopri5 --rtol 1e-7 --atol 1e-7
fails 2 "--grid-kind and --grid are mutually exclusive" sample $M -n 5 -o o.npy --grid-kind cosine --grid fs3.csv
fails 2 "--steps does not apply to --method dopri5" sample $M -n 5 -o o.npy --method dopri5 --steps 4
fails 2 "--rtol applies only with --method dopri5" sample $M -n 5 -o o.npy --rtol 1e-3
fails 2 "--grid-kind: power needs a parameter (power:R)" sample $M -n 5 -o o.npy --grid-kind power
fails 2 "--grid-kind: unknown grid kind 'log'" sample $M -n 5 -o o.npy --grid-kind log
fails 2 "--grid-kind: parameter 0 is outside" sample $M -n 5 -o o.npy --grid-kind shift:0
fails 1 "the SDE runs one-step methods on a fixed grid; ab2 is a multistep method" sample $M -n 5 -o o.npy --method ab2 --sde 0.5
fails 1 "max_steps = 3" sample $M -n 5 -o o.npy --method dopri5 --max-steps 3 --rtol 1e-12 --atol 1e-12
ok "method        " tune-solver $M --nfe 6 -o tuned.sif --sweeps 2
check grep -qE "NFE [1-6] " out.txt  # at most the NFE asked for
ok "tuned-6      " info tuned.sif
ok "format        1.2" info tuned.sif
ok "solvers       1 stored" validate tuned.sif
ok "stored solver 'tuned-6', NFE " sample tuned.sif -n 20 -o fs4.npy --solver tuned-6
ok "solver        mine" tune-solver tuned.sif --nfe 6 -o tuned2.sif --sweeps 1 --name mine
ok "solvers       2 stored" info tuned2.sif
fails 2 "--solver and --method are mutually exclusive" sample tuned.sif -n 5 -o o.npy --solver tuned-6 --method rk4
fails 1 "no solver named 'nope'" sample tuned.sif -n 5 -o o.npy --solver nope
fails 2 "must name a .sif model file" tune-solver $M --nfe 6 -o tuned.npy
fails 2 "--name: 'a b' holds ' '" tune-solver $M --nfe 6 -o t3.sif --name "a b"
# tune-solver is deterministic for a seed.
ok "" tune-solver $M --nfe 6 -o tuned3.sif --sweeps 2
check cmp -s tuned.sif tuned3.sif
# Per-step coefficients: at 3 NFE on this model the fit keeps ab2 (3 steps) with a learned
# combination on steps 1 and 2 (4 coefficients); info lists them, validate re-runs the test vector
# with them, sample --solver uses them, the fit is deterministic, and a corrupted one is refused.
ok "coefficients  4 per-step" tune-solver $M --nfe 3 -o tc.sif --sweeps 2
ok "ab2, 3 steps, NFE 3, sample error " info tc.sif
check grep -q "4 per-step coefficients" out.txt
ok "format        1.2" info tc.sif
ok "solvers       1 stored" validate tc.sif
check grep -q "ok$" out.txt
ok "stored solver 'tuned-3', NFE 3" sample tc.sif -n 20 -o tc.npy --solver tuned-3
ok "" tune-solver $M --nfe 3 -o tc2.sif --sweeps 2
check cmp -s tc.sif tc2.sif
ok "coefficients  none (--coefficients none)" tune-solver $M --nfe 3 -o tc3.sif --sweeps 2 --coefficients none
ok "coefficients  4 per-step (2 fitted, after the grid" tune-solver $M --nfe 3 -o tc4.sif --sweeps 2 --coefficients after-grid
fails 2 "--coefficients: 'x' is not none, after-grid or joint" tune-solver $M --nfe 3 -o x.sif --coefficients x
fails 2 "--draws: 8 is outside" tune-solver $M --nfe 3 -o x.sif --draws 8
# The stored coefficients (the one vector of 4 doubles whose pairs sum to 1) with a NaN.
if [ -x "$PY" ]; then
"$PY" - tc.sif tc_nan.sif <<'PYEOF'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
hits = []
for off in range(0, len(data) - 36, 8):
    if struct.unpack_from("<I", data, off + 4)[0] != 4:
        continue
    c = struct.unpack_from("<4d", data, off + 8)
    if all(abs(v) <= 64 for v in c) and abs(c[0] + c[1] - 1) < 1e-9 and abs(c[2] + c[3] - 1) < 1e-9:
        hits.append(off + 8)
assert len(hits) == 1, hits
struct.pack_into("<d", data, hits[0], float("nan"))
open(sys.argv[2], "wb").write(data)
PYEOF
check [ -s tc_nan.sif ]
fails 1 "solver 'tuned-3': coefficient 0 of step 1 is not finite" info tc_nan.sif
else
  echo "note: /usr/bin/python3 not found; the corrupted-coefficient check did not run"
fi
# --- conditioning and guidance --------------------------------------------------------------
L=labels.sif # class labels 0..2, null label 2; test vectors with labels under guidance 2
C=cond.sif   # a condition vector of width 2 with a stored null vector
ok "labels        3 classes (0 to 2), null label 2 (guidance possible)" info $L
check grep -qE "node 4 +label_input +1 " out.txt
check grep -qE "node 5 +embedding +2 " out.txt
ok "condition     width 2, null vector stored (guidance possible)" info $C
ok "velocity      6 points" validate $L
check grep -q "^velocity      6 points: .* ok$" out.txt
ok "Usage: siflow sample" help sample
for want in "--label K" "--labels FILE" "--cond FILE" "--guidance W" "--temperature T"; do
  check grep -qF -- "$want" out.txt
done
ok "--guidance W" help logprob
fails 1 "sample: this model takes a class label (0 to 2, or its null label" sample $L -n 4 -o x.npy
fails 1 "--label: this model takes no class label" sample $M -n 4 --label 1 -o x.npy
fails 2 "--label: 3 is outside [0, 2]" sample $L -n 4 --label 3 -o x.npy
fails 2 "--label and --labels are mutually exclusive" sample $L -n 4 --label 1 --labels y.csv -o x.npy
ok "label 1" sample $L -n 6 --label 1 --seed 2 -o l1.csv
printf 'y\n1\n1\n1\n1\n1\n1\n' >y1.csv
ok "labels from y1.csv" sample $L -n 6 --labels y1.csv --seed 2 -o l1b.csv
check cmp -s l1.csv l1b.csv
I1='\x01\x00\x00\x00\x00\x00\x00\x00' # int64 1
npy yi.npy "{'descr': '<i8', 'fortran_order': False, 'shape': (6,), }" "$I1$I1$I1$I1$I1$I1"
ok "" sample $L -n 6 --labels yi.npy --seed 2 -o l1c.csv
check cmp -s l1.csv l1c.csv
npy yi4.npy "{'descr': '<i4', 'fortran_order': False, 'shape': (6,), }" \
  '\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00'
ok "" sample $L -n 6 --labels yi4.npy --seed 2 -o l1d.csv
check cmp -s l1.csv l1d.csv
ok "" sample $L -n 6 --label 0 --seed 2 -o l0.csv
check differ l0.csv l1.csv # the label changes the samples: the comparisons above can fail
printf '0\n1\n' >y2.csv
fails 1 "--labels: 'y2.csv' holds 2 labels, but the request has 6 rows" sample $L -n 6 --labels y2.csv -o x.csv
printf '0\n1.5\n2\n' >yf.csv
fails 1 "--labels: 'yf.csv' row 2 holds 1.5, not a class label in [0, 3)" velocity $L -i s3.csv -t 0.5 --labels yf.csv -o x.csv
printf '0\n3\n2\n' >yr.csv
fails 1 "row 2 holds 3, not a class label" velocity $L -i s3.csv -t 0.5 --labels yr.csv -o x.csv
# Guidance: w = 0 is the null label, w = 1 the label; the guided velocity is v0 + w (v1 - v0).
ok "" sample $L -n 6 --label 2 --seed 2 -o l2.csv
ok "guidance 0" sample $L -n 6 --label 1 --guidance 0 --seed 2 -o g0.csv
check cmp -s g0.csv l2.csv
ok "" sample $L -n 6 --label 1 --guidance 1 --seed 2 -o g1.csv
check cmp -s g1.csv l1.csv
ok "guidance 2.5" sample $L -n 6 --label 1 --guidance 2.5 --seed 2 -o g25.csv
check differ g25.csv l1.csv
ok "" velocity $L -i s.csv -t 0.5 --label 1 -o v1.csv
ok "" velocity $L -i s.csv -t 0.5 --label 2 -o v0.csv
ok "" velocity $L -i s.csv -t 0.5 --label 1 --guidance 2.5 -o vg.csv
paste -d, v0.csv v1.csv | awk -F, 'NR == 1 { print "x0,x1"; next }
  { printf "%.9g,%.9g\n", $1 + 2.5 * ($3 - $1), $2 + 2.5 * ($4 - $2) }' >vg_ref.csv
check close vg.csv vg_ref.csv 1e-5
fails 1 "this model takes no class label or condition" velocity $M -i s.csv -t 0.5 --guidance 2 -o x.csv
fails 2 "--sde with --guidance other than 1" sample $L -n 4 --label 1 --guidance 2 --sde 0.5 -o x.npy
ok "" sample $L -n 4 --label 1 --sde 0.5 -o x.npy
fails 2 "--guidance: 'lots' is not a finite number" sample $L -n 4 --label 1 --guidance lots -o x.npy
# Likelihoods under guidance are the guided ODE's; decode with --logprob-out agrees with logprob.
ok "guidance 2" logprob $L -i g25.csv --label 1 --guidance 2 -o lpg.csv
ok "" decode $L -i s.csv --label 1 --guidance 2 -o dg.csv --logprob-out dgl.csv
ok "" logprob $L -i dg.csv --label 1 --guidance 2 -o dgl2.csv
check close dgl.csv dgl2.csv 1e-3
# Editing: encode with label 1, decode with label 1 gives the points back; with label 0, others.
ok "label 1" encode $L -i l1.csv --label 1 -o z1.csv
ok "" decode $L -i z1.csv --label 1 -o back.csv
check close back.csv l1.csv 1e-3
ok "" decode $L -i z1.csv --label 0 -o edit.csv
check differ edit.csv l1.csv
# Condition vectors.
printf 'c0,c1\n0.5,-1\n1,2\n-0.5,0.25\n' >c3.csv
ok "conditions from c3.csv" sample $C -n 3 --cond c3.csv -o cs.csv
fails 1 "sample: this model takes a condition vector of width 2 per row; none" sample $C -n 3 -o x.csv
fails 1 "--cond: this model takes no condition vector" sample $M -n 3 --cond c3.csv -o x.csv
fails 1 "--cond: 'c3.csv' holds 3 conditions, but the request has 4 rows" sample $C -n 4 --cond c3.csv -o x.csv
ok "" velocity $C -i s3.csv -t 0.5 --cond c3.csv --guidance 2 -o vc.csv
# Temperature scales the base draws.
ok "temperature 0.5" sample $M -n 5 --seed 1 --temperature 0.5 -o t05.csv
check differ t05.csv s.csv
fails 2 "--temperature: T must be positive and finite, not 0" sample $M -n 5 --temperature 0 -o x.csv
fails 2 "--temperature: T must be positive and finite, not -1" sample $M -n 5 --temperature -1 -o x.csv
# tune-solver for a class under a guidance weight: the file records both, info shows them, and
# validate re-runs the solver's test vector with them; the tuned solver samples that class.
ok "tuned for     label 1, guidance 2" tune-solver $L --nfe 6 --label 1 --guidance 2 -o lt.sif --sweeps 1
ok "tuned for label 1, guidance 2" info lt.sif
ok "solvers       1 stored" validate lt.sif
check grep -qE "^solvers       1 stored: .*\(solver 'tuned-6'.* ok$" out.txt
ok "stored solver 'tuned-6'" sample lt.sif -n 6 --label 1 --guidance 2 --seed 2 --solver tuned-6 -o lts.csv
ok "" sample $L -n 6 --label 1 --guidance 2 --seed 2 --method dopri5 -o ltr.csv
check close lts.csv ltr.csv 0.05 # near the converged guided samples (measured: 0.01) ...
ok "" sample $L -n 6 --label 1 --seed 2 --method dopri5 -o ltu.csv
checks=$((checks + 1)) # ... and not near the unguided ones (measured: 0.8 apart)
if close lts.csv ltu.csv 0.2 >/dev/null; then fail "the guided solver's samples are unguided"; fi
ok "" sample lt.sif -n 6 --label 0 --seed 2 --solver tuned-6 -o lts0.csv
check differ lts0.csv lts.csv
# Without guidance the label alone is recorded; guidance 0 tunes the null label's flow.
ok "tuned for     label 0, guidance 1" tune-solver $L --nfe 4 --label 0 -o lt0.sif --sweeps 1
ok "tuned for     label -1, guidance 0" tune-solver $L --nfe 4 --guidance 0 -o ltn.sif --sweeps 1
ok "solvers       1 stored" validate ltn.sif
# Refusals: a label the model does not take, a class model without --label, guidance without a
# null label or on an unconditional model, a condition-vector model.
fails 1 "tune-solver: this model takes a class label: give --label K (0 to 2)" tune-solver $L --nfe 6 -o x.sif
fails 1 "--label: this model takes no class label" tune-solver $M --nfe 6 --label 1 -o x.sif
fails 2 "--label: 3 is outside [0, 2]" tune-solver $L --nfe 6 --label 3 -o x.sif
fails 1 "--guidance: this model takes no class label, so there is nothing to guide" tune-solver $M --nfe 6 --guidance 2 -o x.sif
fails 1 "--guidance: this model has no null label, so guidance weight 2 cannot be run" tune-solver labels_no_null.sif --nfe 6 --label 1 --guidance 2 -o x.sif
ok "tuned for     label 1, guidance 1" tune-solver labels_no_null.sif --nfe 4 --label 1 -o lnn.sif --sweeps 1
fails 1 "tune-solver: this model takes a condition vector per row" tune-solver $C --nfe 6 -o x.sif
check [ ! -e x.sif ]

# --profile: a table of every node (calls = NFE x blocks, here 8 rows in 3-row blocks: 3 blocks
# per evaluation) to a file or standard output; off without it; an unknown option still refused;
# the profile file may not be an input or another output.
ok "" sample $M -n 8 --steps 4 --method euler --block-rows 3 -o prof.csv --profile prof.txt
check grep -q "^# profile: .* 12 calls each (evaluations x blocks)" prof.txt
check grep -qE "^ +0  [a-z_:]+ +[a-z/0-9+]+ +12 +[0-9.]+ +[0-9.]+ +([0-9.]+|-)$" prof.txt
check grep -qE "^#   fully_connected +[a-z/0-9_+]+ +[0-9]+ nodes +[0-9.]+ ms +[0-9.]+ %$" prof.txt
ok "" sample $M -n 8 --steps 4 --method euler --block-rows 3 -o prof2.csv
check cmp -s prof.csv prof2.csv # profiling changes no bits
ok "GFLOP/s" logprob $M -i s.csv -o prof.npy --steps 2 --profile -
check grep -q "^# profile: " out.txt
ok "GFLOP/s" decode $M -i s.csv -o prof3.csv --steps 2 --profile -
run sample $M -n 8 -o prof4.csv
checks=$((checks + 1))
if grep -q "profile" out.txt err.txt; then fail "a run without --profile printed a profile"; fi
fails 2 "unknown option '--profiles'" sample $M -n 8 -o prof4.csv --profiles -
fails 2 "--profile" sample $M -n 8 -o prof5.csv --profile prof5.csv
check [ ! -e prof5.csv ]

# Failed runs leave no output and no temporary files behind.
check [ ! -e o.npy ]
check [ -z "$(find . -name '*.tmp.*')" ]

echo "$checks checks, $failures failures"
[ "$failures" -eq 0 ]
