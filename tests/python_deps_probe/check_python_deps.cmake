# SPDX-License-Identifier: Apache-2.0
# Configures the probe project next to this file into WORK with SIFLOW_PYTHON=PYTHON, runs its
# ctest, and checks that the test needing a missing module is reported as skipped, naming its
# Debian package (at configure time too), while the other runs and passes.
# Usage: cmake -DPYTHON=... -DWORK=.../python-deps-probe -DCTEST=... -P check_python_deps.cmake
if(NOT WORK MATCHES "python-deps-probe$")
  message(FATAL_ERROR "refusing to use work dir '${WORK}' (must end in python-deps-probe)")
endif()
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR} -B ${WORK}
                        -DSIFLOW_PYTHON=${PYTHON}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "needs_missing: skipped, [^\n]*python3-siflow_no_such_module")
  message(FATAL_ERROR "configure (exit ${rc}) did not report the skip:\n${out}${err}")
endif()
execute_process(COMMAND ${CTEST} --test-dir ${WORK} -V
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the probe's ctest failed (exit ${rc}):\n${err}")
endif()
foreach(pattern "needs_missing [.]+[*]+Skipped" "needs_present [.]+ +Passed"
                "SKIPPED: [^\n]*install Debian's python3-siflow_no_such_module")
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "the probe's ctest output lacks '${pattern}'")
  endif()
endforeach()
