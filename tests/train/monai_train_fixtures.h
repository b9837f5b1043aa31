// MONAI's reference values for the losses, the Dice metric and sliding-window inference: the
// committed ones of tests/data/monai/train, or fresh ones that the project's MONAI writes during a
// test (both made by tests/data/monai/make_train_fixtures.py, same layout).
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>

#include "test_support.h"

namespace medseg::testing {

inline const std::string kTrainFixtureDir =
    std::string(MEDSEG_SOURCE_DIR) + "/tests/data/monai/train";

inline nlohmann::json train_fixture_manifest(const std::string& dir = kTrainFixtureDir) {
  return nlohmann::json::parse(read_text(dir + "/manifest.json"));
}

// A tensor from a manifest entry {"file": ..., "shape": [...]} of the fixture set in `dir`.
inline at::Tensor fixture_tensor(const nlohmann::json& entry,
                                 const std::string& dir = kTrainFixtureDir) {
  const std::string bytes = read_text(dir + "/" + entry["file"].get<std::string>());
  at::Tensor tensor = at::empty(entry["shape"].get<std::vector<int64_t>>(), at::kFloat);
  if (bytes.size() != static_cast<size_t>(tensor.numel()) * sizeof(float)) {
    throw std::runtime_error("fixture " + entry["file"].get<std::string>() + " has " +
                             std::to_string(bytes.size()) + " bytes, not " +
                             std::to_string(tensor.numel()) + " float32 values");
  }
  std::memcpy(tensor.data_ptr<float>(), bytes.data(), bytes.size());
  return tensor;
}

// Writes fresh reference values into `dir` with the project's MONAI: inputs and (with
// random_shapes) shapes, windows and overlaps drawn from `seed`. Fails the test if it cannot.
inline void make_live_train_fixtures(const std::string& dir, int seed) {
  const CommandResult result =
      run_python("tests/data/monai/make_train_fixtures.py --random-shapes --seed " +
                 std::to_string(seed) + " --out " + dir);
  ASSERT_EQ(result.exit_code, 0) << result.output;
}

// Runs `check(dir)` on fresh reference values for each of `seeds` (make_live_train_fixtures).
inline void check_against_live_monai(std::initializer_list<int> seeds,
                                     const std::function<void(const std::string&)>& check) {
  for (const int seed : seeds) {
    TempDir dir;
    make_live_train_fixtures(dir.path(), seed);
    if (::testing::Test::HasFatalFailure()) return;
    SCOPED_TRACE("seed " + std::to_string(seed));
    check(dir.path());
  }
}

}  // namespace medseg::testing
