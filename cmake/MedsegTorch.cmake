# Defines the interface target medseg_torch from the torch wheel in MEDSEG_TORCH_DIR, for the CPU
# build (MEDSEG_CUDA=OFF) or the CUDA build (MEDSEG_CUDA=ON); see CMakeLists.txt.
#
# The wheel's libraries find the CUDA libraries of its nvidia-* packages through their own run
# paths; CMake's build run path finds the wheel's libraries.

add_library(medseg_torch INTERFACE)

# The wheel's include/ also holds its own fmt (v12), which would shadow Debian's fmt 9 that spdlog
# is built with; medseg sees the wheel's headers through a folder of links to every entry but fmt.
set(MEDSEG_TORCH_INCLUDE_DIR "${CMAKE_BINARY_DIR}/torch-include")
file(REMOVE_RECURSE "${MEDSEG_TORCH_INCLUDE_DIR}")
file(MAKE_DIRECTORY "${MEDSEG_TORCH_INCLUDE_DIR}")
file(GLOB _entries RELATIVE "${MEDSEG_TORCH_DIR}/include" "${MEDSEG_TORCH_DIR}/include/*")
foreach(_entry IN LISTS _entries)
  if(NOT _entry STREQUAL "fmt")
    file(CREATE_LINK "${MEDSEG_TORCH_DIR}/include/${_entry}" "${MEDSEG_TORCH_INCLUDE_DIR}/${_entry}"
         SYMBOLIC)
  endif()
endforeach()
# Gloo's headers are not in the wheel (its code is inside libtorch_cpu): Debian's libgloo-dev
# supplies the declarations ProcessGroupGloo.hpp needs.
find_path(MEDSEG_GLOO_INCLUDE_DIR gloo/algorithm.h REQUIRED)
set(_torch_include_dirs "${MEDSEG_TORCH_INCLUDE_DIR}"
    "${MEDSEG_TORCH_INCLUDE_DIR}/torch/csrc/api/include" "${MEDSEG_GLOO_INCLUDE_DIR}")

if(MEDSEG_CUDA)
  # LibTorch's own package: it finds the CUDA toolkit and defines USE_C10D_NCCL on torch_cuda.
  list(APPEND CMAKE_PREFIX_PATH "${MEDSEG_TORCH_DIR}/share/cmake")
  find_package(Torch REQUIRED CONFIG)
  if(NOT TARGET torch_cuda)
    message(FATAL_ERROR "MEDSEG_CUDA=ON, but the LibTorch in ${MEDSEG_TORCH_DIR} has no torch_cuda "
                        "(a CPU-only wheel?)")
  endif()
  get_target_property(_cuda_definitions torch_cuda INTERFACE_COMPILE_DEFINITIONS)
  if(NOT "USE_C10D_NCCL" IN_LIST _cuda_definitions)
    message(FATAL_ERROR "MEDSEG_CUDA=ON, but torch_cuda does not define USE_C10D_NCCL "
                        "(definitions: ${_cuda_definitions}): this LibTorch has no NCCL")
  endif()
  # Point LibTorch's targets at the include folder above.
  foreach(_target IN ITEMS c10 c10_cuda torch_cpu torch_cuda torch)
    if(TARGET ${_target})
      set_property(TARGET ${_target} PROPERTY INTERFACE_INCLUDE_DIRECTORIES ${_torch_include_dirs})
    endif()
  endforeach()
  # torch_cuda_library (torch_cuda and torch_cpu, kept even where no symbol is referenced, so
  # their kernels register; c10, c10_cuda and the CUDA runtime) rather than TORCH_LIBRARIES: that
  # adds libtorch.so, a shim that exports its own std::filesystem functions, which then shadow
  # libstdc++'s in medseg and crash (remove_all jumps to address 0).
  target_link_libraries(medseg_torch INTERFACE torch_cuda_library)
  # ProcessGroupNCCL.hpp includes nccl.h: the header of the NCCL the wheel ships (nvidia-nccl-*),
  # else the system's.
  find_path(MEDSEG_NCCL_INCLUDE_DIR nccl.h
            HINTS "${MEDSEG_TORCH_DIR}/../nvidia/nccl/include" REQUIRED)
  target_include_directories(medseg_torch SYSTEM INTERFACE "${MEDSEG_NCCL_INCLUDE_DIR}")
  target_compile_definitions(medseg_torch INTERFACE MEDSEG_WITH_CUDA=1)
  message(STATUS "medseg: CUDA build against LibTorch ${Torch_VERSION} (${MEDSEG_TORCH_DIR}), "
                 "CUDA ${CUDAToolkit_VERSION}, NCCL")
else()
  # libtorch_cpu holds ATen, the C++ API and c10d with Gloo.
  find_library(MEDSEG_TORCH_CPU_LIBRARY torch_cpu PATHS "${MEDSEG_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
  find_library(MEDSEG_C10_LIBRARY c10 PATHS "${MEDSEG_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
  target_include_directories(medseg_torch SYSTEM INTERFACE ${_torch_include_dirs})
  # What the wheel's torch_cpu target defines for its users (share/cmake/Caffe2/Caffe2Targets.cmake).
  target_compile_definitions(medseg_torch INTERFACE USE_DISTRIBUTED USE_C10D_GLOO)
  target_link_libraries(medseg_torch INTERFACE ${MEDSEG_TORCH_CPU_LIBRARY} ${MEDSEG_C10_LIBRARY})
  file(STRINGS "${MEDSEG_TORCH_DIR}/version.py" _version_line REGEX "^__version__")
  string(REGEX REPLACE ".*'(.*)'.*" "\\1" _version "${_version_line}")
  message(STATUS "medseg: CPU build against LibTorch ${_version} (${MEDSEG_TORCH_DIR})")
endif()
