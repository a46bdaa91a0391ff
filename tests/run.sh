#!/usr/bin/env bash
# The whole test suite: installs the Debian packages it needs, builds everything (runtime, CLI,
# examples, tests) in build/, and runs ctest. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh --test
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSIFLOW_BUILD_TESTS=ON -DSIFLOW_BUILD_CLI=ON \
  -DSIFLOW_BUILD_EXAMPLES=ON
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
