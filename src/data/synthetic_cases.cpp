#include "data/synthetic_cases.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

constexpr int kModalities = 4;  // FLAIR, T1w, T1gd, T2w, as in Task01

// SplitMix64: a counter-based generator, so each voxel's noise depends only on its index.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double uniform(uint64_t key) { return static_cast<double>(mix(key) >> 11) * 0x1.0p-53; }

// Approximately standard normal (Irwin-Hall with four terms, variance matched).
double normal(uint64_t key) {
  double sum = 0;
  for (uint64_t k = 0; k < 4; ++k) sum += uniform(key * 4 + k);
  return (sum - 2.0) * std::sqrt(3.0);
}

struct CaseShape {
  // Brain ellipsoid centre and radii (voxels) and the tumour's centre and radius.
  double brain_center[3], brain_radius[3];
  double tumour_center[3], tumour_radius;
  double tumour_stretch[3];    // anisotropy of the tumour
  double surface_wobble[3];    // low-frequency deformation of the brain surface
  double tissue_frequency[3];  // grey/white matter pattern
  double intensity_scale;      // scanner gain
};

CaseShape draw_case_shape(const std::array<int, 3>& shape, uint64_t case_key) {
  auto draw = [case_key](uint64_t n, double low, double high) {
    return low + (high - low) * uniform(case_key + 1000003ULL * (n + 1));
  };
  CaseShape c{};
  const double brain_fraction[3] = {0.36, 0.42, 0.40};
  for (int a = 0; a < 3; ++a) {
    c.brain_center[a] = (shape[a] - 1) * draw(a, 0.47, 0.53);
    c.brain_radius[a] = shape[a] * brain_fraction[a] * draw(3 + a, 0.92, 1.05);
    c.surface_wobble[a] = draw(6 + a, 0.0, 6.283);
    c.tissue_frequency[a] = draw(9 + a, 2.0, 5.0);
    c.tumour_stretch[a] = draw(12 + a, 0.8, 1.25);
  }
  const double min_radius = std::min({c.brain_radius[0], c.brain_radius[1], c.brain_radius[2]});
  c.tumour_radius = min_radius * draw(15, 0.22, 0.34);
  // Tumour centre anywhere within half the brain radius of its centre.
  for (int a = 0; a < 3; ++a) {
    c.tumour_center[a] = c.brain_center[a] + c.brain_radius[a] * draw(16 + a, -0.45, 0.45);
  }
  c.intensity_scale = draw(19, 600.0, 1400.0);
  return c;
}

}  // namespace

SyntheticCase make_synthetic_case(const std::array<int, 3>& shape, uint64_t seed, int case_index) {
  const uint64_t case_key = mix(mix(seed) ^ (static_cast<uint64_t>(case_index) + 1) * 7919ULL);
  const CaseShape c = draw_case_shape(shape, case_key);
  const int64_t nx = shape[0], ny = shape[1], nz = shape[2];
  const int64_t voxels = nx * ny * nz;

  SyntheticCase result;
  result.image.ndim = 4;
  result.image.dim = {nx, ny, nz, kModalities};
  result.image.data.assign(static_cast<size_t>(voxels * kModalities), 0.0f);
  result.label.ndim = 3;
  result.label.dim = {nx, ny, nz, 1};
  result.label.data.assign(static_cast<size_t>(voxels), 0.0f);
  // Task01 stores LPS-like axes (x and y flipped); 1 mm isotropic voxels.
  Affine affine = identity_affine();
  affine[0][0] = -1.0;
  affine[1][1] = -1.0;
  affine[0][3] = nx / 2.0;
  affine[1][3] = ny / 2.0;
  affine[2][3] = -nz / 2.0;
  result.image.affine = result.label.affine = affine;

  // Mean intensity of each compartment per modality: background tissue varies with a grey/white
  // matter pattern; edema is bright on FLAIR and T2, the enhancing rim on T1gd, the
  // non-enhancing core on T2 and dark on T1.
  //                       FLAIR  T1w   T1gd  T2w
  const double edema[4] = {1.00, 0.48, 0.52, 0.90};
  const double core[4] = {0.62, 0.28, 0.34, 1.15};
  const double enhancing[4] = {0.78, 0.55, 1.25, 0.70};
  for (int64_t z = 0; z < nz; ++z) {
    for (int64_t y = 0; y < ny; ++y) {
      for (int64_t x = 0; x < nx; ++x) {
        const double p[3] = {static_cast<double>(x), static_cast<double>(y),
                             static_cast<double>(z)};
        double brain_distance = 0;
        double direction[3];
        for (int a = 0; a < 3; ++a) {
          direction[a] = (p[a] - c.brain_center[a]) / c.brain_radius[a];
          brain_distance += direction[a] * direction[a];
        }
        brain_distance = std::sqrt(brain_distance);
        const double wobble = 0.05 * std::sin(3 * direction[0] + c.surface_wobble[0]) *
                                  std::cos(2 * direction[1] + c.surface_wobble[1]) +
                              0.03 * std::sin(4 * direction[2] + c.surface_wobble[2]);
        if (brain_distance > 1.0 + wobble) continue;  // zeros outside the brain

        double tumour_distance = 0;
        for (int a = 0; a < 3; ++a) {
          const double d = (p[a] - c.tumour_center[a]) / (c.tumour_radius * c.tumour_stretch[a]);
          tumour_distance += d * d;
        }
        tumour_distance = std::sqrt(tumour_distance);
        int label = 0;
        if (tumour_distance < 0.45) {
          label = 2;
        } else if (tumour_distance < 0.7) {
          label = 3;
        } else if (tumour_distance < 1.6) {
          label = 1;
        }
        const double tissue = 0.5 +
                              0.25 * std::sin(c.tissue_frequency[0] * direction[0] * 3.1416) *
                                  std::sin(c.tissue_frequency[1] * direction[1] * 3.1416) +
                              0.25 * std::cos(c.tissue_frequency[2] * direction[2] * 3.1416);
        const int64_t index = x + nx * (y + ny * z);
        const double bias = 1.0 + 0.1 * direction[0] - 0.05 * direction[2];
        for (int m = 0; m < kModalities; ++m) {
          double mean = 0;
          switch (label) {
            case 0:
              mean = (m == 3 ? 0.35 : 0.5) + (m == 1 ? 0.25 : 0.15) * tissue;
              break;
            case 1:
              mean = edema[m];
              break;
            case 2:
              mean = core[m];
              break;
            default:
              mean = enhancing[m];
              break;
          }
          const uint64_t noise_key =
              case_key ^ (static_cast<uint64_t>(index) * kModalities + m) * 0x2545F4914F6CDD1DULL;
          const double value = (mean + 0.06 * normal(noise_key)) * bias * c.intensity_scale;
          result.image.data[static_cast<size_t>(index + voxels * m)] =
              static_cast<float>(std::max(value, 1.0));
        }
        result.label.data[static_cast<size_t>(index)] = static_cast<float>(label);
      }
    }
  }
  return result;
}

int write_synthetic_dataset(const SynthOptions& options) {
  if (options.cases < 1) throw ClientError("synth: --cases must be at least 1");
  for (int axis = 0; axis < 3; ++axis) {
    if (options.shape[axis] < 8 || options.shape[axis] > 1024) {
      throw ClientError("synth: --shape " + std::to_string(options.shape[axis]) +
                        ": every size must be in [8, 1024]");
    }
  }
  const fs::path root(options.out_dir);
  std::error_code error;
  fs::create_directories(root / "imagesTr", error);
  if (error)
    throw PlatformError("cannot create " + (root / "imagesTr").string() + ": " + error.message());
  fs::create_directories(root / "labelsTr", error);
  if (error)
    throw PlatformError("cannot create " + (root / "labelsTr").string() + ": " + error.message());

  auto case_name = [](int index) {
    char name[32];
    std::snprintf(name, sizeof(name), "BRATS_%03d.nii.gz", index + 1);
    return std::string(name);
  };
  const int threads = std::max(
      1, std::min(options.cases, options.threads > 0
                                     ? options.threads
                                     : static_cast<int>(std::thread::hardware_concurrency())));
  std::atomic<int> next_case{0};
  std::vector<std::exception_ptr> failures(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        for (int index = next_case++; index < options.cases; index = next_case++) {
          const SyntheticCase generated = make_synthetic_case(options.shape, options.seed, index);
          write_nifti((root / "imagesTr" / case_name(index)).string(), generated.image,
                      NiftiDataType::kFloat32);
          write_nifti((root / "labelsTr" / case_name(index)).string(), generated.label,
                      NiftiDataType::kUint8);
        }
      } catch (...) {
        failures[t] = std::current_exception();
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (const std::exception_ptr& failure : failures) {
    if (failure) std::rethrow_exception(failure);
  }

  nlohmann::json dataset = {
      {"name", "BRATS-synthetic"},
      {"description", "Synthetic BraTS-like cases written by medseg synth"},
      {"tensorImageSize", "4D"},
      {"modality", {{"0", "FLAIR"}, {"1", "T1w"}, {"2", "t1gd"}, {"3", "T2w"}}},
      {"labels",
       {{"0", "background"},
        {"1", "edema"},
        {"2", "non-enhancing tumor"},
        {"3", "enhancing tumour"}}},
      {"numTraining", options.cases},
      {"numTest", 0},
      {"test", nlohmann::json::array()},
  };
  nlohmann::json training = nlohmann::json::array();
  for (int index = 0; index < options.cases; ++index) {
    training.push_back(
        {{"image", "./imagesTr/" + case_name(index)}, {"label", "./labelsTr/" + case_name(index)}});
  }
  dataset["training"] = training;
  write_file_atomically((root / "dataset.json").string(), dataset.dump(4) + "\n");
  return options.cases;
}

}  // namespace medseg
