# ctest driver: install the build into a temporary prefix, then configure,
# build and run the consumer project against it (CMake package and pkg-config).
# -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK=... [-DSANITIZE=...] [-DCOVERAGE=ON]
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
set(ENV{PKG_CONFIG_PATH} "${WORK}/prefix/lib/pkgconfig:${WORK}/prefix/lib/x86_64-linux-gnu/pkgconfig")
# a sanitizer or coverage build needs the same runtime in the consumer
set(flags "")
if(SANITIZE)
  set(flags "-fsanitize=${SANITIZE}")
endif()
if(COVERAGE)
  set(flags "${flags} --coverage")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install -B ${WORK}/build
                        -DCMAKE_PREFIX_PATH=${WORK}/prefix "-DCMAKE_C_FLAGS=${flags}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the consumer failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer failed (${rc})")
endif()
foreach(exe consumer consumer_pc)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env
                          LD_LIBRARY_PATH=${WORK}/prefix/lib:${WORK}/prefix/lib/x86_64-linux-gnu
                          ${WORK}/build/${exe} RESULT_VARIABLE rc OUTPUT_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${exe} failed (${rc}): ${out}")
  endif()
  message(STATUS "${exe}: ${out}")
endforeach()
file(REMOVE_RECURSE ${WORK})
