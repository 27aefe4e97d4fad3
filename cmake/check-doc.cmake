# Fails when a generated document differs from what noodle-harness prints.
# -DHARNESS=exe -DDOC=file -DARGS="cmd;args" ; regenerate with: noodle-harness ARGS > DOC
execute_process(COMMAND ${HARNESS} ${ARGS} OUTPUT_VARIABLE generated RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "noodle-harness ${ARGS} failed (${rc})")
endif()
file(READ ${DOC} committed)
if(NOT generated STREQUAL committed)
  string(REPLACE ";" " " shown "${ARGS}")
  message(FATAL_ERROR "${DOC} is out of date; regenerate it with 'noodle-harness ${shown} > ${DOC}'")
endif()
message(STATUS "${DOC} matches the catalogue")
