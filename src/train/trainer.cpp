#include "train/trainer.h"

#include <ATen/ATen.h>
#include <torch/types.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/batch_loader.h"
#include "data/case_store.h"
#include "infer/sliding_window.h"
#include "model/model_io.h"
#include "model/unet.h"
#include "train/dice_metric.h"
#include "train/loss_scaler.h"
#include "train/losses.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/json_file.h"
#include "util/log.h"
#include "util/random.h"
#include "util/torch_compat.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double seconds) {
  const int64_t total = static_cast<int64_t>(std::max(0.0, seconds));
  char text[32];
  std::snprintf(text, sizeof(text), "%02lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  return text;
}

const char* const kChannelNames[] = {"tc", "wt", "et"};

// The precision the job trains in, resolved from train.amp and the device.
struct Precision {
  bool autocast = false;
  at::ScalarType dtype = at::kFloat;
  bool loss_scaling = false;
  std::string name = "off";
};

Precision resolve_precision(const std::string& amp, const at::Device& device) {
  Precision precision;
  if (amp == "off" || (amp == "auto" && !device.is_cuda())) return precision;
  if (!device.is_cuda()) {
    throw ClientError("train.amp = '" + amp + "' needs a CUDA device; this job trains on the CPU "
                      "(use amp: off or auto)");
  }
  precision.autocast = true;
  if (amp == "fp16") {
    precision.dtype = at::kHalf;
    precision.loss_scaling = true;
    precision.name = "fp16";
  } else {  // bf16, or auto on CUDA
    precision.dtype = at::kBFloat16;
    precision.name = "bf16";
  }
  return precision;
}

}  // namespace

struct Trainer::State {
  ResolvedConfig resolved;
  JobEnvironment environment;
  const std::atomic<bool>* stop_requested = nullptr;
  const Config& config() const { return resolved.config; }

  at::Device device = at::Device(at::kCPU);
  Precision precision;
  UNet model{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<DynamicLossScaler> scaler;
  std::vector<CaseData> train_cases;
  std::vector<CaseData> validation_cases;
  std::unique_ptr<BatchLoader> loader;
  int64_t steps_per_epoch = 1;
  int64_t total_steps = 1;
  int64_t global_step = 0;
  std::ofstream metrics_log;
  nlohmann::json history = nlohmann::json::array();
  TrainSummary summary;

  bool stop() const { return stop_requested && stop_requested->load(); }
  void set_up_device();
  void load_data();
  void build_model();
  double train_step(const Batch& batch);
  DiceAccumulator validate();
  void record(nlohmann::json entry);
  void write_model(const std::string& file_name);
  void write_final_outputs();
};

void Trainer::State::set_up_device() {
  const std::string& requested = config().train.device;
  const bool cuda = torch::cuda::is_available();
  if (requested == "cuda" && !cuda) {
    throw PlatformError("train.device = 'cuda' but no CUDA device is available to this process");
  }
  device = (requested == "cuda" || (requested == "auto" && cuda)) ? at::Device(at::kCUDA, 0)
                                                                  : at::Device(at::kCPU);
  precision = resolve_precision(config().train.amp, device);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = config().train.num_threads > 0 ? config().train.num_threads : cores;
  at::set_num_threads(threads);
  torch::manual_seed(static_cast<uint64_t>(config().train.seed));
  spdlog::info("device {}, precision {}, {} compute threads", device.str(), precision.name,
               threads);
}

void Trainer::State::load_data() {
  const DataConfig& data = config().data;
  const auto started = Clock::now();
  const bool normalize_volumes = data.normalize == "volume";
  std::vector<CaseData> cases =
      load_channel_cases(environment, data.train_channel, config(), normalize_volumes);
  if (cases.empty()) throw ClientError("channel '" + data.train_channel + "' holds no cases");

  // Validation cases: the validation channel, else a seeded share of the training cases.
  const bool has_validation_channel =
      environment.channels.count(data.validation_channel) != 0 ||
      fs::exists(environment.paths.channel_dir(data.validation_channel));
  if (has_validation_channel) {
    validation_cases =
        load_channel_cases(environment, data.validation_channel, config(), /*normalize=*/true);
    train_cases = std::move(cases);
  } else if (data.validation_fraction > 0.0 && cases.size() >= 2) {
    const int64_t total = static_cast<int64_t>(cases.size());
    const int64_t held_out = std::clamp<int64_t>(
        std::llround(data.validation_fraction * static_cast<double>(total)), 1, total - 1);
    const std::vector<int64_t> order =
        epoch_case_order(total, total, static_cast<uint64_t>(config().train.seed), 0xA11DA7E);
    std::vector<bool> is_validation(static_cast<size_t>(total), false);
    for (int64_t i = 0; i < held_out; ++i) is_validation[static_cast<size_t>(order[i])] = true;
    for (int64_t i = 0; i < total; ++i) {
      (is_validation[static_cast<size_t>(i)] ? validation_cases : train_cases)
          .push_back(std::move(cases[static_cast<size_t>(i)]));
    }
  } else {
    train_cases = std::move(cases);
  }
  // Validation always sees whole normalised volumes, also when training normalises crops.
  if (!normalize_volumes) {
    for (CaseData& validation_case : validation_cases) normalize_intensity_nonzero(validation_case);
  }
  for (const std::vector<CaseData>* set : {&train_cases, &validation_cases}) {
    for (const CaseData& loaded : *set) {
      if (loaded.label_channels != config().model.out_channels ||
          loaded.image_channels != config().model.in_channels) {
        throw ClientError("case " + loaded.case_id + " has " +
                          std::to_string(loaded.image_channels) + " image and " +
                          std::to_string(loaded.label_channels) +
                          " label channels; the model expects model.in_channels = " +
                          std::to_string(config().model.in_channels) +
                          " and model.out_channels = " +
                          std::to_string(config().model.out_channels));
      }
    }
  }
  spdlog::info("data: {} training and {} validation cases preprocessed in {:.1f} s, {:.0f} MiB in "
               "memory",
               train_cases.size(), validation_cases.size(), seconds_since(started),
               static_cast<double>(case_bytes(train_cases) + case_bytes(validation_cases)) /
                   (1 << 20));
}

void Trainer::State::build_model() {
  model = UNet(unet_options_from_config(config().model));
  model->to(device);
  optimizer = make_optimizer(config().optim, model->parameters());
  scaler = std::make_unique<DynamicLossScaler>(precision.loss_scaling);
  spdlog::info("model: MONAI UNet channels [{}] strides [{}] res units {}, {} parameters",
               fmt::join(config().model.channels, ", "), fmt::join(config().model.strides, ", "),
               config().model.num_res_units, count_parameters(*model));
}

double Trainer::State::train_step(const Batch& batch) {
  const std::vector<int64_t> image_shape = {batch.batch_size, batch.image_channels, batch.shape[0],
                                            batch.shape[1], batch.shape[2]};
  const std::vector<int64_t> label_shape = {batch.batch_size, batch.label_channels, batch.shape[0],
                                            batch.shape[1], batch.shape[2]};
  const at::Tensor image =
      at::from_blob(const_cast<float*>(batch.image.data()), image_shape, at::kFloat).to(device);
  const at::Tensor label =
      at::from_blob(const_cast<uint8_t*>(batch.label.data()), label_shape, at::kByte)
          .to(device)
          .to(at::kFloat);
  model->train();
  optimizer->zero_grad();
  if (precision.autocast) torch_compat::set_cuda_autocast(true, precision.dtype);
  const at::Tensor logits = model->forward(image);
  if (precision.autocast) torch_compat::set_cuda_autocast(false, precision.dtype);
  const at::Tensor loss = compute_loss(config().train.loss, logits, label);
  const double loss_value = loss.item<double>();
  if (!std::isfinite(loss_value) && !scaler->enabled()) {
    throw ClientError("the training loss became " + std::to_string(loss_value) + " at step " +
                      std::to_string(global_step) + ": lower optim.learning_rate, enable " +
                      "optim.grad_clip_norm, or check the data for extreme values");
  }
  scaler->scale_loss(loss).backward();
  const std::vector<at::Tensor> parameters = model->parameters();
  if (!scaler->unscale_and_check(parameters)) {
    spdlog::warn("step {}: non-finite gradients under fp16; step skipped, loss scale now {}",
                 global_step, scaler->scale());
    return loss_value;
  }
  if (config().optim.grad_clip_norm > 0) {
    torch::nn::utils::clip_grad_norm_(parameters, config().optim.grad_clip_norm);
  }
  optimizer->step();
  return loss_value;
}

DiceAccumulator Trainer::State::validate() {
  torch::NoGradGuard no_grad;
  model->eval();
  const SlidingWindowConfig& window = config().sliding_window;
  SlidingWindowOptions options;
  for (int axis = 0; axis < 3; ++axis) options.roi_size[axis] = config().augment.roi_size[axis];
  options.overlap = window.overlap;
  options.blend = window.blend;
  options.batch_size = window.batch_size;
  DiceAccumulator dice(config().model.out_channels);
  for (const CaseData& data : validation_cases) {
    const std::vector<int64_t> image_shape = {1, data.image_channels, data.spatial_shape[0],
                                              data.spatial_shape[1], data.spatial_shape[2]};
    const at::Tensor image =
        at::from_blob(const_cast<float*>(data.image.data()), image_shape, at::kFloat).to(device);
    const at::Tensor logits = sliding_window_inference(image, options, [&](const at::Tensor& x) {
      if (precision.autocast) torch_compat::set_cuda_autocast(true, precision.dtype);
      at::Tensor out = model->forward(x);
      if (precision.autocast) torch_compat::set_cuda_autocast(false, precision.dtype);
      return out;
    });
    const at::Tensor prediction = at::sigmoid(logits[0]).ge(window.threshold).cpu();
    const at::Tensor truth =
        at::from_blob(const_cast<uint8_t*>(data.label.data()),
                      {data.label_channels, data.spatial_shape[0], data.spatial_shape[1],
                       data.spatial_shape[2]},
                      at::kByte);
    dice.add_case(prediction, truth);
  }
  return dice;
}

void Trainer::State::record(nlohmann::json entry) {
  if (metrics_log.is_open()) {
    metrics_log << entry.dump() << '\n';
    metrics_log.flush();
  }
  history.push_back(std::move(entry));
}

void Trainer::State::write_model(const std::string& file_name) {
  const std::string path = environment.paths.model_dir() + "/" + file_name;
  save_model_pth(path, *model, config_to_yaml(resolved));
}

void Trainer::State::write_final_outputs() {
  write_model("model.pth");
  nlohmann::json metrics = {
      {"epochs_completed", summary.epochs_completed},
      {"global_steps", summary.global_steps},
      {"final_train_loss", summary.last_loss},
      {"stopped_early", summary.stopped_early},
  };
  if (summary.best_epoch >= 0) {
    metrics["best_val_mean_dice"] = summary.best_mean_dice;
    metrics["best_epoch"] = summary.best_epoch;
  }
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (it->contains("val_mean_dice")) {
      metrics["final_validation"] = *it;
      break;
    }
  }
  write_file_atomically(environment.paths.model_dir() + "/metrics.json", metrics.dump(2) + "\n");
  spdlog::info("wrote {}/model.pth{} and metrics.json", environment.paths.model_dir(),
               summary.best_epoch >= 0 ? ", best_model.pth" : "");
}

Trainer::Trainer(ResolvedConfig resolved, JobEnvironment environment,
                 const std::atomic<bool>* stop_requested)
    : state_(std::make_unique<State>()) {
  state_->resolved = std::move(resolved);
  state_->environment = std::move(environment);
  state_->stop_requested = stop_requested;
}

Trainer::~Trainer() = default;

TrainSummary Trainer::run() {
  State& s = *state_;
  const Config& config = s.config();
  s.set_up_device();
  s.load_data();
  if (s.train_cases.empty()) throw ClientError("no training cases left after the validation split");
  s.build_model();

  fs::create_directories(s.environment.paths.model_dir());
  fs::create_directories(s.environment.paths.output_data_dir());
  s.metrics_log.open(s.environment.paths.output_data_dir() + "/metrics.jsonl", std::ios::app);

  const int64_t batch_size = config.train.batch_size;
  s.steps_per_epoch = config.train.steps_per_epoch > 0
                          ? config.train.steps_per_epoch
                          : std::max<int64_t>(1, static_cast<int64_t>(s.train_cases.size()) /
                                                     batch_size);
  s.total_steps = s.steps_per_epoch * config.train.epochs;
  BatchLoaderOptions loader_options;
  loader_options.transforms = RandomTransformOptions::from_config(config);
  loader_options.batch_size = batch_size;
  loader_options.seed = static_cast<uint64_t>(config.train.seed);
  loader_options.num_workers =
      config.data.num_workers > 0 ? config.data.num_workers : (s.device.is_cuda() ? 4 : 1);
  loader_options.prefetch_batches = config.data.prefetch_batches;
  s.loader = std::make_unique<BatchLoader>(&s.train_cases, loader_options);
  spdlog::info("training: {} epochs x {} steps, batch {} (roi {}x{}x{}), {} loader threads",
               config.train.epochs, s.steps_per_epoch, batch_size, config.augment.roi_size[0],
               config.augment.roi_size[1], config.augment.roi_size[2],
               loader_options.num_workers);

  const auto started = Clock::now();
  int64_t samples_since_log = 0;
  auto last_log = Clock::now();
  for (int64_t epoch = 0; epoch < config.train.epochs && !s.summary.stopped_early; ++epoch) {
    s.loader->start_epoch(static_cast<uint64_t>(epoch), s.steps_per_epoch);
    double epoch_loss = 0.0;
    int64_t epoch_steps = 0;
    Batch batch;
    while (s.loader->next(batch)) {
      if (s.stop()) {
        s.summary.stopped_early = true;
        spdlog::warn("stop requested: ending training at step {}", s.global_step);
        break;
      }
      set_learning_rate(*s.optimizer, learning_rate_at(config.optim, config.schedule,
                                                       s.global_step, s.total_steps));
      const double loss = s.train_step(batch);
      ++s.global_step;
      ++epoch_steps;
      epoch_loss += loss;
      samples_since_log += batch.batch_size;
      s.summary.last_loss = loss;
      const bool last_of_epoch = batch.step + 1 == s.steps_per_epoch;
      if (s.global_step % config.train.log_every_steps == 0 || last_of_epoch) {
        const double samples_per_second = samples_since_log / std::max(1e-9, seconds_since(last_log));
        const double elapsed = seconds_since(started);
        const double eta = elapsed / s.global_step * (s.total_steps - s.global_step);
        const double lr = learning_rate_at(config.optim, config.schedule, s.global_step - 1,
                                           s.total_steps);
        spdlog::info("epoch {}/{} step {}/{} loss {:.4f} lr {:.3g} {:.2f} samples/s eta {}",
                     epoch + 1, config.train.epochs, batch.step + 1, s.steps_per_epoch, loss, lr,
                     samples_per_second, format_duration(eta));
        log_metric("train_loss", loss);
        log_metric("samples_per_second", samples_per_second);
        s.record({{"type", "train"}, {"epoch", epoch + 1}, {"step", s.global_step},
                  {"train_loss", loss}, {"learning_rate", lr},
                  {"samples_per_second", samples_per_second}});
        samples_since_log = 0;
        last_log = Clock::now();
      }
    }
    if (epoch_steps == 0) break;
    s.summary.epochs_completed = epoch + 1;
    log_metric("epoch", static_cast<double>(epoch + 1));
    log_metric("epoch_train_loss", epoch_loss / epoch_steps);

    const bool last_epoch = epoch + 1 == config.train.epochs || s.summary.stopped_early;
    const int every = config.train.validate_every_epochs;
    if (!s.validation_cases.empty() && every > 0 && ((epoch + 1) % every == 0 || last_epoch)) {
      const auto validation_started = Clock::now();
      const DiceAccumulator dice = s.validate();
      const double mean = dice.mean();
      nlohmann::json entry = {{"type", "validation"}, {"epoch", epoch + 1},
                              {"step", s.global_step}, {"val_mean_dice", mean}};
      log_metric("val_mean_dice", mean);
      for (int64_t c = 0; c < std::min<int64_t>(3, config.model.out_channels); ++c) {
        const std::string name = std::string("val_dice_") + kChannelNames[c];
        log_metric(name, dice.channel_mean(c));
        entry[name] = dice.channel_mean(c);
      }
      s.record(entry);
      spdlog::info("epoch {} validation: mean Dice {:.4f} (TC {:.4f}, WT {:.4f}, ET {:.4f}) on {} "
                   "cases in {:.1f} s",
                   epoch + 1, mean, dice.channel_mean(0), dice.channel_mean(1),
                   dice.channel_mean(2), s.validation_cases.size(),
                   seconds_since(validation_started));
      if (std::isfinite(mean) && mean > s.summary.best_mean_dice) {
        s.summary.best_mean_dice = mean;
        s.summary.best_epoch = epoch + 1;
        s.write_model("best_model.pth");
        spdlog::info("new best mean Dice {:.4f} at epoch {}: wrote best_model.pth", mean, epoch + 1);
      }
    }
  }
  s.summary.global_steps = s.global_step;
  s.write_final_outputs();
  spdlog::info("training finished: {} epochs, {} steps in {}", s.summary.epochs_completed,
               s.global_step, format_duration(seconds_since(started)));
  return s.summary;
}

}  // namespace medseg
