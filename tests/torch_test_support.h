// Helpers for the tests that build LibTorch objects: the small network the fuzz harnesses and
// their found files use, and tensors as damaged files state them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorImpl.h>

#include "model/unet.h"

namespace medseg::testing {

// The fuzz harnesses' network (fuzz/make_corpus.sh): channels [4, 8], strides [2], no residual
// units. The files in tests/data/fuzz_findings fit it.
inline UNetOptions harness_network_options() {
  UNetOptions options;
  options.channels = {4, 8};
  options.strides = {2};
  options.num_res_units = 0;
  return options;
}

// `small` with `sizes` claiming more elements than its storage holds, as a damaged file can state
// them (LibTorch's unpickler does not compare the two).
inline at::Tensor beyond_its_storage(at::Tensor small, at::IntArrayRef sizes) {
  small.unsafeGetTensorImpl()->set_sizes_contiguous(sizes);
  return small;
}

}  // namespace medseg::testing
