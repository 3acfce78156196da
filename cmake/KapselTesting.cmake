# Test helpers shared by every folder.
#
# kapsel_add_unit_test(NAME name SOURCES a.cc b.cc LIBS lib...)
#   A GoogleTest binary run directly by ctest, label "unit".
# kapsel_add_e2e_test(NAME name COMMAND cmd args... [TIMEOUT seconds])
#   A test that needs a real KVM that boots Linux: ctest runs it through tests/testhost/e2e, which
#   runs the command directly on a machine with hardware KVM and inside the test host otherwise.
#   Label "e2e". Group many cases into one command: each test-host boot costs seconds.
# kapsel_add_fuzzer(NAME name SOURCES a.cc LIBS lib... [SECONDS n])
#   A libFuzzer target, built only with KAPSEL_FUZZ=ON (clang); ctest runs it for n seconds (label "fuzz").

function(kapsel_add_unit_test)
  cmake_parse_arguments(T "" "NAME" "SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main GTest::gmock)
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES LABELS unit TIMEOUT 300)
endfunction()

function(kapsel_add_e2e_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "COMMAND" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_test(NAME ${T_NAME}
           COMMAND ${CMAKE_SOURCE_DIR}/tests/testhost/e2e --timeout ${T_TIMEOUT} -- ${T_COMMAND})
  math(EXPR outer_timeout "${T_TIMEOUT} + 120")
  set_tests_properties(${T_NAME} PROPERTIES LABELS e2e TIMEOUT ${outer_timeout}
                       RESOURCE_LOCK testhost)
endfunction()

function(kapsel_add_fuzzer)
  cmake_parse_arguments(T "" "NAME;SECONDS" "SOURCES;LIBS" ${ARGN})
  if(NOT KAPSEL_FUZZ)
    return()
  endif()
  if(NOT T_SECONDS)
    set(T_SECONDS 20)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_compile_options(${T_NAME} PRIVATE -fsanitize=fuzzer)
  target_link_options(${T_NAME} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS})
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} -max_total_time=${T_SECONDS} -rss_limit_mb=2048)
  set_tests_properties(${T_NAME} PROPERTIES LABELS fuzz TIMEOUT 300)
endfunction()
