# SPDX-License-Identifier: Apache-2.0
# cmake -DROOT=<source dir> -P check_spdx.cmake
# Fails when a source file or script of the project lacks the line
# "SPDX-License-Identifier: Apache-2.0" within its first three lines (after a shebang).
# Build trees, output folders and node_modules are skipped; data files (.sif, .npy, .npz, .bin,
# JSON) cannot carry comments and are not sources.
set(patterns *.cc *.hpp *.c *.h *.inc *.fbs *.mjs *.js *.py *.sh *.cmake *.in *.ld *.map
    *.symbols *.toml CMakeLists.txt)
set(globs)
foreach(p IN LISTS patterns)
  list(APPEND globs "${ROOT}/${p}")
endforeach()
file(GLOB_RECURSE files LIST_DIRECTORIES false RELATIVE "${ROOT}" ${globs})
# Scripts without an extension.
list(APPEND files .ci/run converter/siflow-convert)
set(missing)
set(count 0)
foreach(f IN LISTS files)
  if(f MATCHES "^(build[^/]*|out|\\.git|node_modules)/" OR f MATCHES "/(node_modules|__pycache__)/"
     OR f MATCHES "^bench/node_modules/")
    continue()
  endif()
  if(NOT EXISTS "${ROOT}/${f}")
    list(APPEND missing "${f} (file not found)")
    continue()
  endif()
  file(STRINGS "${ROOT}/${f}" head LIMIT_COUNT 3)
  math(EXPR count "${count} + 1")
  string(FIND "${head}" "SPDX-License-Identifier: Apache-2.0" at)
  if(at EQUAL -1)
    list(APPEND missing "${f}")
  endif()
endforeach()
if(missing)
  list(JOIN missing "\n  " text)
  message(FATAL_ERROR "source files without an SPDX-License-Identifier line in their first three lines:\n  ${text}")
endif()
message(STATUS "${count} source files carry SPDX-License-Identifier: Apache-2.0")
