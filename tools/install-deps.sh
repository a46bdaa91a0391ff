#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages siflow needs, when any is missing. Uses sudo when not root.
# Never downloads anything but Debian packages.
#   tools/install-deps.sh          build the runtime (with threads and the xnnpack backend) and
#                                  CLI, plot samples
#   tools/install-deps.sh --test   also what the full test suite needs: the converter's ONNX,
#                                  PyTorch and pytest, scikit-learn (the digits data), clang and
#                                  its sanitizer and libFuzzer runtimes
#   tools/install-deps.sh --cross  only the ARM cross toolchains (tools/install-cross-deps.sh)
#   tools/install-deps.sh --wasm   also the WebAssembly build (preset wasm): emscripten, node,
#                                  chromium for its browser test
# --test and --wasm combine.
set -euo pipefail
packages=(cmake make g++ pkg-config libflatbuffers-dev flatbuffers-compiler doctest-dev
          libpthreadpool-dev libxnnpack-dev python3-numpy python3-matplotlib)
for option in "$@"; do
  case "$option" in
    --test) packages+=(python3-onnx python3-flatbuffers python3-torch python3-sklearn
                     python3-pytest python3-venv python3-setuptools clang
                     libclang-rt-14-dev) ;;
    --wasm) packages+=(emscripten nodejs chromium) ;;
    --cross) packages=(g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user qemu-system-arm
                       gcc-arm-none-eabi
                       libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib
                       libstdc++-arm-none-eabi-dev) ;;
    *) echo "install-deps.sh: unknown option '$option' (expected --test, --wasm, --cross or" \
            "nothing)" >&2
       exit 2 ;;
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
for attempt in 1 2 3; do
  if $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    exit 0
  fi
  echo "apt-get failed (attempt $attempt), retrying" >&2
  sleep 5
done
exit 1
