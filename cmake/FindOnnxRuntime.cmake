# FindOnnxRuntime: the ONNX Runtime C/C++ API (headers + libonnxruntime).
#
#   list(APPEND CMAKE_MODULE_PATH ${PROJECT_SOURCE_DIR}/cmake)
#   find_package(OnnxRuntime [1.21] [REQUIRED])
#   target_link_libraries(foo PRIVATE OnnxRuntime::OnnxRuntime)
#
# Where it looks, first match wins:
#   1. ONNXRUNTIME_ROOT (CMake variable or environment variable): an SDK tree
#      with include/ and lib/, e.g. an unpacked official release archive.
#      When set, only this is searched: an explicit choice must not silently
#      fall back to some other copy.
#   2. The SDK that scripts/onnxruntime.sh assembles: $ENV{CAIRN_ONNXRUNTIME_DIR}
#      if set, else /opt/cairn/onnxruntime.
#   3. A normal install: upstream's/Debian's CMake package
#      (find_package(onnxruntime CONFIG)), then plain header/library search
#      in the system paths.
#
# Defines:
#   OnnxRuntime_FOUND
#   OnnxRuntime::OnnxRuntime     imported target (usage requirements included)
#   OnnxRuntime_INCLUDE_DIR      directory holding onnxruntime_cxx_api.h
#   OnnxRuntime_LIBRARY          the shared library
#   OnnxRuntime_API_VERSION      ORT_API_VERSION from the headers, e.g. 21
#   OnnxRuntime_VERSION          1.<API_VERSION>: the release the headers come
#                                from. It is what a version request checks,
#                                because it bounds which API calls compile.
#                                The library may be newer (cairn's SDK pairs
#                                1.21 headers with a 1.30 library; the C API is
#                                backwards compatible); its own version is only
#                                known at run time (OrtGetApiBase()->GetVersionString()).
#
# Note for users of upstream's build (as in cairn's SDK): it collects
# telemetry on Linux unless ORT_DISABLE_TELEMETRY=1 is in the environment
# before the first Ort::Env is created; see scripts/onnxruntime.sh.

include(FindPackageHandleStandardArgs)

if(TARGET OnnxRuntime::OnnxRuntime)
  set(OnnxRuntime_FOUND TRUE)
  return()
endif()

set(ONNXRUNTIME_ROOT "${ONNXRUNTIME_ROOT}" CACHE PATH
    "ONNX Runtime SDK directory (include/, lib/); empty: cairn's SDK, then the system")
if(NOT ONNXRUNTIME_ROOT AND DEFINED ENV{ONNXRUNTIME_ROOT})
  set(_ort_root "$ENV{ONNXRUNTIME_ROOT}")
else()
  set(_ort_root "${ONNXRUNTIME_ROOT}")
endif()
if(DEFINED ENV{CAIRN_ONNXRUNTIME_DIR} AND NOT "$ENV{CAIRN_ONNXRUNTIME_DIR}" STREQUAL "")
  set(_ort_cairn_sdk "$ENV{CAIRN_ONNXRUNTIME_DIR}")
else()
  set(_ort_cairn_sdk "/opt/cairn/onnxruntime")
endif()

# find_path/find_library cache their results, so without this a later change
# of ONNXRUNTIME_ROOT (or of the SDK location) would keep using the old copy.
set(_ort_search_key "${_ort_root}|${_ort_cairn_sdk}")
if(NOT "${_ort_search_key}" STREQUAL "${_OnnxRuntime_SEARCH_KEY}")
  unset(OnnxRuntime_INCLUDE_DIR CACHE)
  unset(OnnxRuntime_LIBRARY CACHE)
  set(_OnnxRuntime_SEARCH_KEY "${_ort_search_key}" CACHE INTERNAL "")
endif()

# Headers sit directly in include/ in release archives and cairn's SDK, in
# include/onnxruntime/ in Debian's package, and in
# include/onnxruntime/core/session/ in older source installs.
set(_ort_header_suffixes include include/onnxruntime include/onnxruntime/core/session)
set(_ort_lib_suffixes lib lib64)

function(_ort_search_prefix prefix)
  find_path(OnnxRuntime_INCLUDE_DIR onnxruntime_cxx_api.h
            PATHS "${prefix}" PATH_SUFFIXES ${_ort_header_suffixes} NO_DEFAULT_PATH)
  find_library(OnnxRuntime_LIBRARY onnxruntime
               PATHS "${prefix}" PATH_SUFFIXES ${_ort_lib_suffixes} NO_DEFAULT_PATH)
endfunction()

set(_ort_via_config FALSE)
if(_ort_root)
  _ort_search_prefix("${_ort_root}")
else()
  if(EXISTS "${_ort_cairn_sdk}")
    _ort_search_prefix("${_ort_cairn_sdk}")
  endif()
  if(NOT OnnxRuntime_INCLUDE_DIR OR NOT OnnxRuntime_LIBRARY)
    # A half match from the SDK is useless; start the system search clean.
    unset(OnnxRuntime_INCLUDE_DIR CACHE)
    unset(OnnxRuntime_LIBRARY CACHE)
    find_package(onnxruntime CONFIG QUIET)
    if(TARGET onnxruntime::onnxruntime)
      set(_ort_via_config TRUE)
      # Report the package's own paths so the messages below say what was used.
      get_target_property(_ort_incs onnxruntime::onnxruntime INTERFACE_INCLUDE_DIRECTORIES)
      find_path(OnnxRuntime_INCLUDE_DIR onnxruntime_cxx_api.h PATHS ${_ort_incs} NO_DEFAULT_PATH)
      get_target_property(_ort_cfgs onnxruntime::onnxruntime IMPORTED_CONFIGURATIONS)
      foreach(_ort_cfg IN LISTS _ort_cfgs)
        get_target_property(_ort_loc onnxruntime::onnxruntime IMPORTED_LOCATION_${_ort_cfg})
        if(_ort_loc)
          set(OnnxRuntime_LIBRARY "${_ort_loc}" CACHE FILEPATH "ONNX Runtime library" FORCE)
          break()
        endif()
      endforeach()
    else()
      find_path(OnnxRuntime_INCLUDE_DIR onnxruntime_cxx_api.h
                PATH_SUFFIXES onnxruntime onnxruntime/core/session)
      find_library(OnnxRuntime_LIBRARY onnxruntime)
    endif()
  endif()
endif()

if(OnnxRuntime_INCLUDE_DIR AND EXISTS "${OnnxRuntime_INCLUDE_DIR}/onnxruntime_c_api.h")
  file(STRINGS "${OnnxRuntime_INCLUDE_DIR}/onnxruntime_c_api.h" _ort_api_line
       REGEX "^#define ORT_API_VERSION [0-9]+")
  if(_ort_api_line MATCHES "ORT_API_VERSION ([0-9]+)")
    set(OnnxRuntime_API_VERSION "${CMAKE_MATCH_1}")
    set(OnnxRuntime_VERSION "1.${CMAKE_MATCH_1}")
  endif()
endif()

find_package_handle_standard_args(OnnxRuntime
  REQUIRED_VARS OnnxRuntime_LIBRARY OnnxRuntime_INCLUDE_DIR
  VERSION_VAR OnnxRuntime_VERSION)

if(OnnxRuntime_FOUND)
  if(_ort_via_config)
    # Keep the package's target (it may carry more than a path); ours only
    # forwards to it so users see one name whatever was found.
    add_library(OnnxRuntime::OnnxRuntime INTERFACE IMPORTED)
    target_link_libraries(OnnxRuntime::OnnxRuntime INTERFACE onnxruntime::onnxruntime)
  else()
    add_library(OnnxRuntime::OnnxRuntime SHARED IMPORTED)
    # Imported include directories count as system ones, so ONNX Runtime's
    # headers do not trip cairn's -Wconversion/-Wshadow (they would). CMake
    # puts the library's directory into the build tree's RPATH by itself.
    set_target_properties(OnnxRuntime::OnnxRuntime PROPERTIES
      IMPORTED_LOCATION "${OnnxRuntime_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${OnnxRuntime_INCLUDE_DIR}")
  endif()
endif()

mark_as_advanced(OnnxRuntime_INCLUDE_DIR OnnxRuntime_LIBRARY)
unset(_ort_root)
unset(_ort_cairn_sdk)
unset(_ort_search_key)
unset(_ort_via_config)
