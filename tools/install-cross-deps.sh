#!/usr/bin/env bash
# Installs what the ARM cross builds need, when any is missing: Debian's cross compilers for
# AArch64 and ARMv7 (hard float), qemu-user to run their test binaries, and the bare-metal
# arm-none-eabi toolchain with newlib and its C++ library for the Cortex-M build. Uses sudo when not root. Never
# downloads anything but Debian packages.
set -euo pipefail
packages=(g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user gcc-arm-none-eabi
          libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib libstdc++-arm-none-eabi-dev)
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
