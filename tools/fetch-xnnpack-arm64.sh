#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Unpacks Debian's arm64 builds of XNNPACK and its dependencies (pthreadpool, cpuinfo) into a
# sysroot folder for the aarch64 cross build, without installing them: installing arm64 -dev
# packages through multiarch would remove the host's own versions. Adds the arm64 architecture
# to apt (never armhf: the ARMv7 build uses the reference and NEON kernels only) and downloads
# the .debs with retries.
#   tools/fetch-xnnpack-arm64.sh [SYSROOT]     default: third_party/sysroot-aarch64 (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
sysroot="${1:-third_party/sysroot-aarch64}"
packages=(libxnnpack0 libxnnpack-dev libpthreadpool0 libpthreadpool-dev libcpuinfo0 libcpuinfo-dev)
if [ -f "$sysroot/.complete" ]; then
  echo "fetch-xnnpack-arm64: $sysroot is already complete"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $sudo dpkg --add-architecture arm64
fi
debs=$(mktemp -d)
chmod 755 "$debs"  # apt downloads as its own unprivileged user
trap 'rm -rf "$debs"' EXIT
for attempt in 1 2 3; do
  if $sudo apt-get update -q &&
     (cd "$debs" && apt-get download "${packages[@]/%/:arm64}"); then
    break
  fi
  [ "$attempt" = 3 ] && { echo "fetch-xnnpack-arm64: apt-get download failed" >&2; exit 1; }
  echo "apt-get failed (attempt $attempt), retrying" >&2
  sleep 5
done
rm -rf "$sysroot.tmp"
mkdir -p "$sysroot.tmp"
for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot.tmp"; done
touch "$sysroot.tmp/.complete"
rm -rf "$sysroot"
mv "$sysroot.tmp" "$sysroot"
echo "fetch-xnnpack-arm64: unpacked ${packages[*]} (arm64) into $sysroot"
ls "$sysroot"/usr/lib/aarch64-linux-gnu/ | grep -E "XNNPACK|xnnpack|pthreadpool|cpuinfo" || true
