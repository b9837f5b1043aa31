#include "train/trainer.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
// clang-format off
// clang-format on
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_set>

#include "config/component_options.h"
#include "data/batch_loader.h"
#include "data/case_store.h"
#include "data/record_cache.h"
#include "data/streamed_epochs.h"
#include "data/training_set.h"
#include "dist/collectives.h"
#include "dist/launcher.h"
#include "infer/evaluate.h"
#include "infer/sliding_window.h"
#include "io/medseg_record.h"
#include "io/pipe_channel.h"
#include "model/model_io.h"
#include "model/unet.h"
#include "train/automatic_settings.h"
#include "train/checkpoint_store.h"
#include "train/compute.h"
#include "train/device_batches.h"
#include "train/dice_metric.h"
#include "train/job_report.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"
#include "train/progress_meter.h"
#include "train/training_checkpoint.h"
#include "train/training_step.h"
#include "train/validation_picture.h"
#include "util/clock.h"
#include "util/cuda.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"
#include "util/log.h"
#include "util/memory.h"
#include "util/random.h"
#include "util/stop_signals.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

std::string format_duration(double seconds) {
  const int64_t total = static_cast<int64_t>(std::max(0.0, seconds));
  char text[32];
  std::snprintf(text, sizeof(text), "%02lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  return text;
}

const char* const kChannelNames[] = {"tc", "wt", "et"};

}  // namespace

struct Trainer::State {
  ResolvedConfig resolved;
  JobEnvironment environment;
  const std::atomic<bool>* stop_requested = nullptr;
  DistEnv dist;
  std::unique_ptr<Collectives> collectives;
  std::unique_ptr<OverlappedGradientSync> gradient_sync;  // with collectives
  Heartbeat heartbeat = Heartbeat::from_environment();
  bool main() const { return dist.is_main(); }
  const Config& config() const { return resolved.config; }

  Compute compute;
  UNet model{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<DynamicLossScaler> scaler;
  std::unique_ptr<TrainingStep> step;  // built once the gradient sync exists
  TrainingSet train_cases;
  std::vector<CaseData> validation_cases;
  // Pipe mode streamed epoch by epoch (data.shuffle_buffer > 0): this worker's source of each
  // epoch's stream, the training case ids the first stream held, and the draws from the streams.
  bool streamed = false;
  std::function<std::unique_ptr<ByteSource>()> open_pipe_epoch;
  std::vector<std::string> streamed_ids;
  std::unordered_set<std::string> streamed_validation_ids;
  std::unique_ptr<StreamedEpochs> streamed_epochs;  // declared before the loader that uses it
  std::unique_ptr<BatchLoader> loader;      // host crops; null with the device cache
  std::unique_ptr<DeviceBatches> batches;   // what the steps train on (after the loader)
  int64_t steps_per_epoch = 1;
  int64_t total_steps = 1;
  int64_t global_step = 0;
  nlohmann::json history = nlohmann::json::array();  // a resumed job's, until `report` holds it
  std::unique_ptr<JobReport> report;
  TrainSummary summary;

  // Where the job's time went, for the end summary.
  struct JobTimes {
    Clock::time_point started = Clock::now();
    double setup = 0.0;  // device, process group, data, model, resumption
    double validation = 0.0;
    double checkpoints = 0.0;
    int64_t checkpoints_written = 0;
    double training = 0.0;  // the epochs, validation and checkpoints excluded
    int64_t samples = 0;    // this worker's, in `training`
    double peak_worker_mib = 0.0;
    double peak_host_mib = 0.0;
  };
  JobTimes times;
  // The first validation case's predicted masks (rank 0), for the TensorBoard picture.
  std::vector<uint8_t> picture_prediction;

  // Spot safety: where training resumes and when the next periodic checkpoint is due.
  std::unique_ptr<CheckpointStore> checkpoints;
  std::string checkpoint_dir;
  int64_t start_epoch = 0;
  int64_t start_step = 0;
  Clock::time_point last_checkpoint = Clock::now();
  Clock::time_point last_validation_end = Clock::now();  // or the start of training
  bool warned_validation_share = false;

  AutomaticSettings automatic;
  bool resumed = false;

  // The workers that share one set of cases (see agree_on_data): the whole job when every host
  // holds the same cases, each host's workers when hosts hold different ones.
  struct DataGroup {
    int rank = 0;
    int size = 1;
    bool per_host = false;
    int64_t training_cases_in_job = 0;  // each case counted once
    int64_t validation_cases_in_job = 0;
  };
  DataGroup data_group;

  // The phases of run(), in order.
  void set_up();
  void resume_and_synchronise();
  void open_outputs_and_loader();
  void train_epochs();

  void report_progress(int64_t epoch, const DeviceBatch& batch, double loss, ProgressMeter& meter);
  bool use_device_cache();
  void check_network_fits() const;
  // Whether any rank was asked to stop; collective, so all ranks stop at the same step.
  bool stop();
  void set_up_device();
  void load_data();
  std::vector<CaseData> load_channel(const std::string& channel, bool normalize);
  std::string training_records_folder(bool normalize);
  std::function<std::unique_ptr<ByteSource>()> pipe_epochs(const std::string& channel);
  void count_streamed_channel(bool split_validation);
  int64_t training_count() const {
    return streamed ? static_cast<int64_t>(streamed_ids.size())
                    : static_cast<int64_t>(train_cases.size());
  }
  void agree_on_data();
  void build_model();
  StepResult train_step(const DeviceBatch& batch, bool timed);
  DiceAccumulator validate();
  void validate_share(const SlidingWindowOptions& options, DiceAccumulator& dice);
  bool validation_due(int64_t epoch) const;
  bool validated(int64_t epoch) const;
  void write_model(const std::string& file_name);
  void write_final_outputs();
  nlohmann::json job_summary(double writing_seconds) const;
  void report_memory();

  std::string compatibility_key() const;
  void open_checkpoints();
  // Returns the seconds it took.
  double save_checkpoint(int64_t epoch, int64_t next_step, const char* reason);
  bool resume_from_checkpoint();
  bool checkpoint_due() const;
  void run_validation(int64_t epoch);
};

void Trainer::State::set_up_device() {
  ComputeRequest request;
  request.device = config().train.device;
  request.amp = config().train.amp;
  request.local_rank = dist.local_rank;
  request.cudnn_benchmark = config().train.cudnn_benchmark;
  request.channels_last = config().train.channels_last;
  compute = resolve_compute(request);
  check_network_fits();
  torch::manual_seed(static_cast<uint64_t>(config().train.seed));
  spdlog::info("device {}, precision {}{}{}", compute.device.str(), compute.precision,
               compute.cudnn_benchmark ? ", cuDNN benchmark" : "",
               compute.channels_last ? ", channels-last" : "");
}

// Pipe mode gives a host one FIFO per channel per epoch, for one reader. With several workers on
// the host, its first worker reads the FIFO and leaves the cases in a record shard on local disk
// (float32: bit-exact); the host's other workers read that shard once every worker has passed a
// barrier, and the first worker removes it after a second one.
std::vector<CaseData> Trainer::State::load_channel(const std::string& channel, bool normalize) {
  if (environment.channel(channel).input_mode != "Pipe" || dist.local_world_size == 1) {
    return load_channel_cases(environment, channel, config(), normalize);
  }
  if (!collectives) throw InternalError("Pipe mode with several workers but no collectives");
  // The launcher's PID names the copy: one per job on this host.
  const std::string copy =
      (fs::temp_directory_path() /
       ("medseg-pipe-" + std::to_string(::getppid()) + "-" + channel + ".medrec"))
          .string();
  std::vector<CaseData> cases;
  if (dist.local_rank == 0) {
    cases = load_channel_cases(environment, channel, config(), normalize);
    write_record_file(copy, cases);
    spdlog::info(
        "Pipe mode: {} cases of channel '{}' read once and shared with this host's {} "
        "other workers through {}",
        cases.size(), channel, dist.local_world_size - 1, copy);
  }
  collectives->barrier();
  if (dist.local_rank != 0) {
    const MappedRecordReader reader(copy);
    for (size_t i = 0; i < reader.size(); ++i) cases.push_back(reader.read(i));
  }
  collectives->barrier();
  if (dist.local_rank == 0) fs::remove(copy);
  return cases;
}

// This worker's stream of the channel's epochs, one FIFO after another. SageMaker gives a host one
// FIFO per epoch, for one reader: the host's first worker reads it and passes every byte on to
// the host's other workers through FIFOs of their own (PipeTee), so that all of them see the same
// records in the same order.
std::function<std::unique_ptr<ByteSource>()> Trainer::State::pipe_epochs(
    const std::string& channel) {
  const ChannelConfig channel_config = environment.channel(channel);
  // The launcher's PID names the host's folder of worker FIFOs: one per job on this host.
  const std::string local = (fs::temp_directory_path() /
                             ("medseg-pipe-" + std::to_string(::getppid()) + "-" + channel))
                                .string();
  const auto worker_dir = [local](int worker) {
    return local + "/worker-" + std::to_string(worker);
  };
  PipeChannelOptions options;
  options.channel = channel;
  if (dist.local_rank != 0) {
    options.data_dir = worker_dir(dist.local_rank);
    auto pipe = std::make_shared<PipeChannel>(options);
    return [pipe] { return pipe->open_next_epoch(); };
  }
  options.data_dir = environment.paths.data_dir();
  options.record_io = channel_config.record_wrapper == "RecordIO";
  auto pipe = std::make_shared<PipeChannel>(options);
  const int workers = dist.local_world_size;
  return [pipe, workers, worker_dir, channel]() -> std::unique_ptr<ByteSource> {
    const int index = pipe->next_epoch();
    std::unique_ptr<ByteSource> source = pipe->open_next_epoch();
    if (workers == 1) return source;
    std::vector<std::string> outputs;
    for (int worker = 1; worker < workers; ++worker) {
      outputs.push_back(worker_dir(worker) + "/" + channel + "_" + std::to_string(index));
    }
    return std::make_unique<PipeTee>(std::move(source), std::move(outputs), 600.0);
  };
}

namespace {

// A case whose channels the model cannot take: a ClientError, `where` (a source, or "") first.
void check_model_channels(const Config& config, const std::string& where,
                          const std::string& case_id, int64_t image_channels,
                          int64_t label_channels) {
  if (label_channels != config.model.out_channels || image_channels != config.model.in_channels) {
    throw ClientError(where + "case " + case_id + " has " + std::to_string(image_channels) +
                      " image and " + std::to_string(label_channels) +
                      " label channels; the model expects model.in_channels = " +
                      std::to_string(config.model.in_channels) +
                      " and model.out_channels = " + std::to_string(config.model.out_channels));
  }
}

// A channel must hold each case once: an id seen twice means shards copied twice or an image
// listed twice in dataset.json, which would train (or validate) on that case twice as often.
void refuse_duplicate_case_ids(const std::vector<std::string>& ids, const std::string& channel) {
  std::unordered_set<std::string> seen;
  for (const std::string& id : ids) {
    if (!seen.insert(id).second) {
      throw ClientError("channel '" + channel + "' holds case '" + printable_case_id(id) +
                        "' more than once: each case must appear once (shards copied twice? an "
                        "image listed twice in dataset.json?)");
    }
  }
}

// Whether a streamed case is held out for validation: by its id (each with probability
// data.validation_fraction, seeded), since a stream's order may change from epoch to epoch.
bool in_streamed_validation_share(const std::string& case_id, double fraction, uint64_t seed) {
  uint64_t hash = mix64(seed ^ 0x7a11da7eULL);
  for (const char c : case_id) hash = mix64(hash ^ static_cast<uint8_t>(c));
  return static_cast<double>(hash >> 11) * 0x1.0p-53 < fraction;
}
}  // namespace

// Streamed Pipe mode reads the channel's first FIFO once before training: to count its records
// (the steps per epoch follow from the count), to learn its case ids (the hosts compare them) and
// to keep the held-out validation cases. Nothing else of it stays in memory.
void Trainer::State::count_streamed_channel(bool split_validation) {
  const DataConfig& data = config().data;
  const auto started = Clock::now();
  open_pipe_epoch = pipe_epochs(data.train_channel);
  std::unique_ptr<ByteSource> source = open_pipe_epoch();
  RecordStreamReader reader(*source, stream_read_options_from_config(config()));
  CaseData record;
  int64_t bytes = 0;
  while (reader.next(&record)) {
    check_model_channels(config(), source->name() + ": ", record.case_id, record.image_channels,
                         record.label_channels);
    bytes += static_cast<int64_t>(record.image.size() * sizeof(float) + record.label.size());
    const auto seed = static_cast<uint64_t>(config().train.seed);
    if (split_validation &&
        in_streamed_validation_share(record.case_id, data.validation_fraction, seed)) {
      streamed_validation_ids.insert(record.case_id);
      validation_cases.push_back(record);
    } else {
      streamed_ids.push_back(record.case_id);
    }
  }
  if (streamed_ids.empty()) {
    throw ClientError("Pipe-mode channel '" + data.train_channel + "' (" + source->name() +
                      ") delivered no training records: Pipe mode streams shards written by "
                      "`medseg preprocess`");
  }
  spdlog::info(
      "Pipe mode: channel '{}' streams {} training records ({:.0f} MiB decoded){}; counted in "
      "{:.1f} s from its first FIFO; every epoch reads the next FIFO through a shuffle buffer "
      "of {} cases (data.shuffle_buffer)",
      data.train_channel, streamed_ids.size(), static_cast<double>(bytes) / (1 << 20),
      validation_cases.empty()
          ? ""
          : fmt::format(" and {} validation cases (kept in memory)", validation_cases.size()),
      seconds_since(started), data.shuffle_buffer);
}

// The record shards the training channel is mapped from, "" when it is decoded into memory
// (Pipe mode, data.cache_dir = memory). A File-mode records channel is mapped as it is; a
// FastFile one is first copied to the host's record cache (sequential reads instead of random
// page faults over the network); a NIfTI channel is preprocessed into the cache. The host's
// first worker builds the cache (or finds it, after a restart) while the others wait.
std::string Trainer::State::training_records_folder(bool normalize) {
  const std::string& channel = config().data.train_channel;
  const std::string mode = environment.channel(channel).input_mode;
  if (mode == "Pipe" || config().data.cache_dir == "memory" ||
      !fs::is_directory(environment.paths.channel_dir(channel))) {
    return "";  // load_channel() reads it (or names what is missing)
  }
  const std::string records = record_channel_folder(environment, channel, config());
  if (!records.empty() && mode != "FastFile") return records;  // on local disk already
  const std::string cache_dir =
      config().data.cache_dir.empty() ? environment.paths.root + "/cache" : config().data.cache_dir;
  const auto find_cache = [&] {
    return records.empty() ? find_record_cache(environment, channel, config(), normalize, cache_dir)
                           : find_record_copy(environment, channel, cache_dir);
  };
  const RecordCache cache = find_cache();
  if (dist.local_rank == 0) {
    if (cache.complete) {
      spdlog::info("record cache: reusing {} (same data and settings)", cache.folder);
    } else if (records.empty()) {
      build_record_cache(environment, channel, config(), normalize, cache);
    } else {
      copy_records_to_cache(environment, channel, cache);
    }
  } else if (!cache.complete) {
    // Wait where a stop request is seen (a collective barrier would block through it).
    const Clock::time_point started = Clock::now();
    while (!find_cache().complete) {
      if (::medseg::stop_requested()) {
        throw StopRequested("while waiting for the host's first worker to build the record cache");
      }
      if (seconds_since(started) > config().dist.timeout_seconds) {
        throw PlatformError("the host's first worker did not finish the record cache " +
                            cache.folder + " within dist.timeout_seconds = " +
                            std::to_string(config().dist.timeout_seconds) + " s");
      }
      heartbeat.beat();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  if (collectives) collectives->barrier();
  return cache.folder;
}

// Which of `total` cases are held out for validation: a seeded share (data.validation_fraction).
std::vector<bool> validation_split(int64_t total, double fraction, uint64_t seed) {
  std::vector<bool> is_validation(static_cast<size_t>(total), false);
  if (fraction <= 0.0 || total < 2) return is_validation;
  const int64_t held_out =
      std::clamp<int64_t>(std::llround(fraction * static_cast<double>(total)), 1, total - 1);
  const std::vector<int64_t> order = epoch_case_order(total, total, seed, 0xA11DA7E);
  for (int64_t i = 0; i < held_out; ++i) is_validation[static_cast<size_t>(order[i])] = true;
  return is_validation;
}

void Trainer::State::load_data() {
  const DataConfig& data = config().data;
  const auto started = Clock::now();
  const bool normalize_volumes = data.normalize == "volume";
  // Validation cases: the validation channel, else a seeded share of the training cases.
  const bool has_validation_channel =
      environment.channels.count(data.validation_channel) != 0 ||
      fs::exists(environment.paths.channel_dir(data.validation_channel));
  if (has_validation_channel) {
    validation_cases = load_channel(data.validation_channel, /*normalize=*/true);
  }
  const auto held_out = [&](int64_t total) {
    return validation_split(has_validation_channel ? 0 : total, data.validation_fraction,
                            static_cast<uint64_t>(config().train.seed));
  };
  streamed = environment.channel(data.train_channel).input_mode == "Pipe" &&
             data.shuffle_buffer > 0;
  const std::string records = streamed ? "" : training_records_folder(normalize_volumes);
  if (streamed) {
    count_streamed_channel(!has_validation_channel && data.validation_fraction > 0.0);
  } else if (!records.empty()) {
    // Record shards are mapped, not decoded: the host's workers share them through the page cache.
    auto reader = std::make_shared<const MappedRecordReader>(records);
    const std::vector<bool> is_validation = held_out(static_cast<int64_t>(reader->size()));
    std::vector<size_t> training;
    for (size_t i = 0; i < reader->size(); ++i) {
      if (!is_validation.empty() && is_validation[i]) {
        validation_cases.push_back(reader->read(i));
      } else {
        training.push_back(i);
      }
    }
    train_cases = TrainingSet(std::move(reader), std::move(training));
  } else {
    std::vector<CaseData> cases = load_channel(data.train_channel, normalize_volumes);
    const std::vector<bool> is_validation = held_out(static_cast<int64_t>(cases.size()));
    std::vector<CaseData> training;
    for (size_t i = 0; i < cases.size(); ++i) {
      (!is_validation.empty() && is_validation[i] ? validation_cases : training)
          .push_back(std::move(cases[i]));
    }
    train_cases = TrainingSet(std::move(training));
  }
  if (training_count() == 0 && validation_cases.empty()) {
    throw ClientError("channel '" + data.train_channel + "' holds no cases");
  }
  // Validation always sees whole normalised volumes, also when training normalises crops.
  if (!normalize_volumes) {
    for (CaseData& validation_case : validation_cases) normalize_intensity_nonzero(validation_case);
  }
  for (size_t i = 0; i < train_cases.size(); ++i) {
    const CaseView view = train_cases.view(i);
    check_model_channels(config(), "", *view.case_id, view.image_channels, view.label_channels);
  }
  for (const CaseData& loaded : validation_cases) {
    check_model_channels(config(), "", loaded.case_id, loaded.image_channels,
                         loaded.label_channels);
  }
  std::vector<std::string> training_ids = streamed_ids;
  for (size_t i = 0; i < train_cases.size(); ++i) training_ids.push_back(train_cases.case_id(i));
  std::vector<std::string> validation_ids;
  for (const CaseData& loaded : validation_cases) validation_ids.push_back(loaded.case_id);
  if (has_validation_channel) {
    refuse_duplicate_case_ids(training_ids, data.train_channel);
    refuse_duplicate_case_ids(validation_ids, data.validation_channel);
    const std::unordered_set<std::string> trained(training_ids.begin(), training_ids.end());
    for (const std::string& id : validation_ids) {
      if (trained.count(id) != 0) {
        spdlog::warn("validation case '{}' is also a training case: its Dice is not held out",
                     printable_case_id(id));
      }
    }
  } else {
    training_ids.insert(training_ids.end(), validation_ids.begin(), validation_ids.end());
    refuse_duplicate_case_ids(training_ids, data.train_channel);
  }
  spdlog::info(
      "data: {} training and {} validation cases preprocessed in {:.1f} s, {:.0f} MiB in "
      "memory{}",
      training_count(), validation_cases.size(), seconds_since(started),
      static_cast<double>(train_cases.private_bytes() + case_bytes(validation_cases)) / (1 << 20),
      train_cases.mapped_bytes() > 0
          ? fmt::format(", {:.0f} MiB of record shards mapped (shared by the host's workers)",
                        static_cast<double>(train_cases.mapped_bytes()) / (1 << 20))
          : "");
}

// A 48-bit digest of the case ids (exact in a double, so it can travel through allreduce_sum).
double case_fingerprint(const std::vector<std::string>& train,
                        const std::vector<CaseData>& validation) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  const auto add = [&hash](const std::string& text) {
    for (const char c : text) hash = (hash ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    hash = (hash ^ 0xFF) * 1099511628211ull;  // a separator no id contains
  };
  for (const std::string& id : train) add(id);
  add("|validation|");
  for (const CaseData& data : validation) add(data.case_id);
  return static_cast<double>(hash >> 16);
}

// Every host must run the same number of steps (each step is a collective) with the same global
// batch. When every worker loaded the same cases (FullyReplicated channels), the job shares them:
// one order, worker r takes its slice of each global batch. When hosts hold different cases
// (ShardedByS3Key, or channels that differ), each host's workers share that host's cases, and the
// automatic steps per epoch count every host's cases once, so that an epoch still sees the job's
// data once; a host with fewer cases starts a new pass over its own sooner. Validation Dice is
// merged over every host's validation cases.
void Trainer::State::agree_on_data() {
  const auto training = static_cast<double>(training_count());
  const auto validation = static_cast<double>(validation_cases.size());
  data_group = {dist.rank, dist.world_size, false, static_cast<int64_t>(training),
                static_cast<int64_t>(validation)};
  // load_data() refuses an empty channel (a host that failed so ends its peers' collectives).
  if (training_count() == 0) {
    throw ClientError("no training cases left after the validation split");
  }
  if (!collectives) return;
  std::vector<std::string> training_ids = streamed_ids;
  if (!streamed) {
    for (size_t i = 0; i < train_cases.size(); ++i) training_ids.push_back(train_cases.case_id(i));
  }
  const double fingerprint = case_fingerprint(training_ids, validation_cases);
  const double first_of_host = dist.local_rank == 0 ? 1.0 : 0.0;
  std::vector<double> job = {dist.rank == 0 ? fingerprint : 0.0, first_of_host * training,
                             first_of_host * validation};
  collectives->allreduce_sum(job);
  std::vector<double> differing = {fingerprint == job[0] ? 0.0 : 1.0};
  collectives->allreduce_sum(differing);
  if (differing[0] == 0) return;
  data_group = {dist.local_rank, dist.local_world_size, true, static_cast<int64_t>(job[1]),
                static_cast<int64_t>(job[2])};
  spdlog::info(
      "hosts hold different cases: each host's {} workers train on its own {} cases; steps per "
      "epoch count all {} training cases of the {} hosts; validation Dice is over all {} "
      "validation cases",
      dist.local_world_size, training_count(), data_group.training_cases_in_job, dist.num_nodes,
      data_group.validation_cases_in_job);
  if (streamed) {
    // A stream cannot be read twice in an epoch: every host uses as many of its records per
    // epoch as the host with the fewest has.
    std::vector<double> counts(static_cast<size_t>(dist.num_nodes), 0.0);
    if (dist.local_rank == 0) counts[static_cast<size_t>(dist.node_rank)] = training;
    collectives->allreduce_sum(counts);
    const double fewest = *std::min_element(counts.begin(), counts.end());
    data_group.training_cases_in_job = static_cast<int64_t>(fewest) * dist.num_nodes;
    spdlog::info("Pipe mode: each epoch uses {} records of every host's stream (the fewest a "
                 "host has)",
                 static_cast<int64_t>(fewest));
  }
  const ChannelConfig channel = environment.channel(config().data.train_channel);
  if (environment.channels.count(channel.name) != 0 && channel.distribution != "ShardedByS3Key") {
    spdlog::warn(
        "the {} channel is {}, yet hosts loaded different cases: check that every host sees the "
        "same data",
        channel.name, channel.distribution);
  }
}

void Trainer::State::build_model() {
  model = UNet(unet_options_from_config(config().model));
  model->to(compute.device);
  to_compute_layout(*model, compute);
  optimizer = make_optimizer(config().optim, model->parameters());
  scaler = std::make_unique<DynamicLossScaler>(compute.loss_scaling);
  spdlog::info("model: MONAI UNet channels [{}] strides [{}] res units {}, {} parameters",
               fmt::join(config().model.channels, ", "), fmt::join(config().model.strides, ", "),
               config().model.num_res_units, count_parameters(*model));
}

StepResult Trainer::State::train_step(const DeviceBatch& batch, bool timed) {
  StepResult result = step->run(batch.image, batch.label, global_step, timed);
  result.times.copy = batch.copy_seconds;
  return result;
}

DiceAccumulator Trainer::State::validate() {
  torch::NoGradGuard no_grad;
  model->eval();
  const SlidingWindowOptions options = sliding_window_options_from_config(config());
  DiceAccumulator dice(config().model.out_channels);
  bool stopped = false;
  try {
    validate_share(options, dice);
  } catch (const StopRequested&) {
    stopped = true;  // the ranks agree below, at the one collective every rank reaches
  }
  std::vector<double> state = dice.state();
  state.push_back(stopped ? 1.0 : 0.0);
  if (collectives) collectives->allreduce_sum(state);
  if (state.back() > 0.0) throw StopRequested("during the validation");
  state.pop_back();
  dice.set_state(state);
  return dice;
}

// This worker's share of its group's validation cases, into `dice`.
void Trainer::State::validate_share(const SlidingWindowOptions& options, DiceAccumulator& dice) {
  for (size_t index = 0; index < validation_cases.size(); ++index) {
    // Each worker validates its share of its group's cases; the sums are merged by validate().
    if (static_cast<int>(index % static_cast<size_t>(data_group.size)) != data_group.rank) continue;
    const CaseData& data = validation_cases[index];
    heartbeat.beat();
    const std::vector<int64_t> image_shape = {1, data.image_channels, data.spatial_shape[0],
                                              data.spatial_shape[1], data.spatial_shape[2]};
    const at::Tensor image =
        at::from_blob(const_cast<float*>(data.image.data()), image_shape, at::kFloat)
            .to(compute.device);
    const at::Tensor prediction = predict_probabilities(model, image, options, compute)
                                      .ge(config().sliding_window.threshold)
                                      .cpu();
    const at::Tensor truth = at::from_blob(
        const_cast<uint8_t*>(data.label.data()),
        {data.label_channels, data.spatial_shape[0], data.spatial_shape[1], data.spatial_shape[2]},
        at::kByte);
    dice.add_case(prediction, truth);
    if (index == 0 && report && report->writes_pictures()) {
      const at::Tensor masks = prediction.to(at::kByte).contiguous();
      picture_prediction.assign(masks.data_ptr<uint8_t>(),
                                masks.data_ptr<uint8_t>() + masks.numel());
    }
  }
}

void Trainer::State::write_model(const std::string& file_name) {
  const std::string path = environment.paths.model_dir() + "/" + file_name;
  save_model_pth(path, *model, config_to_yaml(resolved));
}

// Peak resident memory of every worker, and of every host (the sum of its workers' peaks, an upper
// bound: their peaks need not coincide), so that a job's memory can be sized; collective.
void Trainer::State::report_memory() {
  const MemoryUsage usage = memory_usage();
  std::vector<double> per_worker(static_cast<size_t>(dist.world_size), 0.0);
  per_worker[static_cast<size_t>(dist.rank)] = static_cast<double>(usage.peak_resident_bytes);
  if (collectives) collectives->allreduce_sum(per_worker);
  std::vector<double> per_host(static_cast<size_t>(dist.num_nodes), 0.0);
  for (int rank = 0; rank < dist.world_size; ++rank) {
    per_host[static_cast<size_t>(rank / dist.local_world_size)] += per_worker[rank];
  }
  constexpr double kMiB = 1 << 20;
  times.peak_worker_mib = *std::max_element(per_worker.begin(), per_worker.end()) / kMiB;
  times.peak_host_mib = *std::max_element(per_host.begin(), per_host.end()) / kMiB;
  spdlog::info(
      "memory: peak resident {:.0f} MiB on the largest worker, {:.0f} MiB on the largest host "
      "({} workers); this worker now holds {:.0f} MiB private and {:.0f} MiB of mapped files",
      times.peak_worker_mib, times.peak_host_mib, dist.local_world_size,
      static_cast<double>(usage.anonymous_bytes) / kMiB,
      static_cast<double>(usage.file_bytes) / kMiB);
}

// The end of a job at a glance: the best validation and its Dice per class, where the time went,
// the pace, the memory and the checkpoints (metrics.json's "summary", and a table in the log).
nlohmann::json Trainer::State::job_summary(double writing_seconds) const {
  nlohmann::json result = nlohmann::json::object();
  if (summary.best_epoch >= 0) {
    result["best_epoch"] = summary.best_epoch;
    for (const nlohmann::json& entry : report->history()) {
      if (entry.value("type", "") == "validation" &&
          entry.value("epoch", -1) == summary.best_epoch) {
        for (const auto& [key, value] : entry.items()) {
          if (key.rfind("val_", 0) == 0) result["best_" + key] = value;
        }
      }
    }
  }
  const double training = std::max(1e-9, times.training);
  result["validation_share"] = times.validation / (training + times.validation);
  result["seconds"] = {{"setup", times.setup},
                       {"training", times.training},
                       {"validation", times.validation},
                       {"checkpoints", times.checkpoints},
                       {"writing_model", writing_seconds},
                       {"total", seconds_since(times.started)}};
  result["samples_per_second"] = static_cast<double>(times.samples) * dist.world_size / training;
  result["peak_memory_mib"] = {{"largest_worker", times.peak_worker_mib},
                               {"largest_host", times.peak_host_mib}};
  result["checkpoints"] = {{"written", times.checkpoints_written}, {"seconds", times.checkpoints}};
  return result;
}

void Trainer::State::write_final_outputs() {
  if (!main()) return;  // SageMaker merges every host's model folder: one writer
  const Clock::time_point writing_started = Clock::now();
  write_model("model.pth");
  // The best model lives in the checkpoint folder during training (it is synced to S3 and
  // survives a Spot interruption); the model folder gets a copy at the end.
  const std::string best = checkpoint_dir + "/best_model.pth";
  if (summary.best_epoch >= 0 && fs::exists(best)) {
    write_file_atomically(environment.paths.model_dir() + "/best_model.pth", read_text_file(best));
  }
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
  const nlohmann::json& entries = report->history();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->contains("val_mean_dice")) {
      metrics["final_validation"] = *it;
      break;
    }
  }
  metrics["summary"] = job_summary(seconds_since(writing_started));
  write_file_atomically(environment.paths.model_dir() + "/metrics.json", metrics.dump(2) + "\n");
  spdlog::info("summary:\n{}", summary_table(metrics["summary"]));
  spdlog::info("wrote {}/model.pth{} and metrics.json", environment.paths.model_dir(),
               summary.best_epoch >= 0 ? ", best_model.pth" : "");
}

Trainer::Trainer(ResolvedConfig resolved, JobEnvironment environment,
                 const std::atomic<bool>* stop_requested, DistEnv dist)
    : state_(std::make_unique<State>()) {
  state_->resolved = std::move(resolved);
  state_->environment = std::move(environment);
  state_->stop_requested = stop_requested;
  state_->dist = std::move(dist);
}

Trainer::~Trainer() = default;

bool Trainer::State::stop() {
  bool requested = stop_requested && stop_requested->load();
  if (collectives) {
    std::vector<double> flag = {requested ? 1.0 : 0.0};
    collectives->allreduce_sum(flag);
    requested = flag[0] > 0.0;
  }
  return requested;
}

std::string Trainer::State::compatibility_key() const {
  // What a checkpoint's weights and data position depend on: the model and the data it sees.
  // Settings such as epochs or the learning rate may change between a job and its resumption.
  const Config& c = config();
  nlohmann::json key = {
      {"model.in_channels", c.model.in_channels},
      {"model.out_channels", c.model.out_channels},
      {"model.channels", c.model.channels},
      {"model.strides", c.model.strides},
      {"model.num_res_units", c.model.num_res_units},
      {"model.dropout", c.model.dropout},
      {"data.label_scheme", c.data.label_scheme},
      {"data.pixdim", c.data.pixdim},
      {"data.normalize", c.data.normalize},
      {"data.validation_fraction", c.data.validation_fraction},
      {"train.batch_size", c.train.batch_size},
      {"train.seed", c.train.seed},
      {"augment.roi_size", c.augment.roi_size},
      {"optim.name", c.optim.name},
  };
  return key.dump();
}

void Trainer::State::open_checkpoints() {
  checkpoint_dir = config().checkpoint.dir;
  if (checkpoint_dir.empty()) checkpoint_dir = environment.checkpoint_dir;
  if (checkpoint_dir.empty()) checkpoint_dir = environment.paths.default_checkpoint_dir();
  std::error_code error;
  fs::create_directories(checkpoint_dir, error);
  if (error)
    throw PlatformError("cannot create the checkpoint folder " + checkpoint_dir + ": " +
                        error.message());
  checkpoints = std::make_unique<CheckpointStore>(checkpoint_dir, config().checkpoint.keep);
}

bool Trainer::State::checkpoint_due() const {
  const CheckpointConfig& c = config().checkpoint;
  if (c.every_steps > 0 && global_step % c.every_steps == 0) return true;
  return c.every_minutes > 0 && seconds_since(last_checkpoint) >= c.every_minutes * 60.0;
}

double Trainer::State::save_checkpoint(int64_t epoch, int64_t next_step, const char* reason) {
  last_checkpoint = Clock::now();
  if (!main()) return 0.0;  // every rank holds the same weights; rank 0 writes them
  CheckpointMeta meta;
  meta.reason = reason;
  meta.epoch = epoch;
  meta.next_step = next_step;
  meta.global_step = global_step;
  meta.world_size = dist.world_size;
  meta.compatibility_key = compatibility_key();
  meta.config_yaml = config_to_yaml(resolved);
  meta.history = report->history();
  meta.best_mean_dice = summary.best_mean_dice;
  meta.best_epoch = summary.best_epoch;
  meta.loss_scale = scaler->scale();
  meta.loss_scale_good_steps = scaler->good_steps();
  meta.last_loss = summary.last_loss;
  torch::serialize::OutputArchive archive;
  write_training_state(archive, *model, *optimizer, meta);
  checkpoints->save(global_step, archive);
  const double seconds = seconds_since(last_checkpoint);
  last_checkpoint = Clock::now();
  times.checkpoints += seconds;
  ++times.checkpoints_written;
  return seconds;
}

bool Trainer::State::resume_from_checkpoint() {
  if (!config().checkpoint.resume) return false;
  const std::optional<CheckpointInfo> newest = checkpoints->newest_complete();
  if (!newest) return false;
  torch::serialize::InputArchive archive;
  checkpoints->load(*newest, archive);
  const CheckpointMeta meta = read_checkpoint_meta(archive, newest->path);
  if (meta.compatibility_key != compatibility_key()) {
    nlohmann::json theirs = nlohmann::json::object();
    try {
      theirs = nlohmann::json::parse(meta.compatibility_key);
    } catch (const nlohmann::json::exception&) {
    }
    const nlohmann::json ours = nlohmann::json::parse(compatibility_key());
    std::string differences;
    for (const auto& [key, value] : ours.items()) {
      if (!theirs.contains(key) || theirs[key] != value) {
        differences += (differences.empty() ? "" : ", ") + key + " = " +
                       (theirs.contains(key) ? theirs[key].dump() : "(unset)") + " there, " +
                       value.dump() + " here";
      }
    }
    throw ClientError("checkpoint " + newest->path +
                      " comes from a job with another model or data "
                      "configuration (" +
                      differences +
                      "): resume it with its configuration, or "
                      "start fresh with another checkpoint folder or checkpoint.resume = false");
  }
  if (meta.world_size != dist.world_size) {
    throw ClientError("checkpoint " + newest->path + " was written by " +
                      std::to_string(meta.world_size) + " workers and this job has " +
                      std::to_string(dist.world_size) +
                      ": resume it with the same number of hosts and workers per host (the data "
                      "order and batches depend on it), or start fresh with checkpoint.resume = "
                      "false");
  }
  check_position(meta, steps_per_epoch, newest->path);
  read_training_state(archive, newest->path, *model, *optimizer);
  start_epoch = meta.epoch;
  start_step = meta.next_step;
  global_step = meta.global_step;
  history = meta.history;
  summary.best_mean_dice = meta.best_mean_dice;
  summary.best_epoch = meta.best_epoch;
  summary.last_loss = meta.last_loss;
  scaler->restore(meta.loss_scale, meta.loss_scale_good_steps);
  if (start_step >= steps_per_epoch) {  // the checkpoint closed its epoch
    ++start_epoch;
    start_step = 0;
  }
  spdlog::info("resumed from {} ({}): epoch {}, step {} of the epoch, global step {}", newest->path,
               meta.reason, start_epoch + 1, start_step, global_step);
  return true;
}

// Whether epoch (0-based) ends with a validation: every train.validate_every_epochs and the last.
bool Trainer::State::validation_due(int64_t epoch) const {
  const int every = config().train.validate_every_epochs;
  return data_group.validation_cases_in_job > 0 && every > 0 &&
         ((epoch + 1) % every == 0 || epoch + 1 == config().train.epochs);
}

// Whether the job's history holds epoch's validation (0-based).
bool Trainer::State::validated(int64_t epoch) const {
  for (const nlohmann::json& entry : report->history()) {
    if (entry.value("type", "") == "validation" && entry.value("epoch", -1) == epoch + 1) {
      return true;
    }
  }
  return false;
}

void Trainer::State::run_validation(int64_t epoch) {
  const auto validation_started = Clock::now();
  const double trained_since = seconds_since(last_validation_end);
  spdlog::info("epoch {}: validating {} cases", epoch + 1, data_group.validation_cases_in_job);
  const DiceAccumulator dice = validate();
  const double mean = dice.mean();
  nlohmann::json entry = {
      {"type", "validation"}, {"epoch", epoch + 1}, {"step", global_step}, {"val_mean_dice", mean}};
  log_metric("val_mean_dice", mean);
  for (int64_t c = 0; c < std::min<int64_t>(3, config().model.out_channels); ++c) {
    const std::string name = std::string("val_dice_") + kChannelNames[c];
    log_metric(name, dice.channel_mean(c));
    entry[name] = dice.channel_mean(c);
  }
  report->record(entry);
  if (!picture_prediction.empty()) {
    const CaseData& shown = validation_cases.front();
    report->add_picture("validation_picture/" + shown.case_id, global_step,
                        validation_picture(shown, picture_prediction.data()));
    picture_prediction.clear();
  }
  const double seconds = seconds_since(validation_started);
  times.validation += seconds;
  // Its share of the time since the last validation (the training epochs it follows included).
  const double share = seconds / std::max(1e-9, seconds + trained_since);
  spdlog::info(
      "epoch {} validation: mean Dice {:.4f} (TC {:.4f}, WT {:.4f}, ET {:.4f}) on {} "
      "cases in {:.1f} s ({:.0f}% of the time since the last validation)",
      epoch + 1, mean, dice.channel_mean(0), dice.channel_mean(1), dice.channel_mean(2),
      data_group.validation_cases_in_job, seconds, 100.0 * share);
  const int every = config().train.validate_every_epochs;
  if (share > 0.25 && !warned_validation_share && epoch + 1 < config().train.epochs) {
    warned_validation_share = true;
    // share = V / (V + every * T) for validation time V and epoch time T; a 10% share needs
    // every' >= 9 V / T.
    const double ratio = every * share / (1.0 - share);
    spdlog::warn(
        "validation takes {:.0f}% of the training time: train.validate_every_epochs = {} "
        "(val_interval) would bring it to about 10%",
        100.0 * share, static_cast<int64_t>(std::ceil(9.0 * ratio)));
  }
  last_validation_end = Clock::now();
  if (std::isfinite(mean) && mean > summary.best_mean_dice) {
    summary.best_mean_dice = mean;
    summary.best_epoch = epoch + 1;
    if (main())
      save_model_pth(checkpoint_dir + "/best_model.pth", *model, config_to_yaml(resolved));
    spdlog::info("new best mean Dice {:.4f} at epoch {}", mean, epoch + 1);
  }
}

// --- the job's phases -------------------------------------------------------------------------

void Trainer::State::set_up() {
  set_up_device();
  if (dist.is_distributed()) {
    CollectivesOptions options;
    options.backend = resolve_backend(config().dist.backend, compute.device.is_cuda());
    options.timeout_seconds = config().dist.timeout_seconds;
    options.dns_retry_seconds = config().dist.dns_retry_seconds;
    options.network_interface =
        environment.resources.from_file ? environment.resources.network_interface_name : "";
    options.device = compute.device;
    collectives = std::make_unique<Collectives>(dist, options);
    spdlog::info("distributed: rank {} of {} ({} backend, {} hosts x {} workers), master {}:{}",
                 dist.rank, dist.world_size, options.backend, dist.num_nodes, dist.local_world_size,
                 dist.master_addr, dist.master_port);
  }
  load_data();
  agree_on_data();
  build_model();
  HostShape host;
  host.cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  host.local_workers = dist.local_world_size;
  host.cuda = compute.device.is_cuda();
  host.training_cases = data_group.training_cases_in_job;
  host.world_size = dist.world_size;
  automatic = resolve_automatic_settings(config(), host);
  at::set_num_threads(automatic.compute_threads);
  steps_per_epoch = automatic.steps_per_epoch;
  total_steps = steps_per_epoch * config().train.epochs;
  if (streamed) {
    const int64_t group_batch = static_cast<int64_t>(config().train.batch_size) * data_group.size;
    if (steps_per_epoch * group_batch > training_count()) {
      const int64_t most = std::max<int64_t>(1, training_count() / group_batch);
      throw ClientError(
          "train.steps_per_epoch = " + std::to_string(steps_per_epoch) + " needs " +
          std::to_string(steps_per_epoch * group_batch) + " samples per epoch from the stream of "
          "Pipe-mode channel '" + config().data.train_channel + "', which holds " +
          std::to_string(training_count()) + " training records (each is used at most once per "
          "epoch): expected at most " + std::to_string(most) +
          " steps, or data.shuffle_buffer = 0 to keep the cases in memory");
    }
  }
}

void Trainer::State::resume_and_synchronise() {
  open_checkpoints();
  resumed = resume_from_checkpoint();
  if (collectives) {
    // Every rank must resume from the same checkpoint (all hosts sync one S3 prefix).
    std::vector<double> steps = {static_cast<double>(global_step),
                                 static_cast<double>(global_step) * global_step};
    collectives->allreduce_sum(steps);
    const double mean = steps[0] / dist.world_size;
    if (steps[1] / dist.world_size - mean * mean > 0.5) {
      throw PlatformError(
          "the workers found different newest checkpoints in their checkpoint "
          "folders (rank " +
          std::to_string(dist.rank) + " is at step " + std::to_string(global_step) +
          "): every host must see the same "
          "checkpoint S3 prefix");
    }
    std::vector<at::Tensor> parameters = model->parameters();
    collectives->broadcast_parameters(parameters);
    // Measure one gradient sync up front, so the log says what data parallelism costs.
    for (at::Tensor& parameter : parameters) parameter.mutable_grad() = at::zeros_like(parameter);
    const int64_t bucket_bytes = static_cast<int64_t>(config().dist.bucket_mb) << 20;
    collectives->allreduce_mean_gradients(parameters, bucket_bytes);
    int64_t gradient_bytes = 0;
    for (const at::Tensor& parameter : parameters) gradient_bytes += parameter.nbytes();
    spdlog::info(
        "gradient sync: {:.1f} ms for {:.1f} MiB of gradients in buckets of {} MiB "
        "across {} workers",
        1000.0 * collectives->last_sync_seconds(), static_cast<double>(gradient_bytes) / (1 << 20),
        config().dist.bucket_mb, dist.world_size);
    optimizer->zero_grad();
    gradient_sync =
        std::make_unique<OverlappedGradientSync>(*collectives, parameters, bucket_bytes);
  }
  step = std::make_unique<TrainingStep>(
      model, *optimizer, *scaler, compute,
      TrainingStepOptions{config().train.loss, config().optim.grad_clip_norm}, gradient_sync.get());
}

void Trainer::State::open_outputs_and_loader() {
  const Config& c = config();
  JobReportOptions report_options;
  report_options.writer = main();
  report_options.metrics_path = environment.paths.output_data_dir() + "/metrics.jsonl";
  report_options.tensorboard_dir = c.train.tensorboard_dir;
  if (report_options.tensorboard_dir.empty())
    report_options.tensorboard_dir = environment.tensorboard_dir;
  if (report_options.tensorboard_dir.empty()) {
    report_options.tensorboard_dir = environment.paths.default_tensorboard_dir();
  }
  if (report_options.tensorboard_dir == "off") report_options.tensorboard_dir.clear();
  report_options.resumed_at_step = resumed ? global_step : -1;
  if (main()) {
    fs::create_directories(environment.paths.model_dir());
    fs::create_directories(environment.paths.output_data_dir());
  }
  report = std::make_unique<JobReport>(report_options, std::move(history));
  BatchLoaderOptions options;
  options.transforms = RandomTransformOptions::from_config(c);
  options.batch_size = c.train.batch_size;
  options.rank = data_group.rank;
  options.world_size = data_group.size;
  options.seed = static_cast<uint64_t>(c.train.seed);
  // Hosts with cases of their own draw their own crops and augmentations.
  if (data_group.per_host)
    options.seed += 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(dist.node_rank);
  options.num_workers = automatic.loader_threads;
  options.prefetch_batches = c.data.prefetch_batches;
  if (streamed) {
    if (c.data.device_cache == "on") {
      throw ClientError(
          "data.device_cache = on cannot hold Pipe mode's streamed epochs (data.shuffle_buffer "
          "> 0): set data.shuffle_buffer: 0 to read the FIFO once into memory, or "
          "data.device_cache: auto");
    }
    StreamedEpochsOptions stream_options;
    stream_options.shuffle_buffer = c.data.shuffle_buffer;
    stream_options.seed = options.seed;
    stream_options.rank = data_group.rank;
    stream_options.world_size = data_group.size;
    stream_options.batch_size = c.train.batch_size;
    // A sample is released once its crop is cut: a batch per loader thread, and one drawn ahead.
    stream_options.max_held =
        static_cast<int64_t>(automatic.loader_threads + 1) * c.train.batch_size;
    stream_options.skip = streamed_validation_ids;
    stream_options.read = stream_read_options_from_config(c);
    streamed_epochs = std::make_unique<StreamedEpochs>(open_pipe_epoch, stream_options);
    loader = std::make_unique<BatchLoader>(streamed_epochs.get(), options);
  } else if (!use_device_cache()) {
    loader = std::make_unique<BatchLoader>(&train_cases, options);
  }
  std::string data_path;
  if (loader) {
    batches = make_host_batches(*loader, compute.device);
    // The loader holds at most prefetch_batches batches (plus one sample per slot being cut).
    const double roi_voxels = static_cast<double>(c.augment.roi_size[0]) * c.augment.roi_size[1] *
                              c.augment.roi_size[2];
    const double sample_bytes =
        roi_voxels * (c.model.in_channels * sizeof(float) + c.model.out_channels);
    const double loader_mib =
        c.data.prefetch_batches * (c.train.batch_size + 1) * sample_bytes / (1 << 20);
    data_path = fmt::format("{} loader threads holding at most {:.0f} MiB", options.num_workers,
                            loader_mib);
  } else {
    const Clock::time_point started = Clock::now();
    batches = make_device_cache(train_cases, options, compute.device);
    data_path = fmt::format("the {} training cases cached on {} ({:.0f} MiB, uploaded in {:.1f} s)",
                            train_cases.size(), compute.device.str(),
                            static_cast<double>(batches->device_bytes()) / (1 << 20),
                            seconds_since(started));
  }
  spdlog::info(
      "training: {} epochs x {} steps, batch {} per worker (roi {}x{}x{}), {} compute threads, "
      "{}, checkpoints in {}{}",
      c.train.epochs, steps_per_epoch, c.train.batch_size, c.augment.roi_size[0],
      c.augment.roi_size[1], c.augment.roi_size[2], automatic.compute_threads, data_path,
      checkpoint_dir, resumed ? " (resumed)" : "");
}

// Before the network is built: its weights, gradients and Adam's two moments (16 bytes a weight)
// must fit in what the training device has free, or the job would be killed by the kernel's (or
// the GPU's) out-of-memory handling instead of saying why.
void Trainer::State::check_network_fits() const {
  const double weights = estimated_unet_weights(config().model);
  const double needed = 16.0 * weights;
  const bool on_gpu = compute.device.is_cuda();
  const int64_t available = free_memory_bytes(compute);
  if (available > 0 && needed > static_cast<double>(available)) {
    throw ClientError(fmt::format(
        "model.channels [{}]: a network of about {:.0f} million weights needs about {:.1f} GiB "
        "to train (weights, gradients and Adam's moments), more than the {:.1f} GiB {} has "
        "free; use fewer channels",
        fmt::join(config().model.channels, ", "), weights / 1e6, needed / (1 << 30),
        static_cast<double>(available) / (1 << 30),
        on_gpu ? compute.device.str() : std::string("this host")));
  }
}

// data.device_cache: auto keeps the cases on a GPU when they take at most half of its free memory
// (the rest is the network's, its activations' and the validation's); on insists, also on the
// CPU, and fails when they cannot fit; off never. Pipe mode's streamed epochs never hold the
// cases.
bool Trainer::State::use_device_cache() {
  const std::string& setting = config().data.device_cache;
  if (setting == "off") return false;
  const std::array<int64_t, 3> roi = RandomTransformOptions::from_config(config()).roi_size;
  const int64_t bytes = device_cache_bytes(train_cases, roi);
  const bool on_gpu = compute.device.is_cuda();
  const int64_t free = on_gpu ? free_memory_bytes(compute) : 0;
  const auto mib = [](int64_t b) { return fmt::format("{:.0f} MiB", b / 1048576.0); };
  if (setting == "auto") {
    if (!on_gpu) return false;
    if (bytes <= free / 2) return true;
    spdlog::info("data.device_cache auto: the training cases take {}, more than half of the {} "
                 "free on {}: host loader threads crop them",
                 mib(bytes), mib(free), compute.device.str());
    return false;
  }
  if (on_gpu && bytes > free) {
    throw ClientError("data.device_cache = on: the training cases take " + mib(bytes) +
                      " on " + compute.device.str() + ", which has " + mib(free) +
                      " free; use data.device_cache: auto or off");
  }
  return true;
}

void Trainer::State::report_progress(int64_t epoch, const DeviceBatch& batch, double loss,
                                     ProgressMeter& meter) {
  const Config& c = config();
  if (collectives) {  // the loss of the global batch
    std::vector<double> losses = {loss};
    collectives->allreduce_sum(losses);
    loss = losses[0] / dist.world_size;
  }
  const ProgressReport progress = meter.report(global_step);
  const double lr = learning_rate_at(c.optim, c.schedule, global_step - 1, total_steps);
  nlohmann::json entry = {{"type", "train"},
                          {"epoch", epoch + 1},
                          {"step", global_step},
                          {"train_loss", loss},
                          {"learning_rate", lr},
                          {"samples_per_second", progress.samples_per_second},
                          {"step_seconds", progress.step_seconds}};
  std::string sync;
  if (collectives) {
    sync = fmt::format(
        " gradient sync not hidden by backward {:.1f} ms/step ({:.0f}% of the "
        "step)",
        1000.0 * progress.exposed_sync_seconds_per_step, 100.0 * progress.exposed_sync_share);
    log_metric("gradient_sync_seconds_per_step", progress.exposed_sync_seconds_per_step);
    entry["gradient_sync_seconds_per_step"] = progress.exposed_sync_seconds_per_step;
  }
  std::string parts;
  nlohmann::json shares = nlohmann::json::object();
  for (const auto& [name, share] : progress.shares()) {
    parts += fmt::format(" {} {:.0f}%", name, 100.0 * share);
    shares[name] = share;
  }
  entry["step_time_share"] = shares;
  spdlog::info("epoch {}/{} step {}/{} loss {:.4f} lr {:.3g} {:.2f} samples/s eta {}{}", epoch + 1,
               c.train.epochs, batch.step + 1, steps_per_epoch, loss, lr,
               progress.samples_per_second, format_duration(progress.eta_seconds), sync);
  spdlog::info("step time {:.0f} ms:{}", 1000.0 * progress.step_seconds, parts);
  log_metric("train_loss", loss);
  log_metric("learning_rate", lr);
  log_metric("samples_per_second", progress.samples_per_second);
  report->record(std::move(entry));
}

void Trainer::State::train_epochs() {
  const Config& c = config();
  ProgressMeter meter(global_step, total_steps, dist.world_size);
  last_checkpoint = Clock::now();
  last_validation_end = Clock::now();
  const Clock::time_point epochs_started = Clock::now();
  // Resumed at the end of an epoch whose validation a stop request interrupted: validate it now.
  if (start_epoch > 0 && start_step == 0 && validation_due(start_epoch - 1) &&
      !validated(start_epoch - 1)) {
    spdlog::info("epoch {} was not validated before the restart: validating it now",
                 start_epoch);
    run_validation(start_epoch - 1);
    save_checkpoint(start_epoch - 1, steps_per_epoch, "epoch end");
  }
  const double validation_before = times.validation;
  const double checkpoints_before = times.checkpoints;
  for (int64_t epoch = start_epoch; epoch < c.train.epochs; ++epoch) {
    const int64_t first_step = epoch == start_epoch ? start_step : 0;
    batches->start_epoch(static_cast<uint64_t>(epoch), steps_per_epoch, first_step);
    DeviceBatch batch;
    // On a GPU the timed step's copy waits for nothing queued before it.
    if (compute.device.is_cuda() && (global_step + 1) % c.train.log_every_steps == 0) {
      cuda::synchronize();
    }
    Clock::time_point waiting_since = Clock::now();
    while (batches->next(batch)) {
      const double data_wait = std::max(0.0, seconds_since(waiting_since) - batch.copy_seconds);
      // Occasional work first, at the step boundary: a stop request ends the job here.
      if (stop()) {
        summary.stopped_early = true;
        spdlog::warn("stop requested at global step {}: writing a checkpoint and the model",
                     global_step);
        save_checkpoint(epoch, batch.step, "stop");
        break;
      }
      set_learning_rate(*optimizer,
                        learning_rate_at(c.optim, c.schedule, global_step, total_steps));
      // On a GPU the phases are timed (with device synchronisation) on one step per progress
      // line; on the CPU every step is timed exactly at no cost.
      const bool timed =
          !compute.device.is_cuda() || (global_step + 1) % c.train.log_every_steps == 0;
      StepResult result = train_step(batch, timed);
      result.times.data_wait = data_wait;
      heartbeat.beat();
      ++global_step;
      meter.add_step(batch.batch_size, result.times, timed);
      times.samples += batch.batch_size;
      summary.last_loss = result.loss;
      const bool last_of_epoch = batch.step + 1 == steps_per_epoch;
      if (global_step % c.train.log_every_steps == 0 || last_of_epoch) {
        report_progress(epoch, batch, result.loss, meter);
      }
      // Counted in the next progress line's interval, whose wall time includes it.
      if (!last_of_epoch && checkpoint_due()) {
        meter.add_checkpoint(save_checkpoint(epoch, batch.step + 1, "periodic"));
      }
      if (compute.device.is_cuda() && (global_step + 1) % c.train.log_every_steps == 0) {
        cuda::synchronize();
      }
      waiting_since = Clock::now();
    }
    if (summary.stopped_early) break;
    summary.epochs_completed = epoch + 1;
    log_metric("epoch", static_cast<double>(epoch + 1));
    const Clock::time_point epoch_end_started = Clock::now();
    if (validation_due(epoch)) {
      try {
        run_validation(epoch);
      } catch (const StopRequested&) {
        // The epoch's training is whole: its checkpoint keeps it, and the next start validates
        // the epoch before it trains on.
        summary.stopped_early = true;
        spdlog::warn("stop requested during the validation of epoch {}: writing the epoch's "
                     "checkpoint and the model; the next start validates epoch {} first",
                     epoch + 1, epoch + 1);
        save_checkpoint(epoch, steps_per_epoch, "stop");
        break;
      }
    }
    save_checkpoint(epoch, steps_per_epoch, "epoch end");
    meter.exclude(seconds_since(epoch_end_started));
  }
  summary.epochs_completed = std::max(summary.epochs_completed, start_epoch);
  summary.global_steps = global_step;
  times.training = seconds_since(epochs_started) - (times.validation - validation_before) -
                   (times.checkpoints - checkpoints_before);
  spdlog::info("training {}: {} epochs, {} steps in {}",
               summary.stopped_early ? "stopped" : "finished", summary.epochs_completed,
               global_step, format_duration(meter.seconds_since_start()));
}

// The story of a job: set up (device, process group, data, model), resume from the newest
// checkpoint and agree on it across ranks, open the outputs and the loader, train, write the model.
TrainSummary Trainer::run() {
  State& s = *state_;
  s.set_up();
  s.resume_and_synchronise();
  s.open_outputs_and_loader();
  s.times.setup = seconds_since(s.times.started);
  s.train_epochs();
  s.report_memory();
  s.write_final_outputs();
  return s.summary;
}

}  // namespace medseg
