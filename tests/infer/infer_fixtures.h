// Fixtures shared by the inference tests: a tiny trained-model folder (random weights, the files a
// training job writes) and synthetic cases in an oblique, axis-permuted grid so that inference has
// to undo Orientation and Spacing.
#pragma once

#include <torch/utils.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "config/config_loader.h"
#include "data/synthetic_cases.h"
#include "io/nifti_volume.h"
#include "model/model_io.h"
#include "model/unet.h"

namespace medseg::testing {

// The configuration of the tiny network: UNet (4, 8, 16) / strides (2, 2), ROI 16^3, plus
// `overrides` ("key=value").
inline ResolvedConfig tiny_model_config(const std::vector<std::string>& overrides = {}) {
  ResolvedConfig resolved;
  for (const char* assignment :
       {"model.channels=[4, 8, 16]", "model.strides=[2, 2]", "model.num_res_units=1",
        "augment.roi_size=[16, 16, 16]", "sliding_window.batch_size=2"}) {
    apply_override(resolved, assignment);
  }
  for (const std::string& assignment : overrides) apply_override(resolved, assignment);
  validate_config(resolved.config);
  return resolved;
}

// Writes <folder>/<weights_name> (random weights, seeded) and medseg_config.yaml for `resolved`.
inline void write_tiny_model(const std::string& folder, const ResolvedConfig& resolved,
                             const std::string& weights_name = "model.pth", uint64_t seed = 0) {
  std::filesystem::create_directories(folder);
  torch::manual_seed(seed);
  UNetOptions options;
  const ModelConfig& model = resolved.config.model;
  options.channels.assign(model.channels.begin(), model.channels.end());
  options.strides.assign(model.strides.begin(), model.strides.end());
  options.num_res_units = model.num_res_units;
  UNet unet(options);
  save_model_pth(folder + "/" + weights_name, *unet, config_to_yaml(resolved));
}

// Voxel axes permuted (x -> posterior, y -> superior, z -> right-to-left), rotated 15 degrees
// about z and 10 about x, spacing 1.2 x 1.0 x 1.5 mm.
inline constexpr std::array<double, 3> kObliqueSpacing = {1.2, 1.0, 1.5};

inline Affine oblique_affine() {
  const double pi = std::acos(-1.0);
  const double a = 15.0 * pi / 180.0, b = 10.0 * pi / 180.0;
  const double rz[3][3] = {
      {std::cos(a), -std::sin(a), 0}, {std::sin(a), std::cos(a), 0}, {0, 0, 1}};
  const double rx[3][3] = {
      {1, 0, 0}, {0, std::cos(b), -std::sin(b)}, {0, std::sin(b), std::cos(b)}};
  // Columns before rotation: voxel x -> -y world, voxel y -> +z world, voxel z -> -x world.
  const double columns[3][3] = {
      {0, -kObliqueSpacing[0], 0}, {0, 0, kObliqueSpacing[1]}, {-kObliqueSpacing[2], 0, 0}};
  Affine affine = identity_affine();
  for (int column = 0; column < 3; ++column) {
    double rotated_x[3];
    for (int r = 0; r < 3; ++r) {
      rotated_x[r] = 0;
      for (int k = 0; k < 3; ++k) rotated_x[r] += rx[r][k] * columns[column][k];
    }
    for (int r = 0; r < 3; ++r) {
      affine[r][column] = 0;
      for (int k = 0; k < 3; ++k) affine[r][column] += rz[r][k] * rotated_x[k];
    }
  }
  affine[0][3] = 10.0;
  affine[1][3] = -20.0;
  affine[2][3] = 30.0;
  return affine;
}

// A synthetic case (msd values) moved into the oblique grid, with sform and qform codes set.
inline SyntheticCase oblique_case(const std::array<int, 3>& shape, uint64_t seed, int index) {
  SyntheticCase generated = make_synthetic_case(shape, seed, index);
  for (NiftiVolume* volume : {&generated.image, &generated.label}) {
    volume->affine = oblique_affine();
    volume->header.sform_code = 2;  // aligned
    volume->header.qform_code = 1;  // scanner
  }
  return generated;
}

}  // namespace medseg::testing
