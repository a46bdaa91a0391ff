#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs this build into a scratch prefix under the build tree and proves the install tree
# works on its own: headers self-contained, find_package(siflow) consumer (C++ and C) and a
# pkg-config consumer (c++ and cc) build and run, also after the tree is moved. Fails loudly.
#
# usage: check_install.sh CMAKE BUILD_DIR CONSUMER_SRC WORK_DIR CC CXX CONFIG LIBDIR INCLUDEDIR
#                         BINDIR WITH_CLI(ON|OFF)
# In a cross build SIFLOW_TEST_EMULATOR names the emulator command (words separated by spaces)
# that runs the programs built here for the target. In a sanitizer build SIFLOW_TEST_CFLAGS holds
# the -fsanitize flags the consumers must be compiled and linked with, as the library was.
set -euo pipefail

if [ $# -ne 11 ]; then
  echo "usage: $0 CMAKE BUILD_DIR CONSUMER_SRC WORK_DIR CC CXX CONFIG LIBDIR INCLUDEDIR" \
    "BINDIR WITH_CLI" >&2
  exit 2
fi
cmake=$1 build=$2 consumer=$3 work=$4 cc=$5 cxx=$6 config=$7 libdir=$8 includedir=$9
bindir=${10} with_cli=${11}
# shellcheck disable=SC2206  # the emulator command is meant to split into words
emulator=(${SIFLOW_TEST_EMULATOR:-})
# shellcheck disable=SC2206  # the flags are meant to split into words
cflags=(${SIFLOW_TEST_CFLAGS:-})

step() { echo "== check_install: $*"; }
fail() {
  echo "check_install: FAIL: $*" >&2
  exit 1
}
# run LOG CMD...: runs CMD with output in LOG; on failure prints the log and fails.
run() {
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "command failed: $*"
  fi
}

case "$work" in
  */install-check*) ;;
  *) fail "refusing to use work dir '$work' (must end in install-check*)" ;;
esac
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

step "cmake --install $build --prefix $prefix"
run "$work/install.log" "$cmake" --install "$build" --prefix "$prefix" --config "$config"
for f in "$includedir/siflow/siflow.h" "$includedir/siflow/siflow.hpp" \
  "$includedir/siflow/model_builder.hpp" "$libdir/libsiflow.a" \
  "$libdir/cmake/siflow/siflowConfig.cmake" "$libdir/cmake/siflow/siflowConfigVersion.cmake" \
  "$libdir/cmake/siflow/siflowTargets.cmake" "$libdir/pkgconfig/siflow.pc" \
  share/siflow/siflow.fbs; do
  [ -f "$prefix/$f" ] || fail "install tree lacks $f"
done
# Nothing internal may leak into the install tree (generated schema header, src/ headers).
if find "$prefix" -name 'siflow_generated.h' -o -name 'model_data.hpp' | grep -q .; then
  fail "install tree contains internal headers"
fi

step "installed headers are self-contained"
for h in siflow.hpp model_builder.hpp siflow.h; do
  echo "#include <siflow/$h>" >"$work/header_$h.cc"
  run "$work/header_$h.log" "$cxx" -std=c++17 -Wall -Wextra -Werror -pedantic -fsyntax-only \
    -I"$prefix/$includedir" "$work/header_$h.cc"
done
echo "#include <siflow/siflow.h>" >"$work/header_c.c"
run "$work/header_c.log" "$cc" -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only \
  -I"$prefix/$includedir" "$work/header_c.c"

step "find_package(siflow) consumer"
run "$work/consumer-configure.log" "$cmake" -S "$consumer" -B "$work/cmake-build" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_C_FLAGS="${SIFLOW_TEST_CFLAGS:-}" -DCMAKE_CXX_FLAGS="${SIFLOW_TEST_CFLAGS:-}" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
found=$(sed -n 's/^siflow_DIR:PATH=//p' "$work/cmake-build/CMakeCache.txt")
[ "$found" = "$prefix/$libdir/cmake/siflow" ] ||
  fail "find_package found siflow at '$found', not in the install tree"
run "$work/consumer-build.log" "$cmake" --build "$work/cmake-build"
run "$work/cmake-app.out" "${emulator[@]}" "$work/cmake-build/app" "$work/tiny.sif"
cat "$work/cmake-app.out"
grep -q "consumer ok" "$work/cmake-app.out" || fail "cmake-built app did not report ok"
[ "$(grep -c '^sample ' "$work/cmake-app.out")" = 4 ] || fail "cmake-built app did not print 4 samples"
[ -s "$work/tiny.sif" ] || fail "cmake-built app did not write the model file"
run "$work/cmake-capp.out" "${emulator[@]}" "$work/cmake-build/capp" "$work/tiny.sif"
cat "$work/cmake-capp.out"
grep -q "c consumer ok" "$work/cmake-capp.out" || fail "cmake-built C app did not report ok"

case "$with_cli" in
  ON | on | TRUE | true | 1)
    step "installed CLI runs"
    [ -x "$prefix/$bindir/siflow" ] || fail "install tree lacks $bindir/siflow"
    run "$work/cli-info.out" "${emulator[@]}" "$prefix/$bindir/siflow" info "$work/tiny.sif"
    cat "$work/cli-info.out"
    ;;
  *) [ ! -e "$prefix/$bindir/siflow" ] || fail "CLI installed although SIFLOW_BUILD_CLI is off" ;;
esac

# pkg_consumer PREFIX TAG: builds and runs both consumers with pkg-config against PREFIX.
pkg_consumer() {
  local pfx=$1 tag=$2
  export PKG_CONFIG_PATH="$pfx/$libdir/pkgconfig"
  pkg-config --exists siflow || fail "pkg-config cannot find siflow in $PKG_CONFIG_PATH"
  local inc
  inc=$(pkg-config --variable=includedir siflow)
  [ "$(realpath "$inc")" = "$(realpath "$pfx/$includedir")" ] ||
    fail "siflow.pc names includedir '$inc', not '$pfx/$includedir'"
  local flags
  flags=$(pkg-config --cflags --libs siflow)
  echo "pkg-config --cflags --libs siflow: $flags"
  # shellcheck disable=SC2086  # the flags are meant to split
  run "$work/pc-$tag-app-build.log" "$cxx" "${cflags[@]}" -std=c++17 -Wall -Wextra \
    -o "$work/pc-$tag-app" "$consumer/main.cc" $flags
  run "$work/pc-$tag-app.out" "${emulator[@]}" "$work/pc-$tag-app"
  cat "$work/pc-$tag-app.out"
  grep -q "consumer ok" "$work/pc-$tag-app.out" || fail "pkg-config ($tag) app did not report ok"
  # The same samples as the CMake-built app: same library, same seed.
  cmp -s <(grep '^sample ' "$work/pc-$tag-app.out") <(grep '^sample ' "$work/cmake-app.out") ||
    fail "pkg-config ($tag) app and CMake app print different samples"
  # A C program linked by the C driver: needs -lstdc++ from Libs.
  # shellcheck disable=SC2086
  run "$work/pc-$tag-capp-build.log" "$cc" "${cflags[@]}" -std=c99 -Wall -Wextra -Werror -pedantic \
    -o "$work/pc-$tag-capp" "$consumer/c_main.c" $flags
  run "$work/pc-$tag-capp.out" "${emulator[@]}" "$work/pc-$tag-capp" "$work/tiny.sif"
  cat "$work/pc-$tag-capp.out"
  grep -q "c consumer ok" "$work/pc-$tag-capp.out" || fail "pkg-config ($tag) C app did not report ok"
  cmp -s <(grep '^sample ' "$work/pc-$tag-capp.out") <(grep '^sample ' "$work/cmake-capp.out") ||
    fail "pkg-config ($tag) C app and CMake C app print different samples"
  unset PKG_CONFIG_PATH
}

command -v pkg-config >/dev/null || fail "pkg-config is not installed"
step "pkg-config consumer"
pkg_consumer "$prefix" installed

step "pkg-config consumer after moving the install tree"
mv "$prefix" "$work/moved"
pkg_consumer "$work/moved" moved

step "all install checks passed"
