# SPDX-License-Identifier: Apache-2.0
# Cross build for 32-bit ARM Linux (ARMv7-A, NEON, hard float) with Debian's
# g++-arm-linux-gnueabihf; test binaries run under qemu-arm. Use: cmake --preset armv7.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7-a)
set(SIFLOW_TRIPLE arm-linux-gnueabihf)
# NEON for the SIMD kernels; scalar float stays IEEE (GCC does not vectorise float on ARMv7
# without -funsafe-math-optimizations, since NEON flushes denormals).
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfpu=neon -mfloat-abi=hard")
set(CMAKE_CXX_FLAGS_INIT "-march=armv7-a -mfpu=neon -mfloat-abi=hard")
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross-common.cmake)
siflow_cross_setup(qemu-arm)
