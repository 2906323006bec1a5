# config_docs_check.cmake -- docs/configs.md must hold `lowbit help config` verbatim (the keys table has one source,
# examples/cli_config.hpp; this keeps the docs' copy of it true).
#   cmake -DLOWBIT=<the tool> -DDOC=<docs/configs.md> -P config_docs_check.cmake
execute_process(COMMAND ${LOWBIT} help config RESULT_VARIABLE rc OUTPUT_VARIABLE table)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "lowbit help config failed (${rc})")
endif()
file(READ "${DOC}" doc)
string(FIND "${doc}" "${table}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${DOC} does not hold the output of `lowbit help config`; regenerate its table:\n${table}")
endif()
