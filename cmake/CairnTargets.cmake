# Shared target helpers: warnings, library and test registration.

add_library(cairn_warnings INTERFACE)
target_compile_options(cairn_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wnon-virtual-dtor -Wimplicit-fallthrough
  $<$<BOOL:${CAIRN_WERROR}>:-Werror>)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 reports false -Wrestrict errors for `"x" + std::string` at -O3 (GCC bug 105651).
  target_compile_options(cairn_warnings INTERFACE -Wno-restrict)
endif()
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  target_compile_options(cairn_warnings INTERFACE -Wthread-safety)
endif()

# cairn_library(NAME SOURCES... [DEPS ...]) -> target cairn_NAME, alias cairn::NAME.
function(cairn_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(cairn_${name} STATIC ${ARG_SOURCES})
  add_library(cairn::${name} ALIAS cairn_${name})
  target_compile_features(cairn_${name} PUBLIC cxx_std_20)
  target_include_directories(cairn_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(cairn_${name} PUBLIC ${ARG_DEPS} PRIVATE cairn_warnings ${ARG_PRIVATE_DEPS})
endfunction()

# cairn_program(NAME SOURCES... DEPS ...) -> executable NAME in build/bin.
function(cairn_program name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_features(${name} PRIVATE cxx_std_20)
  target_link_libraries(${name} PRIVATE cairn_warnings ${ARG_DEPS})
endfunction()

# cairn_unit_tests(LIB DEPS ...): every tests/unit/LIB/*_test.cpp goes into one binary, so a
# test file can never exist without being built and run.
function(cairn_unit_tests lib)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${lib}/*_test.cpp)
  if(NOT sources)
    return()
  endif()
  add_executable(${lib}_tests ${sources})
  # One compile per test binary: each test file spends most of its compile on the same headers
  # (gtest, asio, json), so a unity build of the binary costs little more than one file.
  set_target_properties(${lib}_tests PROPERTIES UNITY_BUILD ${CAIRN_UNITY_TESTS} UNITY_BUILD_BATCH_SIZE 0)
  target_compile_features(${lib}_tests PRIVATE cxx_std_20)
  target_link_libraries(${lib}_tests PRIVATE cairn_warnings cairn::${lib} ${ARG_DEPS}
                        GTest::gtest GTest::gtest_main GTest::gmock)
  add_test(NAME unit.${lib} COMMAND ${lib}_tests)
  set_tests_properties(unit.${lib} PROPERTIES LABELS unit TIMEOUT 300)
endfunction()
