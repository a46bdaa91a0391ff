#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what the ARM cross builds need, when any is missing: Debian's cross compilers for
# AArch64 and ARMv7 (hard float), qemu-user to run their test binaries, the bare-metal
# arm-none-eabi toolchain with newlib and its C++ library for the Cortex-M build, and
# qemu-system-arm to run that image. Uses sudo when
# not root; never downloads anything but Debian packages.
exec "$(dirname "$0")/install-deps.sh" --cross
