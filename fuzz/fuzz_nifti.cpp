// read_nifti over arbitrary bytes (.nii and .nii.gz, told apart by content): every input is read
// or refused with a ClientError; decoded images are bounded by max_bytes (64 MiB here). A file
// that reads is read again as preprocessing reads it: its layout from the header alone agrees,
// and its voxels decoded in place, into a room of exactly the header's floats and the voxels,
// are the same bits, with nothing written past the room (int16 ones as int16 of the same
// values); read with bytes_in_place, a uint8 file's bytes are its values.
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
    const int64_t voxels = volume.voxel_count();
    if (layout.in_place_prefix >= 0) {
      // Kept where decompressed: floats, or int16 two per float.
      options.voxels_in_place = true;
      const int64_t per_float = layout.raw_int16 ? 2 : 1;
      const int64_t room_floats = (layout.in_place_prefix + voxels + per_float - 1) / per_float;
      std::vector<float> room(static_cast<size_t>(room_floats + 1));
      const float kGuard = -1234.5f;
      room.back() = kGuard;
      const medseg::NiftiVolume kept =
          medseg::read_nifti(path, options, nullptr, room.data(), room_floats);
      if (!kept.data.empty() || kept.first_voxel != layout.in_place_prefix ||
          kept.raw_int16 != layout.raw_int16 || room.back() != kGuard) {
        __builtin_trap();
      }
      if (layout.raw_int16) {
        const int16_t* values = reinterpret_cast<const int16_t*>(room.data()) + kept.first_voxel;
        for (int64_t i = 0; i < voxels; ++i) {
          if (static_cast<float>(values[i]) != volume.data[static_cast<size_t>(i)]) {
            __builtin_trap();
          }
        }
      } else if (std::memcmp(room.data() + kept.first_voxel, volume.data.data(),
                             static_cast<size_t>(voxels) * sizeof(float)) != 0) {
        __builtin_trap();
      }
      options.voxels_in_place = false;
    }
    // A uint8 file's bytes kept as read (labels): the same values, within the data; any other
    // file read as without the option.
    options.bytes_in_place = true;
    const medseg::NiftiVolume bytes = medseg::read_nifti(path, options);
    if (bytes.raw_uint8) {
      if (static_cast<int64_t>(bytes.data.size() * sizeof(float)) < bytes.first_voxel + voxels) {
        __builtin_trap();
      }
      const medseg::NiftiVolume widened = medseg::widen_raw(bytes);
      if (widened.data != volume.data) __builtin_trap();
    } else if (bytes.data.size() != volume.data.size() ||
               std::memcmp(bytes.data.data(), volume.data.data(),
                           volume.data.size() * sizeof(float)) != 0) {
      __builtin_trap();
    }
  });
  return 0;
}
