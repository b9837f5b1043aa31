// What a training checkpoint holds and how it is read back: the model's parameters, the
// optimiser's state, the CPU random generator and the metadata of where training stands. The
// file format around it (header, CRC, atomic write, pruning) is CheckpointStore's.
//
// Reading is strict: metadata that is not JSON, of another format version, or lacks a key or
// holds a value of the wrong type or range, a parameter that is missing or of another shape, or
// optimiser state that does not fit the model is refused with a ClientError naming the file and
// the key, never trusted.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace medseg {

struct CheckpointMeta {
  static constexpr int kFormatVersion = 1;

  std::string reason;             // "epoch", "steps", "minutes", "stop"
  int64_t epoch = 0;              // the epoch in progress, 0-based
  int64_t next_step = 0;          // the step of that epoch that runs next
  int64_t global_step = 0;        // optimiser steps taken
  int64_t world_size = 1;         // ranks that wrote it (the batches depend on it)
  std::string compatibility_key;  // JSON of the model and data settings that must not change
  std::string config_yaml;        // the resolved configuration, for people
  nlohmann::json history = nlohmann::json::array();  // metrics.jsonl entries so far
  double best_mean_dice = -1.0;
  int64_t best_epoch = -1;
  double loss_scale = 1.0;
  int64_t loss_scale_good_steps = 0;
  double last_loss = 0.0;

  std::string to_json() const;
  // Parses and validates `text`, the metadata of the checkpoint at `path` (named in errors).
  static CheckpointMeta parse(const std::string& text, const std::string& path);
};

// Writes the model's parameters ("model/<name>"), the optimiser ("optimizer"), the CPU generator
// ("rng/cpu") and `meta` ("meta") into `archive`.
void write_training_state(torch::serialize::OutputArchive& archive, const torch::nn::Module& model,
                          const torch::optim::Optimizer& optimizer, const CheckpointMeta& meta);

// The metadata of an archive written by write_training_state (validated; see above).
CheckpointMeta read_checkpoint_meta(torch::serialize::InputArchive& archive,
                                    const std::string& path);

// Restores the model's parameters, the optimiser's state (keeping its configured options, see
// load_optimizer_state) and the CPU generator from `archive`. Checks every parameter's presence
// and shape before changing anything.
void read_training_state(torch::serialize::InputArchive& archive, const std::string& path,
                         torch::nn::Module& model, torch::optim::Optimizer& optimizer);

// Refuses (ClientError naming the file) a position this job cannot reach: a CRC-valid file can
// still carry a hand-edited or damaged epoch (10^18) or step. Requires global_step = epoch x
// steps_per_epoch + next_step and next_step <= steps_per_epoch.
void check_position(const CheckpointMeta& meta, int64_t steps_per_epoch, const std::string& path);

}  // namespace medseg
