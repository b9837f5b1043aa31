// model.pth files as infer and serve load them (from a model channel or an extracted
// model.tar.gz: ours, a Python torch.save of a MONAI state dict, or anything else) into the
// network of fuzz/corpus/fuzz_model's files (channels [4, 8], strides [2], no residual units,
// 4 -> 3 channels): loaded strictly, or refused with a ClientError naming the file.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "model/model_io.h"
#include "model/unet.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = medseg::fuzz::scratch_file("model.pth", data, size);
  // One network for every input: a load changes its weights only when the file fits it.
  static medseg::UNet model = [] {
    medseg::UNetOptions options;
    options.channels = {4, 8};
    options.strides = {2};
    options.num_res_units = 0;
    return medseg::UNet(options);
  }();
  medseg::fuzz::expect_clean([&] { medseg::load_model_pth(path, *model); });
  return 0;
}
