# SPDX-License-Identifier: Apache-2.0
# cmake -DNM=nm -DLIBRARY=libsiflow_c.so -DEXPECTED=libsiflow.symbols -P check_symbols.cmake
# Lists the dynamic symbols a shared library defines and exports (functions and data) and fails,
# printing both sides of the difference, when they differ from the committed list.
execute_process(COMMAND ${NM} -D --defined-only ${LIBRARY}
                OUTPUT_VARIABLE nm_output RESULT_VARIABLE nm_result)
if(NOT nm_result EQUAL 0)
  message(FATAL_ERROR "${NM} -D failed on ${LIBRARY}")
endif()
string(REPLACE "\n" ";" lines "${nm_output}")
set(actual "")
foreach(line ${lines})
  # "ADDRESS TYPE NAME[@@VERSION]": keep exported code and data, not the version node itself.
  if(line MATCHES "^[0-9a-fA-F]+ [TDRBW] ([^ @]+)")
    list(APPEND actual ${CMAKE_MATCH_1})
  endif()
endforeach()
list(SORT actual)
file(STRINGS ${EXPECTED} expected REGEX "^[^#]")
list(SORT expected)
set(missing ${expected})
list(REMOVE_ITEM missing ${actual})
set(extra ${actual})
list(REMOVE_ITEM extra ${expected})
if(missing OR extra)
  string(REPLACE ";" "\n  " missing_text "${missing}")
  string(REPLACE ";" "\n  " extra_text "${extra}")
  message(FATAL_ERROR "the exported ABI of ${LIBRARY} changed.\n"
    "exported but not in ${EXPECTED}:\n  ${extra_text}\n"
    "in ${EXPECTED} but no longer exported:\n  ${missing_text}\n"
    "If the change is deliberate, update the list (and the version in siflow.h if an existing "
    "symbol was removed or changed).")
endif()
list(LENGTH actual count)
message(STATUS "${count} exported symbols match ${EXPECTED}")
