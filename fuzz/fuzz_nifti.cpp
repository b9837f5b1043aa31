// read_nifti over arbitrary bytes (.nii and .nii.gz, told apart by content): every input is read
// or refused with a ClientError; decoded images are bounded by max_bytes (64 MiB here).
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "io/nifti_volume.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = medseg::fuzz::scratch_file("input.nii", data, size);
  medseg::fuzz::expect_clean([&] {
    medseg::NiftiReadOptions options;
    options.max_bytes = int64_t{64} << 20;
    const medseg::NiftiVolume volume = medseg::read_nifti(path, options);
    // What was read is consistent: the data fills the dimensions, within the bound. (Zooms may
    // be anything, as nibabel reads them; the static transforms check the spacing.)
    if (static_cast<int64_t>(volume.data.size()) != volume.voxel_count() ||
        static_cast<int64_t>(volume.data.size() * sizeof(float)) > options.max_bytes) {
      __builtin_trap();
    }
  });
  return 0;
}
