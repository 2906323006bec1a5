# cli_check.cmake -- runs one command line and checks what it did (a CTest for the lowbit tool).
#
#   cmake -DCMD=prog|arg|arg -DRC=<exit code> [-DREGEX=<the output matches>] [-DNOT_REGEX=<it does not>]
#         [-DABSENT=glob|glob] [-DPRESENT=glob|glob] [-DOUT=<file for stdout>] [-DENV=VAR=value|VAR=value]
#         [-DCLEAN=glob|glob]
#         -P cli_check.cmake
#
# `|` separates list items (CTest would split `;`).  A regex may not hold `;` or an unbalanced `[` (CMake's list
# syntax); `.` matches them.  The output checked is stdout followed by stderr.  ABSENT:
# nothing may match these globs afterwards (no half-written model, no temporary left behind); PRESENT: something
# must match each.
# CLEAN: removed before the run, so a test that expects a path to be absent afterwards can be run again.
string(REPLACE "|" ";" cmd "${CMD}")
if(DEFINED CLEAN)
  string(REPLACE "|" ";" globs "${CLEAN}")
  foreach(g IN LISTS globs)
    file(GLOB found LIST_DIRECTORIES true "${g}")
    if(found)
      file(REMOVE_RECURSE ${found})
    endif()
  endforeach()
endif()
if(DEFINED ENV)
  string(REPLACE "|" ";" env_list "${ENV}")
  set(cmd ${CMAKE_COMMAND} -E env ${env_list} ${cmd})
endif()
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(DEFINED OUT)
  file(WRITE "${OUT}" "${out}")
endif()
set(all "${out}${err}")
if(NOT "${rc}" STREQUAL "${RC}")
  message(FATAL_ERROR "exit code ${rc}, expected ${RC}\n--- output:\n${all}")
endif()
if(DEFINED REGEX AND NOT all MATCHES "${REGEX}")
  message(FATAL_ERROR "the output does not match '${REGEX}'\n--- output:\n${all}")
endif()
if(DEFINED NOT_REGEX AND all MATCHES "${NOT_REGEX}")
  message(FATAL_ERROR "the output matches '${NOT_REGEX}'\n--- output:\n${all}")
endif()
if(DEFINED ABSENT)
  string(REPLACE "|" ";" globs "${ABSENT}")
  foreach(g IN LISTS globs)
    file(GLOB found LIST_DIRECTORIES true "${g}")
    if(found)
      message(FATAL_ERROR "expected nothing at ${g}, found: ${found}\n--- output:\n${all}")
    endif()
  endforeach()
endif()
if(DEFINED PRESENT)
  string(REPLACE "|" ";" globs "${PRESENT}")
  foreach(g IN LISTS globs)
    file(GLOB found LIST_DIRECTORIES true "${g}")
    if(NOT found)
      message(FATAL_ERROR "expected something at ${g}, found nothing\n--- output:\n${all}")
    endif()
  endforeach()
endif()
message(STATUS "ok: exit code ${rc}")
