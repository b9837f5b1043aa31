// The MONAI reference values of tests/data/monai/train (made by make_train_fixtures.py).
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>

#include "test_support.h"

namespace medseg::testing {

inline nlohmann::json train_fixture_manifest() {
  return nlohmann::json::parse(
      read_text(std::string(MEDSEG_SOURCE_DIR) + "/tests/data/monai/train/manifest.json"));
}

// A tensor from a manifest entry {"file": ..., "shape": [...]}.
inline at::Tensor fixture_tensor(const nlohmann::json& entry) {
  std::vector<float> values =
      read_float32_file("tests/data/monai/train/" + entry["file"].get<std::string>());
  std::vector<int64_t> shape = entry["shape"].get<std::vector<int64_t>>();
  return at::from_blob(values.data(), shape, at::kFloat).clone();
}

}  // namespace medseg::testing
