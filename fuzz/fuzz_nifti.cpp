// read_nifti over arbitrary bytes (.nii and .nii.gz, told apart by content): every input is read
// or refused with a ClientError; decoded images are bounded by max_bytes (64 MiB here). A file
// that reads is read again as preprocessing reads it: its layout from the header alone agrees,
// and its voxels decoded in place, into a room of exactly the header's floats and the voxels,
// are the same bits, with nothing written past the room.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

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
    const medseg::NiftiLayout layout = medseg::read_nifti_layout(path, options);
    if (layout.dim != volume.dim || layout.ndim != volume.ndim) __builtin_trap();
    if (layout.in_place_prefix < 0) return;
    options.voxels_in_place = true;
    const int64_t voxels = volume.voxel_count();
    std::vector<float> room(static_cast<size_t>(layout.in_place_prefix + voxels + 1));
    const float kGuard = -1234.5f;
    room.back() = kGuard;
    const medseg::NiftiVolume kept =
        medseg::read_nifti(path, options, nullptr, room.data(), layout.in_place_prefix + voxels);
    if (!kept.data.empty() || kept.first_voxel != layout.in_place_prefix ||
        std::memcmp(room.data() + kept.first_voxel, volume.data.data(),
                    static_cast<size_t>(voxels) * sizeof(float)) != 0 ||
        room.back() != kGuard) {
      __builtin_trap();
    }
  });
  return 0;
}
