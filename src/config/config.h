// medseg's one typed configuration. Plain structs with in-class defaults (the built-in layer);
// every leaf has a dotted name (`train.epochs`) registered in config_schema.cpp, which is the
// single place that knows names, aliases, help texts and valid ranges (`medseg train
// --list-config` and the README's table print them; the fields carry no second copy here).
// validate_config() checks the rules that span several fields. Code receives `const Config&`.
#pragma once

#include <string>
#include <vector>

namespace medseg {

struct DataConfig {
  std::string layout = "auto";
  std::string label_scheme = "msd";
  std::string train_channel = "train";
  std::string validation_channel = "validation";
  double validation_fraction = 0.2;
  std::vector<double> pixdim = {1.5, 1.5, 2.0};
  std::string normalize = "volume";
  int num_workers = 0;
  int prefetch_batches = 4;
  int max_case_mb = 2048;
  std::string cache_dir;
  int shuffle_buffer = 16;
  std::string device_cache = "auto";
};

struct AugmentConfig {
  std::vector<int> roi_size = {128, 128, 64};
  double flip_prob = 0.5;
  std::vector<int> flip_axes = {0};
  double scale_intensity_prob = 0.5;
  double scale_intensity_factor = 0.1;
  double shift_intensity_prob = 0.5;
  double shift_intensity_offset = 0.1;
};

struct ModelConfig {
  int in_channels = 4;
  int out_channels = 3;
  std::vector<int> channels = {16, 32, 64, 128, 256};
  std::vector<int> strides = {2, 2, 2, 2};
  int num_res_units = 2;
  double dropout = 0.0;
};

struct OptimConfig {
  std::string name = "adam";
  double learning_rate = 1e-4;
  double weight_decay = 1e-5;
  double momentum = 0.99;
  std::vector<double> betas = {0.9, 0.999};
  double grad_clip_norm = 0.0;
  bool fused = true;
};

struct ScheduleConfig {
  std::string name = "constant";
  int warmup_steps = 0;
  double poly_power = 0.9;
  double min_learning_rate = 0.0;
};

struct TrainConfig {
  int epochs = 100;
  int batch_size = 2;
  std::string loss = "dice";
  std::string amp = "auto";
  std::string device = "auto";
  bool cudnn_benchmark = true;
  bool channels_last = false;
  int seed = 0;
  int num_threads = 0;
  int steps_per_epoch = 0;
  int validate_every_epochs = 1;
  int log_every_steps = 10;
  std::string log_level = "info";
  std::string tensorboard_dir;
};

struct SlidingWindowConfig {
  double overlap = 0.25;
  std::string blend = "constant";
  int batch_size = 4;
  double threshold = 0.5;
};

struct CheckpointConfig {
  std::string dir = "";
  int every_steps = 0;
  double every_minutes = 10.0;
  int keep = 2;
  bool resume = true;
};

struct DistConfig {
  std::string backend = "auto";
  int nproc_per_node = 0;
  int master_port = 29500;
  int bucket_mb = 4;
  int timeout_seconds = 1800;
  int dns_retry_seconds = 300;
  std::string instance_group;
};

struct PreprocessConfig {
  std::string format = "records";
  std::string image_dtype = "float16";
  int shard_mb = 512;
};

struct Config {
  DataConfig data;
  AugmentConfig augment;
  ModelConfig model;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainConfig train;
  SlidingWindowConfig sliding_window;
  CheckpointConfig checkpoint;
  DistConfig dist;
  PreprocessConfig preprocess;
};

// Checks the rules that involve several fields (e.g. `model.strides` has one entry fewer than
// `model.channels`). Single-field types and ranges are checked when a value is set.
// Throws ClientError naming the keys and values.
void validate_config(const Config& config);

// About how many weights the UNet of `model` has (the down and up paths of every level), from the
// configuration alone, before anything is allocated: the memory checks use it.
double estimated_unet_weights(const ModelConfig& model);

}  // namespace medseg
