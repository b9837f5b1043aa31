// Synthetic BraTS-like cases (what `medseg synth` writes): a skull-stripped brain-shaped volume
// with one tumour made of the three Task01 compartments (1 edema, 2 non-enhancing tumour,
// 3 enhancing tumour), which the four modalities (FLAIR, T1w, T1gd, T2w) show with different
// contrasts, so a network can learn to separate them. Deterministic for (seed, case index),
// whatever the thread count.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "io/nifti_volume.h"

namespace medseg {

struct SyntheticCase {
  NiftiVolume image;  // 4-D float32, dim = {x, y, z, 4}, zeros outside the brain
  NiftiVolume label;  // 3-D, values 0..3 (Task01 / "msd" scheme)
};

SyntheticCase make_synthetic_case(const std::array<int, 3>& shape, uint64_t seed, int case_index);

struct SynthOptions {
  std::string out_dir;
  int cases = 8;
  std::array<int, 3> shape = {240, 240, 155};  // Task01's size
  uint64_t seed = 0;
  int threads = 0;  // 0 = one per core
};

// Writes a Decathlon Task01 layout: dataset.json, imagesTr/BRATS_NNN.nii.gz, labelsTr/... .
// Returns the number of cases written.
int write_synthetic_dataset(const SynthOptions& options);

}  // namespace medseg
