// Label schemes: how a segmentation's integer values become medseg's three target channels
// [TC, WT, ET] (tumour core, whole tumour, enhancing tumour).
//
//   msd             Decathlon Task01 (1 edema, 2 non-enhancing tumour, 3 enhancing tumour):
//                   TC = 2|3, WT = 1|2|3, ET = 3.
//   brats           BraTS 2018-2021 (1 necrotic core, 2 edema, 4 enhancing tumour):
//                   TC = 1|4, WT = 1|2|4, ET = 4 (as MONAI's
//                   ConvertToMultiChannelBasedOnBratsClasses).
//   monai_tutorial  the mapping MONAI's brats_segmentation_3d tutorial applies to Task01:
//                   TC = 2|3, WT = 1|2|3, ET = 2 (ET is known to be the wrong class; offered only
//                   to compare with models trained by the tutorial).
//
// Contract: every voxel value must be one of the scheme's values (0 included); anything else,
// non-integer values and NaN included, raises ClientError naming the case, the offending values
// with their voxel counts, and the values the scheme allows. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <string>

namespace medseg {

enum class LabelScheme { kMsd, kBrats, kMonaiTutorial };

// "msd", "brats" or "monai_tutorial" -> scheme; anything else raises ClientError naming `name`
// and the valid names.
LabelScheme parse_label_scheme(const std::string& name);

const char* label_scheme_name(LabelScheme scheme);

// Converts `count` label values to channels: channel k of value i is written to
// channels[k * count + i] (TC, then WT, then ET), each 0 or 1.
// REQUIRES: `channels` holds 3 * count bytes. Throws ClientError (see above) naming `case_id`;
// `channels` is then left partly written.
void labels_to_channels(const float* values, int64_t count, LabelScheme scheme,
                        const std::string& case_id, uint8_t* channels);

// The same check as labels_to_channels, writing each value as one byte (0..4) to `bytes` instead
// of three channels: a nearest-neighbour resampling picks one source voxel for all channels, so
// resampling these bytes and then mapping them (label_bytes_to_channels) gives the same channels
// as resampling the channels, from a third of the bytes.
// REQUIRES: `bytes` holds count bytes. Throws ClientError as labels_to_channels does.
void check_label_values(const float* values, int64_t count, LabelScheme scheme,
                        const std::string& case_id, uint8_t* bytes);

// The same check for the bytes of a uint8 label file (NiftiVolume::raw_uint8): each allowed
// value is already the byte check_label_values would write for it. Throws as labels_to_channels.
void check_label_bytes(const uint8_t* values, int64_t count, LabelScheme scheme,
                       const std::string& case_id);

// Channels (laid out as labels_to_channels writes them) of `count` bytes that check_label_values
// wrote. REQUIRES: `channels` holds 3 * count bytes.
void label_bytes_to_channels(const uint8_t* bytes, int64_t count, LabelScheme scheme,
                             uint8_t* channels);

}  // namespace medseg
