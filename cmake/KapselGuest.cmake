# Code built into kapsel-agent, the guest's /init: one static binary that should stay small
# (tests/agent/size checks it).
#
# kapsel_use_lite_protos(target...)
#   The target uses the agent's lite protos (cmake/KapselProto.cmake): KAPSEL_LITE_PROTO_DIR first
#   in its include path and, for a binary, the lite protobuf runtime (KAPSEL_PROTOBUF_LITE). For
#   the agent's code and for test binaries that link agent libraries.
# kapsel_guest_target(target...)
#   A target whose code goes into the agent: kapsel_use_lite_protos, and KAPSEL_GUEST_SIZE_FLAGS:
#   optimized for size, one section per function and object (the agent links with --gc-sections),
#   and no exceptions or unwind tables. The agent catches no exception anywhere, so whatever is
#   thrown (bad_alloc) ends the process with or without unwind tables; they only cost space.
set(KAPSEL_GUEST_SIZE_FLAGS -Os -ffunction-sections -fdata-sections -fno-exceptions
    -fno-asynchronous-unwind-tables)

function(kapsel_use_lite_protos)
  foreach(target ${ARGN})
    target_include_directories(${target} BEFORE PRIVATE ${KAPSEL_LITE_PROTO_DIR})
    set_property(TARGET ${target} PROPERTY KAPSEL_PROTOBUF_LITE ON)
  endforeach()
endfunction()

function(kapsel_guest_target)
  kapsel_use_lite_protos(${ARGN})
  foreach(target ${ARGN})
    target_compile_options(${target} PRIVATE ${KAPSEL_GUEST_SIZE_FLAGS})
  endforeach()
endfunction()
