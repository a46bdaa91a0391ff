# SPDX-License-Identifier: Apache-2.0
# Bare-metal Arm Cortex-M build of the minimal runtime (cmake --preset cortex-m) with Debian's
# gcc-arm-none-eabi and newlib (libnewlib-arm-none-eabi). Default CPU: Cortex-M7 with the
# double-precision FPv5 FPU; -DSIFLOW_CORTEX_M=m4 selects a Cortex-M4F (single-precision FPU:
# the runtime's double arithmetic is then done in software). No OS: programs link newlib's
# nosys stubs. Static library and a link check only; nothing runs in CI.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
find_program(SIFLOW_M_CXX arm-none-eabi-g++)
find_program(SIFLOW_M_CC arm-none-eabi-gcc)
if(NOT SIFLOW_M_CXX OR NOT SIFLOW_M_CC OR NOT EXISTS /usr/lib/arm-none-eabi/newlib)
  message(FATAL_ERROR "The Cortex-M build needs Debian's gcc-arm-none-eabi and "
                      "libnewlib-arm-none-eabi: run tools/install-cross-deps.sh")
endif()
set(CMAKE_C_COMPILER ${SIFLOW_M_CC})
set(CMAKE_CXX_COMPILER ${SIFLOW_M_CXX})
set(SIFLOW_CORTEX_M m7 CACHE STRING "Cortex-M variant: m7 (FPv5 double) or m4 (FPv4 single)")
if(SIFLOW_CORTEX_M STREQUAL "m4")
  set(cpu "-mcpu=cortex-m4 -mfpu=fpv4-sp-d16")
else()
  set(cpu "-mcpu=cortex-m7 -mfpu=fpv5-d16")
endif()
set(CMAKE_C_FLAGS_INIT "${cpu} -mfloat-abi=hard -mthumb -ffunction-sections -fdata-sections")
set(CMAKE_CXX_FLAGS_INIT "${cpu} -mfloat-abi=hard -mthumb -ffunction-sections -fdata-sections")
# The system-call layer is each executable's choice (examples/embed_c): nosys stubs, or
# semihosting (rdimon) for QEMU.
set(CMAKE_EXE_LINKER_FLAGS_INIT "--specs=nano.specs -Wl,--gc-sections")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
