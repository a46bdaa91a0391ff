# SPDX-License-Identifier: Apache-2.0
# WebAssembly build with Debian's emscripten (emcc 3.1.6; tools/install-deps.sh --wasm): wraps
# emscripten's own toolchain file and makes its test binaries and link steps work with Node >= 18.
# Use: cmake --preset wasm, or -DCMAKE_TOOLCHAIN_FILE=toolchains/wasm-emscripten.cmake.
set(SIFLOW_EMSCRIPTEN_ROOT "$ENV{EMSCRIPTEN}")
if(NOT SIFLOW_EMSCRIPTEN_ROOT AND DEFINED ENV{EMSDK})
  set(SIFLOW_EMSCRIPTEN_ROOT "$ENV{EMSDK}/upstream/emscripten")
endif()
if(NOT SIFLOW_EMSCRIPTEN_ROOT)
  set(SIFLOW_EMSCRIPTEN_ROOT /usr/share/emscripten)  # Debian's emscripten package
endif()
if(NOT EXISTS ${SIFLOW_EMSCRIPTEN_ROOT}/cmake/Modules/Platform/Emscripten.cmake)
  message(FATAL_ERROR "emscripten not found in ${SIFLOW_EMSCRIPTEN_ROOT}: run "
                      "tools/install-deps.sh --wasm (or set EMSCRIPTEN to its directory)")
endif()
# Test binaries run under node. The loader emcc 3.1.6 writes fetches its .wasm with fetch() when
# that exists, which Node >= 18 has but cannot use for file paths; without it the loader reads
# the file.
find_program(SIFLOW_NODE NAMES node nodejs)
if(NOT SIFLOW_NODE)
  message(FATAL_ERROR "node (Debian's nodejs) not found: run tools/install-deps.sh --wasm")
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR ${SIFLOW_NODE};--no-experimental-fetch CACHE STRING
    "Runs the WebAssembly test binaries")
include(${SIFLOW_EMSCRIPTEN_ROOT}/cmake/Modules/Platform/Emscripten.cmake)
# emcc's optimizing link step runs node scripts that need acorn, which Debian installs as a node
# module in /usr/share/nodejs, outside node's default search path (so `cmake --build` works
# without the preset's NODE_PATH too).
if(EXISTS /usr/share/nodejs/acorn)
  set(CMAKE_C_LINKER_LAUNCHER ${CMAKE_COMMAND};-E;env;NODE_PATH=/usr/share/nodejs)
  set(CMAKE_CXX_LINKER_LAUNCHER ${CMAKE_COMMAND};-E;env;NODE_PATH=/usr/share/nodejs)
endif()
