// Inference with a trained medseg model: from a NIfTI case in its own grid to a label map in that
// same grid (SPEC §9).
//
// A model is what the training job writes to <ml-root>/model: model.pth (final weights),
// best_model.pth (best validation Dice, when validation ran) and medseg_config.yaml (the resolved
// configuration the weights were trained with), either as that folder or as SageMaker's
// model.tar.gz artifact (the same files at the archive root). medseg_config.yaml supplies pixdim,
// the label scheme, the architecture, the ROI size and the sliding-window settings; `--set`
// overrides go on top.
//
// One case, CasePredictor::predict:
//   1. preprocess_case without a label (channel-first, Spacing, Orientation RAS, NormalizeIntensity
//      over the whole volume, as the training job's validation does)
//   2. sliding-window inference in eval mode under NoGradGuard, sigmoid, >= threshold
//      -> [TC, WT, ET] masks in the preprocessed grid
//   3. map_channels_to_original_grid: nearest neighbour through the two affines (undoes
//      Orientation and Spacing)
//   4. channels_to_label_values: one label map in the scheme's values
//        msd             3 where ET, else 2 where TC, else 1 where WT, else 0 (Task01 / BraTS
//                        reconstruction: ET ⊂ TC ⊂ WT)
//        brats           4 where ET, else 1 where TC, else 2 where WT, else 0
//        monai_tutorial  the tutorial defines TC = 2|3, WT = 1|2|3, ET = 2, so its ET channel is
//                        value 2 and TC-without-ET is value 3: 2 where ET, else 3 where TC, else
//                        1 where WT, else 0. This inverts the tutorial's conversion exactly, so a
//                        tutorial-trained model gives Task01 values back.
//      Channels that disagree (ET outside TC, say) resolve by that priority order.
//   5. the label map carries the source file's header: dims, affine, qform/sform codes, units and
//      description, written as uint8 (write_nifti stores the source's best affine in both sform
//      and qform; a source whose codes are both 0 comes back with codes 1 and the same affine).
//
// Errors: a missing model path, medseg_config.yaml or weights file, an unreadable archive and
// weights that do not fit the configured UNet are ClientErrors naming the file; bad images raise
// the ClientErrors of the static transforms (naming the case). A CasePredictor is not thread-safe
// (one forward pass at a time); the free functions are pure and thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config_loader.h"
#include "data/label_scheme.h"
#include "io/case_data.h"
#include "io/nifti_volume.h"

namespace medseg {

struct PredictorOptions {
  // Weights file inside the model folder (or archive); "" = best_model.pth when present, else
  // model.pth.
  std::string weights;
  // auto (CUDA when available), cpu or cuda.
  std::string device = "auto";
  // The GPU (index) when the device is CUDA: serve puts one replica on each.
  int gpu = 0;
  // `key=value` configuration overrides applied on top of the model's medseg_config.yaml.
  std::vector<std::string> overrides;
  // Also return the sigmoid probabilities (preprocessed grid).
  bool keep_probabilities = false;
  // CPU threads for preprocessing and the back-mapping; 0 = one per core.
  int threads = 0;
};

struct Prediction {
  // 3-D uint8-valued label map in the source grid, with the source's header and affine.
  NiftiVolume label_map;
  // 4-D [X, Y, Z, 3] float32 sigmoid probabilities of [TC, WT, ET] in the preprocessed grid (its
  // affine). Empty (data.size() == 0) unless PredictorOptions::keep_probabilities.
  NiftiVolume probabilities;
  std::array<int64_t, 3> preprocessed_shape{0, 0, 0};
};

class CasePredictor {
 public:
  // `model_path`: a model folder, a folder holding model.tar.gz (a SageMaker `model` channel), a
  // model.tar.gz / .tgz file (extracted with /bin/tar into a temporary folder that is removed once
  // the weights are loaded), or a .pth file (its folder is the model folder; options.weights
  // still wins). Throws ClientError naming the file for anything missing or malformed,
  // PlatformError when CUDA is requested but absent or tar cannot run.
  CasePredictor(const std::string& model_path, const PredictorOptions& options);
  ~CasePredictor();
  CasePredictor(const CasePredictor&) = delete;
  CasePredictor& operator=(const CasePredictor&) = delete;

  // Predicts one case. `image` is 3-D or 4-D (modalities in the 4th axis) as read_nifti or
  // load_case_image return it.
  Prediction predict(const NiftiVolume& image, const std::string& case_id);

  // The model's configuration with the overrides applied.
  const ResolvedConfig& config() const;
  LabelScheme label_scheme() const;
  // The weights file that was loaded (inside the temporary folder for archives: informative only).
  const std::string& weights_file() const;
  // "cpu" or "cuda:0".
  std::string device_name() const;
  // fp32, bf16 or fp16: on a GPU the precision of the model's train.amp (auto: bf16 where the
  // GPU has it), the one its validation ran in; on the CPU fp32.
  std::string precision() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Nearest-neighbour copy of `channel_count` masks from a preprocessed grid onto the source grid:
// each source voxel v takes the value of the preprocessed voxel nearest to inv(A_pre) * A_orig * v
// (clamped to the border), which undoes Orientation (exactly) and Spacing (up to resampling).
// `channels` is C-order [channel_count, X, Y, Z] of `shape` with voxel -> world `affine`; the
// result is channel-major, each channel in NIfTI order over original.spatial_shape (x fastest).
// REQUIRES: channels.size() == channel_count * prod(shape); a non-singular affine (else
// InternalError).
std::vector<uint8_t> map_channels_to_original_grid(const std::vector<uint8_t>& channels,
                                                   int64_t channel_count,
                                                   const std::array<int64_t, 3>& shape,
                                                   const Affine& affine,
                                                   const OriginalGeometry& original,
                                                   int threads = 1);

// [TC, WT, ET] masks (channel-major, `count` voxels each, nonzero = set) -> one label value per
// voxel in `scheme` (see the table at the top of this file). REQUIRES: `channels` holds 3 * count
// bytes and `values` count floats.
void channels_to_label_values(const uint8_t* channels, int64_t count, LabelScheme scheme,
                              float* values);

// Steps 3-5 above for a case whose `label` holds [TC, WT, ET] masks in its (preprocessed) grid:
// the label map in `prediction.original`'s grid with `source_header` (the header of the file the
// case was read from; its datatype becomes uint8).
NiftiVolume label_map_in_original_grid(const CaseData& prediction, LabelScheme scheme,
                                       const NiftiHeaderInfo& source_header, int threads = 1);

}  // namespace medseg
