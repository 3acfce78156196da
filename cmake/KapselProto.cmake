# kapsel_generate_protos(OUT_VAR var [LITE] [OUT_DIR dir] PROTOS a.proto ...)
#   Runs protoc with the repository root as the import root, so a file's proto name is its path in
#   the repository (e.g. common/oci/spec.proto): names stay unique in the descriptor pool, protos
#   import each other by repository path, and generated headers are included by that path with
#   ".pb.h" (include OUT_DIR, by default ${CMAKE_BINARY_DIR}). Sets `var` to the generated
#   .pb.cc/.pb.h files.
#   LITE generates code for the lite runtime (protobuf::libprotobuf-lite: no descriptors, no
#   reflection, no text or JSON formats) whatever the file's optimize_for says. The guest agent uses
#   lite copies of the protos it shares with the host; those go to their own OUT_DIR, because the
#   generated classes have the same names and headers as the full ones (see common/oci).
function(kapsel_generate_protos)
  cmake_parse_arguments(P "LITE" "OUT_VAR;OUT_DIR" "PROTOS" ${ARGN})
  if(NOT P_OUT_DIR)
    set(P_OUT_DIR ${CMAKE_BINARY_DIR})
  endif()
  if(P_LITE)
    set(cpp_out "lite:${P_OUT_DIR}")
    # Makefiles do not rerun a custom command whose command line changed: a file switched to LITE
    # must be regenerated.
    set(extra_depends ${CMAKE_CURRENT_FUNCTION_LIST_FILE})
  else()
    set(cpp_out "${P_OUT_DIR}")
    set(extra_depends)
  endif()
  set(generated)
  foreach(proto ${P_PROTOS})
    get_filename_component(abs ${proto} ABSOLUTE)
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${abs})
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    set(outputs ${P_OUT_DIR}/${stem}.pb.cc ${P_OUT_DIR}/${stem}.pb.h)
    if(P_LITE)
      set(comment "protoc ${rel} (lite, ${P_OUT_DIR})")
    else()
      set(comment "protoc ${rel}")
    endif()
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${P_OUT_DIR}
      COMMAND protobuf::protoc --cpp_out=${cpp_out} -I ${CMAKE_SOURCE_DIR}
              -I ${Protobuf_INCLUDE_DIRS} ${abs}
      DEPENDS ${abs} protobuf::protoc ${extra_depends}
      COMMENT "${comment}"
      VERBATIM)
    list(APPEND generated ${outputs})
  endforeach()
  set(${P_OUT_VAR} ${generated} PARENT_SCOPE)
endfunction()

# Lite and full copies of the same protos.
#
# The guest agent links only protobuf's lite runtime (it is the guest's /init and must stay small);
# the host programs keep the full one (the shim reads config.json with protobuf's JSON parser).
# Protos both sides use are generated twice: full into ${CMAKE_BINARY_DIR} (kapsel_oci,
# kapsel_agent_proto) and lite into KAPSEL_LITE_PROTO_DIR (kapsel_oci_lite,
# kapsel_agent_proto_lite). The copies have the same class names and header paths, so a binary
# must link one or the other: each library declares its flavor with kapsel_proto_flavor, and CMake
# refuses to generate a target that depends on both. Guest targets (kapsel_guest_target in
# cmake/KapselGuest.cmake) include the lite headers ahead of ${CMAKE_BINARY_DIR}, and guest code
# static_asserts that its messages are lite (guest-agent/lite_protos.h).
#
# Protos that only need the lite runtime and have no full copy (the ttrpc messages) link
# KAPSEL_PROTOBUF_RUNTIME: the lite runtime in a binary with the KAPSEL_PROTOBUF_LITE property (set
# by kapsel_guest_target), else the full one, which holds everything the lite one does (the two
# must not both be linked).
set(KAPSEL_LITE_PROTO_DIR ${CMAKE_BINARY_DIR}/lite-protos)
set(KAPSEL_PROTOBUF_RUNTIME
    "$<IF:$<BOOL:$<TARGET_PROPERTY:KAPSEL_PROTOBUF_LITE>>,protobuf::libprotobuf-lite,protobuf::libprotobuf>")

# kapsel_proto_flavor(target full|lite): see above.
function(kapsel_proto_flavor target flavor)
  set_property(TARGET ${target} PROPERTY INTERFACE_KAPSEL_PROTO_FLAVOR ${flavor})
  set_property(TARGET ${target} APPEND PROPERTY COMPATIBLE_INTERFACE_STRING KAPSEL_PROTO_FLAVOR)
endfunction()

include(KapselGuest)
