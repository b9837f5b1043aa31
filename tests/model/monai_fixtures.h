// Readers for the MONAI 1.4 UNet fixtures under tests/data/monai/unet (see NOTES.md there):
// configs from manifest.json, float32 arrays, and weights.bin/weights.json state dicts.
#pragma once

#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/unet.h"

namespace medseg::testing {

inline std::string monai_fixture(const std::string& relative) {
  return std::string(MEDSEG_SOURCE_DIR) + "/tests/data/monai/" + relative;
}

inline nlohmann::json read_fixture_json(const std::string& relative) {
  std::ifstream stream(monai_fixture(relative));
  if (!stream) throw std::runtime_error("cannot open fixture " + monai_fixture(relative));
  return nlohmann::json::parse(stream);
}

// The manifest's "unet" section.
inline nlohmann::json unet_manifest() { return read_fixture_json("manifest.json").at("unet"); }

inline UNetOptions fixture_options(const std::string& config_name) {
  const nlohmann::json config = unet_manifest().at("configs").at(config_name).at("config");
  UNetOptions options;
  options.in_channels = config.at("in_channels").get<int64_t>();
  options.out_channels = config.at("out_channels").get<int64_t>();
  options.channels = config.at("channels").get<std::vector<int64_t>>();
  options.strides = config.at("strides").get<std::vector<int64_t>>();
  options.num_res_units = config.at("num_res_units").get<int64_t>();
  return options;
}

inline std::string read_fixture_bytes(const std::string& relative) {
  std::ifstream stream(monai_fixture(relative), std::ios::binary);
  if (!stream) throw std::runtime_error("cannot open fixture " + monai_fixture(relative));
  return std::string(std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>());
}

// A little-endian float32 file (this machine is little-endian) as a tensor of `shape`.
inline torch::Tensor read_f32(const std::string& relative, std::vector<int64_t> shape) {
  const std::string bytes = read_fixture_bytes(relative);
  torch::Tensor tensor = torch::empty(shape, torch::kFloat32);
  if (static_cast<size_t>(tensor.numel()) * sizeof(float) != bytes.size()) {
    throw std::runtime_error("fixture " + relative + " has the wrong size");
  }
  std::memcpy(tensor.data_ptr<float>(), bytes.data(), bytes.size());
  return tensor;
}

inline torch::Tensor fixture_input() {
  const nlohmann::json input = unet_manifest().at("input");
  return read_f32(input.at("file").get<std::string>(), input.at("shape"));
}

inline torch::Tensor fixture_output(const std::string& config_name) {
  const nlohmann::json output = unet_manifest().at("configs").at(config_name).at("output");
  return read_f32(output.at("file").get<std::string>(), output.at("shape"));
}

// Copies MONAI's weights (weights.bin, laid out by weights.json) into `unet` by state-dict name.
inline void load_fixture_weights(const std::string& config_name, UNetImpl& unet) {
  const nlohmann::json layout = read_fixture_json("unet/" + config_name + "/weights.json");
  const std::string bytes = read_fixture_bytes("unet/" + config_name + "/weights.bin");
  auto parameters = unet.named_parameters();
  ASSERT_EQ(parameters.size(), layout.at("tensors").size());
  torch::NoGradGuard no_grad;
  for (const auto& entry : layout.at("tensors")) {
    const std::string name = entry.at("name").get<std::string>();
    const torch::Tensor* parameter = parameters.find(name);
    ASSERT_NE(parameter, nullptr) << "C++ UNet has no parameter " << name;
    const std::vector<int64_t> shape = entry.at("shape");
    ASSERT_EQ(parameter->sizes().vec(), shape) << name;
    const size_t offset = entry.at("offset").get<size_t>();
    ASSERT_LE(offset + parameter->numel() * sizeof(float), bytes.size()) << name;
    std::memcpy(parameter->data_ptr<float>(), bytes.data() + offset,
                parameter->numel() * sizeof(float));
  }
}

// max |actual - expected| / max |expected|.
inline double max_relative_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  return ((actual - expected).abs().max() / expected.abs().max()).item<double>();
}

}  // namespace medseg::testing
