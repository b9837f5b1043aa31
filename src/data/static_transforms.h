// The static transforms of SPEC §4, run once per case, numerically matching MONAI 1.4's
//   LoadImaged -> EnsureChannelFirstd -> labels to [TC, WT, ET] -> Spacingd(bilinear, nearest)
//   -> Orientationd("RAS") -> NormalizeIntensityd(nonzero=True, channel_wise=True)
// (see tests/data/monai/NOTES.md for MONAI's exact semantics and the fixtures that pin them).
//
// Contract:
//  - Every function works on CaseData in place (or builds one) and keeps its invariants:
//    image.size() == image_channels * voxels, label.size() == label_channels * voxels, both
//    C-order [C, X, Y, Z], `affine` maps (x, y, z) of this grid to world millimetres.
//  - Resampling is computed in float64 and follows the arithmetic of MONAI's resampler
//    (torch affine_grid + grid_sample, align_corners=False, border padding) step by step, so that
//    nearest-neighbour ties at exact .5 positions fall as in MONAI; images come out within ~1e-12
//    of MONAI before the float32 cast.
//  - Bad input raises ClientError naming the case and what was expected; a violated REQUIRES is an
//    InternalError. Functions are thread-safe on distinct CaseData; `threads` > 1 parallelises
//    inside one case with std::thread (results do not depend on the thread count).
//  - No LibTorch here: these loops are plain C++ over contiguous buffers.
//  - `buffers` (optional, the calling thread's pools): new image-sized buffers are taken from it
//    and the ones a step replaces are given back, so that case after case nothing image-sized is
//    allocated (util/buffer_pool.h). Results do not depend on it.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "data/label_scheme.h"
#include "io/case_data.h"
#include "io/nifti_volume.h"
#include "util/error.h"

namespace medseg {

struct CaseBuffers;

struct StaticTransformOptions {
  // Target voxel spacing in mm (SPEC default). Axes whose current spacing is within 1e-3 mm of
  // the target keep their current spacing, as MONAI's Spacing does.
  std::array<double, 3> pixdim{1.5, 1.5, 2.0};
  // How label values map to [TC, WT, ET].
  LabelScheme label_scheme = LabelScheme::kMsd;
  // Modalities an image must have (4 for BraTS / Task01); 0 accepts any count.
  int64_t expected_channels = 4;
  // An image channel that is zero everywhere usually means a missing or broken modality, so it is
  // refused unless this is set.
  bool allow_empty_channels = false;
  // Run NormalizeIntensity(nonzero, channel-wise) on the whole volume at the end of the chain.
  // Off when normalisation is left to after the random crop (the seed pipeline's order).
  bool normalize = true;
  // Worker threads inside one case (1 = the calling thread only).
  int threads = 1;
  // The largest preprocessed case (image float32 + labels) accepted, in bytes: data.max_case_mb
  // bounds the decoded file and, through this, what Spacing makes of it.
  int64_t max_output_bytes = int64_t{8} << 30;
};

// Loading + EnsureChannelFirst + labels to channels. `image` is 3-D (one channel) or 4-D with the
// modalities in its 4th axis; `label` (may be null: unlabelled case) is 3-D with the image's
// spatial shape and an affine equal to the image's within 1e-3 (mm for the translation).
// Records `original` (the source shape and affine). Throws ClientError naming `case_id` for a
// wrong modality count, disagreeing shapes or affines, an all-zero channel (unless allowed) or
// label values outside the scheme.
CaseData to_channel_first(const NiftiVolume& image, const NiftiVolume* label,
                          const StaticTransformOptions& options, const std::string& case_id,
                          CaseBuffers* buffers = nullptr);

// What Spacing did to a case; kept for tests and logs.
struct SpacingResult {
  bool resampled = false;                  // false: the grid already matched (MONAI's no-op)
  std::array<double, 3> output_spacing{};  // per axis, after the 1e-3 mm rule
};

// MONAI Spacing(pixdim, diagonal=False, mode=(bilinear, nearest), padding border,
// align_corners=False, dtype float64): keeps the rotation/flips of the voxel axes, output shape
// = round-half-even(extent of the corner voxel centres in the new grid) + 1, the first input
// corner that is minimal in the new grid keeps its world position (voxel 0 in the usual case),
// images trilinear, label channels nearest. REQUIRES: a non-singular affine (else ClientError).
// Voxel spacings outside [kMinSpacingMm, kMaxSpacingMm] are broken headers (ClientError).
inline constexpr double kMinSpacingMm = 1e-3;
inline constexpr double kMaxSpacingMm = 1e3;

// Refuses (ClientError naming the case) a resampled case larger than `max_output_bytes`.
SpacingResult spacing(CaseData& data, const std::array<double, 3>& pixdim, int threads = 1,
                      int64_t max_output_bytes = int64_t{8} << 30, CaseBuffers* buffers = nullptr);

// MONAI Orientation("RAS"): nibabel's io_orientation picks, per voxel axis, the closest world
// axis and its sign; voxel axes are flipped, then transposed, and the affine follows.
void orient_ras(CaseData& data, int threads = 1, CaseBuffers* buffers = nullptr);

// MONAI NormalizeIntensity(nonzero=True, channel_wise=True) on float32 values: per channel, over
// voxels != 0, v -> (v - mean) / std with the population std (0 -> 1); zeros stay 0 and an
// all-zero channel is left unchanged.
void normalize_intensity_nonzero(CaseData& data);

// preprocess_case's refusal of an image that is not known_finite whose values, as the chain
// computes them, hold a NaN or an infinity (a resampled image: any such voxel the resampling
// reads, since its weight times NaN or Inf is not finite). Names the case and the volume; the
// caller, who knows the files, names the file.
class NonFiniteImageError : public ClientError {
 public:
  NonFiniteImageError(const std::string& message, int64_t volume)
      : ClientError(message), volume(volume) {}
  int64_t volume;
};

// Throws NonFiniteImageError for the first NaN or infinity among `channels` channels of `voxels`
// values each.
void check_finite_channels(const float* values, int64_t voxels, int64_t channels,
                           const std::string& case_id);

// The whole static chain in SPEC order (channel-first, labels, Spacing, Orientation, then
// NormalizeIntensity when options.normalize). Throws as to_channel_first and spacing do. `image`
// may hold its voxels in place (first_voxel), as raw int16 too (raw_int16): the same result.
CaseData preprocess_case(const NiftiVolume& image, const NiftiVolume* label,
                         const StaticTransformOptions& options, const std::string& case_id,
                         CaseBuffers* buffers = nullptr);

}  // namespace medseg
