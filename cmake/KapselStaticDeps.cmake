# Link Abseil and Protobuf statically into every kapsel binary. Debian ships both the shared and the
# static libraries, but the imported CMake targets name the shared ones. Static linking keeps the
# VMM's resident memory low (no relocated shared-library pages) and lets the guest agent be one
# static binary.
function(kapsel_use_static_library target)
  foreach(config NONE RELEASE RELWITHDEBINFO DEBUG "")
    if(config STREQUAL "")
      set(property IMPORTED_LOCATION)
    else()
      set(property IMPORTED_LOCATION_${config})
    endif()
    get_target_property(location ${target} ${property})
    if(location AND location MATCHES "\\.so(\\.[0-9.]+)?$")
      string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${location}")
      if(EXISTS "${archive}")
        set_target_properties(${target} PROPERTIES ${property} "${archive}")
      endif()
    endif()
  endforeach()
endfunction()

get_directory_property(kapsel_imported IMPORTED_TARGETS)
foreach(target ${kapsel_imported})
  if(target MATCHES "^absl::" OR target STREQUAL "protobuf::libprotobuf"
     OR target STREQUAL "protobuf::libprotobuf-lite")
    kapsel_use_static_library(${target})
  endif()
endforeach()

# pkg-config targets (libseccomp, libnl) list full library paths in INTERFACE_LINK_LIBRARIES: use
# the static archives beside them. Called for each such target where it is defined.
function(kapsel_use_static_pkg_config target)
  get_target_property(libs ${target} INTERFACE_LINK_LIBRARIES)
  set(static_libs)
  foreach(lib ${libs})
    if(lib MATCHES "\\.so$")
      string(REGEX REPLACE "\\.so$" ".a" archive "${lib}")
      if(EXISTS "${archive}")
        set(lib "${archive}")
      endif()
    endif()
    list(APPEND static_libs "${lib}")
  endforeach()
  set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${static_libs}")
endfunction()

if(TARGET PkgConfig::SECCOMP)
  kapsel_use_static_pkg_config(PkgConfig::SECCOMP)
endif()
