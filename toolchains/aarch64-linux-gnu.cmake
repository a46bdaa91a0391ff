# SPDX-License-Identifier: Apache-2.0
# Cross build for 64-bit ARM Linux (AArch64) with Debian's g++-aarch64-linux-gnu; test binaries
# run under qemu-user (Debian's qemu-user) through CMAKE_CROSSCOMPILING_EMULATOR, so ctest works
# on an x86-64 host. Use: cmake --preset aarch64, or -DCMAKE_TOOLCHAIN_FILE=toolchains/this.cmake.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(SIFLOW_TRIPLE aarch64-linux-gnu)
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross-common.cmake)
siflow_cross_setup(qemu-aarch64)
