# SPDX-License-Identifier: Apache-2.0
# Configure-time checks for the Python modules the converter and golden tests import, and the
# stand-in ctest entry that reports such a test as skipped (naming the Debian packages) when a
# module is missing, so a missing optional tool never shows as a failure or as a pass.

# siflow_python_missing(OUT MODULE...): the Debian packages (python3-MODULE) of the modules
# SIFLOW_PYTHON cannot import; empty when all import. A module found once is remembered for this
# interpreter; a missing one is looked for again at every configure.
function(siflow_python_missing out)
  set(missing "")
  foreach(module ${ARGN})
    set(key SIFLOW_PYTHON_HAS_${module})
    if(NOT ${key} OR NOT "${${key}}" STREQUAL "${SIFLOW_PYTHON}")
      execute_process(COMMAND ${SIFLOW_PYTHON} -c "import ${module}" RESULT_VARIABLE rc
                      OUTPUT_QUIET ERROR_QUIET)
      if(rc EQUAL 0)
        set(${key} "${SIFLOW_PYTHON}" CACHE INTERNAL "SIFLOW_PYTHON imports ${module}")
      else()
        unset(${key} CACHE)
        list(APPEND missing python3-${module})
      endif()
    endif()
  endforeach()
  set(${out} ${missing} PARENT_SCOPE)
endfunction()

# siflow_python_test(NAME LABELS MODULES... COMMAND ARGS...): NAME runs ARGS when SIFLOW_PYTHON
# imports every module; otherwise NAME prints "SKIPPED: ..." with the packages to install, which
# ctest reports as skipped, and configure says the same.
function(siflow_python_test name labels)
  cmake_parse_arguments(PARSE_ARGV 2 arg "" "" "MODULES;COMMAND")
  siflow_python_missing(missing ${arg_MODULES})
  if(missing)
    string(REPLACE ";" " " packages "${missing}")
    set(reason "${SIFLOW_PYTHON} cannot import what ${name} needs: install Debian's ${packages} "
               "(tools/install-deps.sh --test) and configure again")
    string(CONCAT reason ${reason})
    message(STATUS "${name}: skipped, ${reason}")
    add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} -E echo "SKIPPED: ${reason}")
    set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION "SKIPPED: " LABELS "${labels}")
  else()
    add_test(NAME ${name} COMMAND ${arg_COMMAND})
    set_tests_properties(${name} PROPERTIES LABELS "${labels}")
  endif()
endfunction()
