#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Size of the minimal runtime (-DSIFLOW_MINIMAL=ON, MinSizeRel: reference backend only, no
# threads, no model writer, no CLI) for x86-64, AArch64, ARMv7 and bare-metal Cortex-M7:
#   - library: text + data of every object in libsiflow.a (`size -t`; .text, .rodata and unwind
#     tables of all the runtime's code, whether a program uses it or not);
#   - embed_c: examples/embed_c linked against it and stripped (`size -A`): its .text (runtime
#     code the program pulls in plus the example itself) and .rodata (constants plus the 21.5 KB
#     embedded model). libc and libstdc++ are shared libraries and not counted, except on
#     Cortex-M, where newlib-nano and libstdc++ are linked in statically (and counted).
#   tools/size_report.sh        needs tools/install-cross-deps.sh for the ARM targets
set -euo pipefail
cd "$(dirname "$0")/.."
printf "%-8s %14s %12s %14s %12s\n" target lib_text+data embed_.text embed_.rodata embed_file
for target in x86-64 aarch64 armv7 cortex-m7; do
  case "$target" in
    cortex-m7) prefix=arm-none-eabi-; toolchain=(-DCMAKE_TOOLCHAIN_FILE=toolchains/cortex-m.cmake) ;;
    x86-64) prefix=""; toolchain=() ;;
    aarch64) prefix=aarch64-linux-gnu-; toolchain=(-DCMAKE_TOOLCHAIN_FILE=toolchains/aarch64-linux-gnu.cmake) ;;
    armv7) prefix=arm-linux-gnueabihf-; toolchain=(-DCMAKE_TOOLCHAIN_FILE=toolchains/arm-linux-gnueabihf.cmake) ;;
  esac
  dir=build-size-$target
  cmake -S . -B "$dir" --no-warn-unused-cli "${toolchain[@]}" -DSIFLOW_MINIMAL=ON \
    -DCMAKE_BUILD_TYPE=MinSizeRel >/dev/null
  cmake --build "$dir" -j"$(nproc)" >/dev/null
  lib=$("${prefix}size" -t "$dir/runtime/libsiflow.a" | tail -1 | awk '{print $1 + $2}')
  stripped=$(mktemp)
  "${prefix}strip" -o "$stripped" "$dir/examples/embed_c/embed_c"
  text=$("${prefix}size" -A "$stripped" | awk '$1 == ".text" {print $2}')
  rodata=$("${prefix}size" -A "$stripped" | awk '$1 == ".rodata" {print $2}')
  file=$(stat -c %s "$stripped")
  rm -f "$stripped"
  printf "%-8s %14s %12s %14s %12s\n" "$target" "$lib" "$text" "$rodata" "$file"
done
