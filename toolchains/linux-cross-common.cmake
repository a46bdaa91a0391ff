# SPDX-License-Identifier: Apache-2.0
# Shared part of the Linux cross toolchain files: Debian's cross compilers for SIFLOW_TRIPLE,
# their sysroot, and qemu-user as the emulator for test binaries. FlatBuffers and doctest are
# header-only here and architecture-independent, so the host's packages serve; flatc runs on
# the host.
function(siflow_cross_setup qemu)
  set(sysroot /usr/${SIFLOW_TRIPLE})
  find_program(SIFLOW_CROSS_CXX ${SIFLOW_TRIPLE}-g++)
  find_program(SIFLOW_CROSS_CC ${SIFLOW_TRIPLE}-gcc)
  find_program(SIFLOW_QEMU ${qemu})
  if(NOT SIFLOW_CROSS_CXX OR NOT SIFLOW_CROSS_CC OR NOT SIFLOW_QEMU OR NOT EXISTS ${sysroot})
    message(FATAL_ERROR "The ${SIFLOW_TRIPLE} cross build needs Debian's cross compiler and "
                        "qemu-user: run tools/install-cross-deps.sh")
  endif()
  set(CMAKE_C_COMPILER ${SIFLOW_CROSS_CC} PARENT_SCOPE)
  set(CMAKE_CXX_COMPILER ${SIFLOW_CROSS_CXX} PARENT_SCOPE)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${SIFLOW_QEMU};-L;${sysroot} PARENT_SCOPE)
  set(CMAKE_FIND_ROOT_PATH ${sysroot} PARENT_SCOPE)
endfunction()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
