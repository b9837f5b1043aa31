// medseg's one typed configuration. Plain structs with in-class defaults (the built-in layer);
// every leaf has a dotted name (`train.epochs`) registered in config_schema.cpp, which is the
// single place that knows names, aliases, help texts and valid ranges. validate_config() checks
// the rules that span several fields. Code receives `const Config&`.
#pragma once

#include <string>
#include <vector>

namespace medseg {

struct DataConfig {
  // Folder layout of the training channel: auto, decathlon, brats or records.
  std::string layout = "auto";
  // How label values map to [TC, WT, ET]: msd, brats or monai_tutorial.
  std::string label_scheme = "msd";
  // SageMaker channel names.
  std::string train_channel = "train";
  std::string validation_channel = "validation";
  // Share of training cases held out for validation when there is no validation channel.
  double validation_fraction = 0.2;
  // Target voxel spacing in mm (Spacing transform).
  std::vector<double> pixdim = {1.5, 1.5, 2.0};
  // Where NormalizeIntensity runs: volume (once per case) or crop (per random crop, as MONAI's
  // seed pipeline does).
  std::string normalize = "volume";
  int num_workers = 0;
  // Batches prepared ahead of the training step.
  int prefetch_batches = 4;
  // Cases larger than this (decoded, float32) are refused, in MiB.
  int max_case_mb = 2048;
};

struct AugmentConfig {
  // Random crop size in voxels (x, y, z).
  std::vector<int> roi_size = {128, 128, 64};
  // RandFlip probability and the spatial axes it flips.
  double flip_prob = 0.5;
  std::vector<int> flip_axes = {0};
  // RandScaleIntensity: v * (1 + f), f ~ U(-scale_factor, scale_factor), with this probability.
  double scale_intensity_prob = 0.5;
  double scale_intensity_factor = 0.1;
  // RandShiftIntensity: v + o, o ~ U(-shift_offset, shift_offset), with this probability.
  double shift_intensity_prob = 0.5;
  double shift_intensity_offset = 0.1;
};

struct ModelConfig {
  // MONAI UNet(spatial_dims=3, ...) arguments.
  int in_channels = 4;
  int out_channels = 3;
  std::vector<int> channels = {16, 32, 64, 128, 256};
  std::vector<int> strides = {2, 2, 2, 2};
  int num_res_units = 2;
  double dropout = 0.0;
};

struct OptimConfig {
  // adam, adamw or sgd (SGD uses Nesterov momentum).
  std::string name = "adam";
  double learning_rate = 1e-4;
  double weight_decay = 1e-5;
  double momentum = 0.99;
  std::vector<double> betas = {0.9, 0.999};
  // Clip the global gradient norm to this value; 0 = off.
  double grad_clip_norm = 0.0;
};

struct ScheduleConfig {
  // Learning-rate schedule after warm-up: constant, cosine or poly.
  std::string name = "constant";
  // Linear warm-up from 0 over this many optimiser steps.
  int warmup_steps = 0;
  // Exponent of the poly schedule.
  double poly_power = 0.9;
  // Floor of the cosine and poly schedules.
  double min_learning_rate = 0.0;
};

struct TrainConfig {
  int epochs = 100;
  // Samples per device per step.
  int batch_size = 2;
  // dice or dice_bce.
  std::string loss = "dice";
  // Mixed precision: auto (bf16 where supported, else off), bf16, fp16 or off.
  std::string amp = "auto";
  // cpu, cuda or auto.
  std::string device = "auto";
  // Seeds weight init, data order and augmentation; same seed + config on CPU = same weights.
  int seed = 0;
  int num_threads = 0;
  int steps_per_epoch = 0;
  // Validate every N epochs (and after the last); 0 = never.
  int validate_every_epochs = 1;
  // Print a progress line every N steps.
  int log_every_steps = 10;
  std::string log_level = "info";
};

struct SlidingWindowConfig {
  // Fraction of the window shared by neighbouring windows.
  double overlap = 0.25;
  // constant or gaussian blending of overlapping windows.
  std::string blend = "constant";
  // Windows per forward pass.
  int batch_size = 4;
  // Sigmoid probability above which a voxel belongs to a channel.
  double threshold = 0.5;
};

struct CheckpointConfig {
  // Empty = LocalPath of checkpointconfig.json, else <ml-root>/checkpoints.
  std::string dir = "";
  // Write a checkpoint every N optimiser steps (0 = off), every M minutes (0 = off), and at
  // every epoch end.
  int every_steps = 0;
  double every_minutes = 10.0;
  // Number of newest checkpoints kept.
  int keep = 2;
  // Resume automatically from the newest complete checkpoint.
  bool resume = true;
};

struct DistConfig {
  // auto (nccl on GPUs, gloo on CPU), nccl or gloo.
  std::string backend = "auto";
  // Worker processes per host; 0 = one per GPU (1 on CPU).
  int nproc_per_node = 0;
  // Port of the TCPStore on hosts[0].
  int master_port = 29500;
  // Gradient all-reduce bucket size in MiB.
  int bucket_mb = 25;
  // A worker silent (no step, no heartbeat) this long ends the job.
  int timeout_seconds = 1800;
  // How long to retry resolving host names.
  int dns_retry_seconds = 300;
};

struct PreprocessConfig {
  // Output: records (medseg record shards) or nifti (for inspection).
  std::string format = "records";
  // float16 or float32 image payload in records.
  std::string image_dtype = "float16";
  // Target size of a record shard file in MiB.
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

}  // namespace medseg
