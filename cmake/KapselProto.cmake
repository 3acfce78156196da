# kapsel_generate_protos(OUT_VAR var PROTOS a.proto ...)
#   Runs protoc with the repository root as the import root, so a file's proto name is its path in
#   the repository (e.g. common/oci/spec.proto): names stay unique in the descriptor pool, protos
#   import each other by repository path, and generated headers are included by that path with
#   ".pb.h" (include ${CMAKE_BINARY_DIR}). Sets `var` to the generated .pb.cc/.pb.h files.
function(kapsel_generate_protos)
  cmake_parse_arguments(P "" "OUT_VAR" "PROTOS" ${ARGN})
  set(generated)
  foreach(proto ${P_PROTOS})
    get_filename_component(abs ${proto} ABSOLUTE)
    file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${abs})
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    set(outputs ${CMAKE_BINARY_DIR}/${stem}.pb.cc ${CMAKE_BINARY_DIR}/${stem}.pb.h)
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND protobuf::protoc --cpp_out=${CMAKE_BINARY_DIR} -I ${CMAKE_SOURCE_DIR}
              -I ${Protobuf_INCLUDE_DIRS} ${abs}
      DEPENDS ${abs} protobuf::protoc
      COMMENT "protoc ${rel}"
      VERBATIM)
    list(APPEND generated ${outputs})
  endforeach()
  set(${P_OUT_VAR} ${generated} PARENT_SCOPE)
endfunction()
