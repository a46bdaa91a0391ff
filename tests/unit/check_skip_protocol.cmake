# SPDX-License-Identifier: Apache-2.0
# Runs test_skip_protocol (BINARY, under EMULATOR in a cross build) with doctest filters and
# checks the exit codes of the test main: 77 and a SKIPPED line naming the reason when every
# selected case was skipped, 0 when one ran, non-zero (never 77) on a failure or no selection.
# Usage: cmake -DBINARY=... [-DEMULATOR=PROGRAM|ARG|...] -P check_skip_protocol.cmake
string(REPLACE "|" ";" EMULATOR "${EMULATOR}")
function(expect code pattern)
  execute_process(COMMAND ${EMULATOR} ${BINARY} ${ARGN} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${ARGN}: exit ${rc}")
  if(code STREQUAL "nonzero-not-77")
    set(ok FALSE)
    if(NOT rc EQUAL 0 AND NOT rc EQUAL 77)
      set(ok TRUE)
    endif()
  elseif(rc EQUAL code)
    set(ok TRUE)
  else()
    set(ok FALSE)
  endif()
  if(NOT ok)
    message(FATAL_ERROR "test_skip_protocol ${ARGN}: exit ${rc}, expected ${code}\n${out}${err}")
  endif()
  if(NOT "${out}${err}" MATCHES "${pattern}")
    message(FATAL_ERROR "test_skip_protocol ${ARGN}: output lacks '${pattern}'\n${out}${err}")
  endif()
endfunction()

expect(77 "SKIPPED: \"a case this build cannot run\": the reason it cannot run"
       --test-suite=needs_nothing)
expect(0 "1 passed" --test-suite=plain)
# A ctest entry's main part: the skipped case is filtered out, not counted as a skip.
expect(0 "1 passed" --test-suite-exclude=needs_*,failing)
expect(nonzero-not-77 "1 failed" --test-suite=failing)
expect(nonzero-not-77 "1 failed" --test-suite=failing,needs_nothing)
expect(nonzero-not-77 "no test case matches the filters" --test-suite=no_such_suite)
