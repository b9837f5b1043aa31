// `medseg bench`: throughput benchmarks that print numbers (one `name=value` per line plus a
// readable summary), never pass/fail.
//   bench preprocess  seconds per full-size case: .nii.gz decode + static transforms
//   bench crops       random 128x128x64 crops per second per thread
//   bench records     record shard read throughput (memory-mapped, first and later epochs)
//   bench train       samples/s of forward + backward + optimiser step, peak memory
//   bench loader      the training input pipeline at scale: N GB of mapped records, 1..n workers
//   bench serve       medseg serve: request latency and throughput at concurrency 1 and 4
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <httplib.h>
#include <libdeflate.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "app/commands.h"
#include "config/component_options.h"
#include "config/config_loader.h"
#include "data/batch_loader.h"
#include "data/case_store.h"
#include "data/random_transforms.h"
#include "data/streamed_epochs.h"
#include "data/synthetic_cases.h"
#include "dist/collectives.h"
#include "dist/dist_env.h"
#include "dist/launcher.h"
#include "io/medseg_record.h"
#include "io/pipe_channel.h"
#include "model/model_io.h"
#include "model/unet.h"
#include "train/automatic_settings.h"
#include "train/compute.h"
#include "train/device_batches.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"
#include "train/training_step.h"
#include "util/archive.h"
#include "util/clock.h"
#include "util/cuda.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/log.h"
#include "util/memory.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

double percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1,
                                static_cast<size_t>(fraction * static_cast<double>(values.size())));
  return values[index];
}

int all_cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

void print_result(const std::string& name, double value) {
  std::printf("%s=%.6g\n", name.c_str(), value);
  std::fflush(stdout);
}

// Runs `work(thread_index)` on `threads` threads at once and returns the wall time.
double run_parallel(int threads, const std::function<void(int)>& work) {
  const auto started = Clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back(work, t);
  for (std::thread& worker : workers) worker.join();
  return seconds_since(started);
}

ResolvedConfig bench_resolved_config(const BenchCommandOptions& options) {
  JobEnvironment environment;
  environment.paths = MlPaths{"/nonexistent-ml-root"};
  ConfigRequest request;
  request.shipped_config = find_shipped_config();
  request.overrides = options.overrides;
  return resolve_config(environment, request);
}

Config bench_config(const BenchCommandOptions& options) {
  return bench_resolved_config(options).config;
}

// The floor of preprocessing a .nii.gz case: reading its files and gunzipping them with
// libdeflate into reused buffers, nothing else. Seconds for `source` on one thread.
// One pair of buffers per file of a case, kept from case to case: no allocation, page fault or
// re-zeroing is timed.
struct FloorBuffers {
  std::vector<std::vector<uint8_t>> compressed_of, decompressed_of;
};

double decode_floor_seconds(const CaseSource& source, FloorBuffers& buffers) {
  std::vector<std::vector<uint8_t>>& compressed_of = buffers.compressed_of;
  std::vector<std::vector<uint8_t>>& decompressed_of = buffers.decompressed_of;
  std::unique_ptr<libdeflate_decompressor, void (*)(libdeflate_decompressor*)> decompressor(
      libdeflate_alloc_decompressor(), libdeflate_free_decompressor);
  std::vector<std::string> files = source.image_files;
  if (!source.label_file.empty()) files.push_back(source.label_file);
  const auto started = Clock::now();
  compressed_of.resize(std::max(compressed_of.size(), files.size()));
  decompressed_of.resize(std::max(decompressed_of.size(), files.size()));
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string& file = files[f];
    std::vector<uint8_t>& compressed = compressed_of[f];
    std::vector<uint8_t>& decompressed = decompressed_of[f];
    const ReadOnlyFile input(file, "NIfTI file");
    compressed.resize(static_cast<size_t>(input.size()));
    input.read_at(0, input.size(), compressed.data());
    if (compressed.size() < 18) continue;
    uint32_t size = 0;  // ISIZE: the uncompressed size mod 2^32, little-endian
    std::memcpy(&size, compressed.data() + compressed.size() - 4, 4);
    decompressed.resize(size);
    size_t produced = 0;
    libdeflate_gzip_decompress(decompressor.get(), compressed.data(), compressed.size(),
                               decompressed.data(), decompressed.size(), &produced);
  }
  return seconds_since(started);
}

int bench_preprocess(const BenchCommandOptions& options) {
  const Config config = bench_config(options);
  const bool synthetic = options.data_dir.empty();
  const std::string dir =
      synthetic
          ? (fs::temp_directory_path() / ("medseg-bench-" + std::to_string(getpid()))).string()
          : options.data_dir;
  if (synthetic) {
    SynthOptions synth;
    synth.out_dir = dir;
    synth.cases = options.cases;
    synth.shape = options.shape;
    spdlog::info("bench preprocess: writing {} synthetic {}x{}x{}x4 cases to {}", synth.cases,
                 synth.shape[0], synth.shape[1], synth.shape[2], dir);
    write_synthetic_dataset(synth);
  }
  DatasetIndex index = discover_dataset(dir, synthetic ? "decathlon" : config.data.layout, true);
  if (index.layout == DatasetLayout::kRecords) {
    throw ClientError(dir +
                      " holds medseg records, which are already preprocessed; bench "
                      "preprocess times NIfTI cases (Decathlon or BraTS folders)");
  }
  if (index.cases.size() > static_cast<size_t>(options.cases)) {
    index.cases.resize(static_cast<size_t>(options.cases));
  }
  if (!synthetic) {
    spdlog::info("bench preprocess: {} cases of {} ({} layout)", index.cases.size(), dir,
                 config.data.layout);
  }
  CaseLoadOptions load;
  load.transforms.pixdim = {config.data.pixdim[0], config.data.pixdim[1], config.data.pixdim[2]};
  load.read.max_bytes = int64_t{8} << 30;

  // As preprocess's threads work: case after case with one set of reused buffers. Returns the
  // preprocessed shape.
  struct Shapes {
    std::array<int64_t, 3> input{}, output{};
    int64_t channels = 0;
  };
  const auto preprocess = [&](const CaseSource& source, CaseBuffers& buffers) {
    CaseData data = load_case(source, load, &buffers);
    give_back(data, buffers);
    return Shapes{data.original.spatial_shape, data.spatial_shape, data.image_channels};
  };
  // Warm the page cache and the thread's buffers on every case, then time each case, twice
  // over, as preprocess's threads work (case after case); then the decode floor the same way.
  // Warming on every case: a long job's threads have long since met its largest files, while
  // here one regrowth (a fresh allocation, page-faulted) would weigh on the few cases timed.
  // The medians of the per-case times are robust to the odd slow case a shared machine gives.
  CaseBuffers buffers;
  for (const CaseSource& source : index.cases) preprocess(source, buffers);
  Shapes shapes;  // of the last case timed
  std::vector<double> case_seconds, floor_seconds;
  for (int round = 0; round < 2; ++round) {
    for (const CaseSource& source : index.cases) {
      const auto started = Clock::now();
      shapes = preprocess(source, buffers);
      case_seconds.push_back(seconds_since(started));
    }
  }
  FloorBuffers floor_buffers;
  for (const CaseSource& source : index.cases) decode_floor_seconds(source, floor_buffers);
  for (int round = 0; round < 2; ++round) {
    for (const CaseSource& source : index.cases) {
      floor_seconds.push_back(decode_floor_seconds(source, floor_buffers));
    }
  }
  const double one_thread = percentile(case_seconds, 0.5);
  const double floor = percentile(floor_seconds, 0.5);

  const int threads = options.threads > 0 ? options.threads : all_cores();
  std::atomic<size_t> next{0};
  const size_t rounds = index.cases.size() * static_cast<size_t>(threads);
  std::vector<CaseBuffers> thread_buffers(static_cast<size_t>(threads));
  run_parallel(threads, [&](int thread) {  // each thread's buffers warmed up, as above
    for (const CaseSource& source : index.cases) {
      preprocess(source, thread_buffers[static_cast<size_t>(thread)]);
    }
  });
  const double wall = run_parallel(threads, [&](int thread) {
    for (size_t i = next++; i < rounds; i = next++) {
      preprocess(index.cases[i % index.cases.size()], thread_buffers[static_cast<size_t>(thread)]);
    }
  });
  const double all_threads = wall / static_cast<double>(rounds);
  // The floor the same way on every thread at once: the cores share the memory bus and the
  // last-level cache, which slows both down.
  std::vector<FloorBuffers> thread_floor_buffers(static_cast<size_t>(threads));
  run_parallel(threads, [&](int thread) {  // warmed up on every case, as above
    for (const CaseSource& source : index.cases) {
      decode_floor_seconds(source, thread_floor_buffers[static_cast<size_t>(thread)]);
    }
  });
  next = 0;
  const double floor_wall = run_parallel(threads, [&](int thread) {
    for (size_t i = next++; i < rounds; i = next++) {
      decode_floor_seconds(index.cases[i % index.cases.size()],
                           thread_floor_buffers[static_cast<size_t>(thread)]);
    }
  });
  const double floor_all_threads = floor_wall / static_cast<double>(rounds);
  if (synthetic) fs::remove_all(dir);

  spdlog::info(
      "bench preprocess: {}x{}x{}x{} -> {}x{}x{}{}: {:.3f} s per case on 1 thread (median of "
      "{}), {:.3f} s per case with {} threads ({:.3f} s per case per core)",
      shapes.input[0], shapes.input[1], shapes.input[2], shapes.channels, shapes.output[0],
      shapes.output[1], shapes.output[2], synthetic ? "" : " (the last case)", one_thread,
      case_seconds.size(), all_threads, threads, all_threads * threads);
  spdlog::info(
      "bench preprocess: decode floor (read + libdeflate gunzip only) {:.3f} s per case on 1 "
      "thread; full preprocessing takes {:.2f}x that",
      floor, one_thread / floor);
  spdlog::info(
      "bench preprocess: with {} threads, {:.3f} s per case per core against a decode floor of "
      "{:.3f} s per case per core on as many threads: {:.2f}x",
      threads, all_threads * threads, floor_all_threads * threads, all_threads / floor_all_threads);
  print_result("preprocess_decode_floor_seconds_per_case", floor);
  print_result("preprocess_seconds_per_case_1_thread", one_thread);
  print_result("preprocess_over_floor", one_thread / floor);
  print_result("preprocess_seconds_per_case_all_threads", all_threads);
  print_result("preprocess_decode_floor_seconds_per_case_all_threads", floor_all_threads);
  print_result("preprocess_over_floor_all_threads", all_threads / floor_all_threads);
  print_result("preprocess_threads", threads);
  return 0;
}

int bench_crops(const BenchCommandOptions& options) {
  const Config config = bench_config(options);
  // A preprocessed Task01-size case: 160x160x78, 4 channels.
  CaseData data;
  data.case_id = "bench";
  data.spatial_shape = {160, 160, 78};
  data.image_channels = 4;
  data.label_channels = 3;
  const int64_t voxels = 160 * 160 * 78;
  data.image.resize(static_cast<size_t>(4 * voxels));
  for (size_t i = 0; i < data.image.size(); ++i)
    data.image[i] = static_cast<float>(i % 1000) * 1e-3f;
  data.label.assign(static_cast<size_t>(3 * voxels), 1);
  RandomTransformOptions transforms = RandomTransformOptions::from_config(config);
  transforms.roi_size = {options.roi[0], options.roi[1], options.roi[2]};

  auto crops_per_second = [&](int threads) {
    const int per_thread = options.steps;
    const double wall = run_parallel(threads, [&](int t) {
      Sample sample;
      for (int i = 0; i < per_thread; ++i) {
        make_random_sample(data, transforms, 0, static_cast<uint64_t>(t), static_cast<uint64_t>(i),
                           sample);
      }
    });
    return per_thread / wall;  // per thread
  };
  crops_per_second(1);  // warm-up
  const double one = crops_per_second(1);
  const int threads = options.threads > 0 ? options.threads : all_cores();
  const double many = crops_per_second(threads);
  spdlog::info(
      "bench crops: {}x{}x{} crops of a 160x160x78x4 case: {:.0f} per second on 1 thread, "
      "{:.0f} per second per thread with {} threads",
      options.roi[0], options.roi[1], options.roi[2], one, many, threads);
  print_result("crops_per_second_1_thread", one);
  print_result("crops_per_second_per_thread_all_threads", many);
  return 0;
}

int bench_records(const BenchCommandOptions& options) {
  // Shards of `cases` preprocessed Task01-size cases (160x160x78, 4 + 3 channels).
  const std::array<int64_t, 3> shape = {160, 160, 78};
  const std::string dir = fs::temp_directory_path() / ("medseg-bench-" + std::to_string(getpid()));
  fs::create_directories(dir);
  CaseData data;
  data.case_id = "bench";
  data.spatial_shape = shape;
  data.image_channels = 4;
  data.label_channels = 3;
  const int64_t voxels = shape[0] * shape[1] * shape[2];
  data.image.resize(static_cast<size_t>(4 * voxels));
  for (size_t i = 0; i < data.image.size(); ++i) data.image[i] = std::sin(i * 1e-3f) * 3.0f;
  data.label.assign(static_cast<size_t>(3 * voxels), 0);
  for (ImageDType dtype : {ImageDType::kFloat32, ImageDType::kFloat16}) {
    const std::string path = dir + "/" + image_dtype_name(dtype) + kShardFileSuffix;
    {
      RecordWriter writer(path, {dtype});
      for (int i = 0; i < options.cases; ++i) writer.append(data);
      writer.finish();
    }
    const double file_mb = static_cast<double>(fs::file_size(path)) / 1e6;
    const double decoded_mb = options.cases * (4.0 * 4 + 3) * voxels / 1e6;
    std::vector<float> image(static_cast<size_t>(4 * voxels));
    std::vector<uint8_t> label(static_cast<size_t>(3 * voxels));
    auto started = Clock::now();
    MappedRecordReader reader(path);
    for (size_t i = 0; i < reader.size(); ++i) reader.read_into(i, image.data(), label.data());
    const double first = seconds_since(started);
    started = Clock::now();
    for (size_t i = 0; i < reader.size(); ++i) reader.read_into(i, image.data(), label.data());
    const double warm = seconds_since(started);
    const std::string name = std::string("records_") + image_dtype_name(dtype);
    spdlog::info(
        "bench records: {} x {}x{}x{}x4 {} ({:.0f} MB): first read (mmap + CRC) {:.0f} "
        "MB/s decoded, later epochs {:.0f} MB/s decoded",
        options.cases, shape[0], shape[1], shape[2], image_dtype_name(dtype), file_mb,
        decoded_mb / first, decoded_mb / warm);
    print_result(name + "_first_read_mb_per_second", decoded_mb / first);
    print_result(name + "_warm_read_mb_per_second", decoded_mb / warm);
  }
  fs::remove_all(dir);
  return 0;
}

// --cases random cases of --shape (normal intensities, about 30% foreground labels) for the
// input benchmarks of bench train.
std::vector<CaseData> bench_cases(const BenchCommandOptions& options, const UNetOptions& unet) {
  std::vector<CaseData> cases(static_cast<size_t>(options.cases));
  for (int n = 0; n < options.cases; ++n) {
    CaseData& data = cases[static_cast<size_t>(n)];
    data.case_id = "bench" + std::to_string(n);
    data.spatial_shape = {options.shape[0], options.shape[1], options.shape[2]};
    data.image_channels = unet.in_channels;
    data.label_channels = unet.out_channels;
    const int64_t voxels = data.voxels_per_channel();
    data.image.resize(static_cast<size_t>(voxels * unet.in_channels));
    at::from_blob(data.image.data(), {voxels * unet.in_channels}, at::kFloat).normal_();
    data.label.resize(static_cast<size_t>(voxels * unet.out_channels));
    at::from_blob(data.label.data(), {voxels * unet.out_channels}, at::kByte)
        .copy_(at::rand({voxels * unet.out_channels}) > 0.7);
  }
  return cases;
}

int bench_train(const BenchCommandOptions& options) {
  Config config = bench_config(options);
  // --nproc N: N local workers with data parallelism, to measure the gradient sync.
  if (options.nproc > 1 && !is_launched_worker()) {
    LaunchOptions launch;
    launch.heartbeat_timeout_seconds = 0;
    const LaunchResult result = run_workers(current_command_line(), options.nproc, launch);
    if (!result.failure.empty()) throw PlatformError("bench train: " + result.failure);
    return 0;
  }
  const DistEnv dist =
      resolve_dist_env(ResourceConfig(), std::max(1, options.nproc), options.master_port);
  init_logging(LogOptions{"info", dist.rank, dist.world_size, dist.local_rank});
  // The step and precision `medseg train` would use with this configuration, including loss
  // scaling, clipping and the non-finite check.
  ComputeRequest request;
  request.device = options.device;
  request.amp = options.amp;
  request.local_rank = dist.local_rank;
  request.device_setting = "bench train --device";
  request.amp_setting = "bench train --amp";
  request.cudnn_benchmark = config.train.cudnn_benchmark;
  request.channels_last = config.train.channels_last;
  const Compute compute = resolve_compute(request);
  const at::Device device = compute.device;
  // --threads 0: the rule train.num_threads 0 follows (cores divided among the host's workers).
  config.train.num_threads = options.threads;
  HostShape host;
  host.cores = all_cores();
  host.local_workers = dist.local_world_size;
  host.cuda = device.is_cuda();
  const AutomaticSettings automatic = resolve_automatic_settings(config, host);
  at::set_num_threads(automatic.compute_threads);
  const UNetOptions unet = unet_options_from_config(config.model);
  UNet model(unet);
  model->to(device);
  to_compute_layout(*model, compute);
  auto optimizer = make_optimizer(config.optim, model->parameters());
  DynamicLossScaler scaler(compute.loss_scaling);
  std::unique_ptr<Collectives> collectives;
  std::unique_ptr<OverlappedGradientSync> gradient_sync;
  if (dist.is_distributed() || options.sync) {
    CollectivesOptions collective_options;
    collective_options.backend = resolve_backend("auto", device.is_cuda());
    collective_options.device = device;
    collective_options.group_for_one_worker = options.sync;
    collectives = std::make_unique<Collectives>(dist, collective_options);
    gradient_sync = std::make_unique<OverlappedGradientSync>(
        *collectives, model->parameters(), static_cast<int64_t>(config.dist.bucket_mb) << 20);
  }
  TrainingStep training_step(model, *optimizer, scaler, compute,
                             TrainingStepOptions{config.train.loss, config.optim.grad_clip_norm},
                             gradient_sync.get());
  const at::Tensor image =
      at::randn({options.batch, unet.in_channels, options.roi[0], options.roi[1], options.roi[2]},
                at::TensorOptions().device(device));
  const at::Tensor label =
      (at::rand({options.batch, unet.out_channels, options.roi[0], options.roi[1], options.roi[2]},
                at::TensorOptions().device(device)) > 0.7)
          .to(at::kFloat);
  // --input loader or device-cache: each step's batch is cut from --cases random cases of
  // --shape by the host loader's threads (copied per step) or on the device, and its time is
  // part of the step.
  std::unique_ptr<TrainingSet> cases;
  std::unique_ptr<BatchLoader> loader;
  std::unique_ptr<DeviceBatches> batches;
  if (options.input != "tensor") {
    cases = std::make_unique<TrainingSet>(bench_cases(options, unet));
    BatchLoaderOptions loader_options;
    loader_options.transforms = RandomTransformOptions::from_config(config);
    loader_options.transforms.roi_size = options.roi;
    loader_options.batch_size = options.batch;
    loader_options.num_workers = automatic.loader_threads;
    loader_options.prefetch_batches = config.data.prefetch_batches;
    if (options.input == "loader") {
      loader = std::make_unique<BatchLoader>(cases.get(), loader_options);
      batches = make_host_batches(*loader, device);
    } else {
      batches = make_device_cache(*cases, loader_options, device);
    }
    batches->start_epoch(0, options.warmup + options.steps, 0);
    spdlog::info(
        "bench train: batches from {} ({} cases of {}x{}x{}; {} loader threads, {} "
        "compute threads)",
        options.input, cases->size(), options.shape[0], options.shape[1], options.shape[2],
        loader ? automatic.loader_threads : 0, automatic.compute_threads);
  }
  int64_t step_number = 0;
  StepTimes times;
  DeviceBatch batch;
  auto step = [&] {
    if (!batches) {
      times = training_step.run(image, label, step_number++, /*synchronize_phases=*/true).times;
      return;
    }
    const Clock::time_point started = Clock::now();
    batches->next(batch);
    if (device.is_cuda()) cuda::synchronize();
    const double data_seconds = seconds_since(started);
    times = training_step.run(batch.image, batch.label, step_number++, true).times;
    times.data_wait = data_seconds;
  };
  for (int i = 0; i < options.warmup; ++i) step();
  std::vector<double> seconds;
  std::vector<StepTimes> parts;
  for (int i = 0; i < options.steps; ++i) {
    const auto started = Clock::now();
    step();
    seconds.push_back(seconds_since(started));
    parts.push_back(times);
  }
  const double median = percentile(seconds, 0.5);
  const auto median_part = [&](double StepTimes::*part) {
    std::vector<double> values;
    for (const StepTimes& t : parts) values.push_back(t.*part);
    return percentile(values, 0.5);
  };
  const double median_sync = median_part(&StepTimes::exposed_sync);
  const double samples_per_second = options.batch * dist.world_size / median;
  if (!dist.is_main()) return 0;
  if (gradient_sync) {
    spdlog::info(
        "bench train: {} workers, gradient sync not hidden by backward {:.1f} ms per "
        "step ({:.0f}% of the step; {} buckets of {} MiB)",
        dist.world_size, 1000.0 * median_sync, 100.0 * median_sync / median,
        gradient_sync->bucket_count(), config.dist.bucket_mb);
    print_result("train_gradient_sync_seconds_median", median_sync);
    print_result("train_gradient_sync_share", median_sync / median);
  }
  const std::pair<const char*, double StepTimes::*> phases[] = {
      {"data", &StepTimes::data_wait},
      {"forward", &StepTimes::forward},
      {"backward", &StepTimes::backward},
      {"optimizer", &StepTimes::optimizer}};
  std::string breakdown;
  for (const auto& [name, part] : phases) {
    const double value = median_part(part);
    breakdown += fmt::format("{}{} {:.1f} ms ({:.0f}%)", breakdown.empty() ? "" : ", ", name,
                             1000.0 * value, 100.0 * value / median);
    print_result(std::string("train_") + name + "_seconds_median", value);
  }
  // The arithmetic the step does (forward + backward of every convolution), against the time.
  const double flop_per_sample = unet_training_flop_per_sample(unet, options.roi);
  const double tflops = flop_per_sample * options.batch / median / 1e12;
  spdlog::info(
      "bench train: step parts (medians): {}; {:.1f} GFLOP per sample, {:.3g} TFLOP/s "
      "achieved per worker",
      breakdown, flop_per_sample / 1e9, tflops);
  print_result("train_gflop_per_sample", flop_per_sample / 1e9);
  print_result("train_tflops_per_worker", tflops);
  const double peak_mib =
      static_cast<double>(device.is_cuda() ? cuda::peak_memory_bytes(device.index())
                                           : memory_usage().peak_resident_bytes) /
      (1 << 20);
  spdlog::info(
      "bench train: {} batch {} roi {}x{}x{} precision {}{}{}, input {}: median step {:.3f} s, "
      "{:.2f} samples/s, peak {} memory {:.0f} MiB ({} timed steps after {} warm-up, {} "
      "parameters)",
      device.str(), options.batch, options.roi[0], options.roi[1], options.roi[2],
      compute.precision, compute.cudnn_benchmark ? ", cuDNN benchmark" : "",
      compute.channels_last ? ", channels-last" : "", options.input, median, samples_per_second,
      device.is_cuda() ? "GPU" : "process", peak_mib, options.steps, options.warmup,
      count_parameters(*model));
  print_result("train_step_seconds_median", median);
  print_result("train_samples_per_second", samples_per_second);
  print_result("train_peak_memory_mib", peak_mib);
  return 0;
}

// What one loader worker measured, written to its result file as "samples seconds peak private
// read_bytes".
struct LoaderWorkerResult {
  double samples = 0, seconds = 0, peak_bytes = 0, private_bytes = 0, read_bytes = 0;
};

// Bytes this process made the kernel fetch from storage (page faults on mapped files included).
double storage_read_bytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  double value = 0;
  while (io >> key >> value) {
    if (key == "read_bytes:") return value;
  }
  return 0;
}

// Training-size crops from `folder` through the training loader, as worker `rank` of `workers`.
LoaderWorkerResult run_loader_worker(const std::string& folder, const BenchCommandOptions& options,
                                     int rank, int workers, int64_t num_cases, bool pipe) {
  // File mode maps the shards (checking them touches every page once); Pipe mode never maps them.
  TrainingSet cases;
  if (!pipe) {
    auto reader = std::make_shared<const MappedRecordReader>(folder);
    std::vector<size_t> all(reader->size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    cases = TrainingSet(reader, all);
  }
  BatchLoaderOptions loader_options;
  loader_options.transforms = RandomTransformOptions::from_config(bench_config(options));
  loader_options.transforms.roi_size = {options.roi[0], options.roi[1], options.roi[2]};
  loader_options.batch_size = options.batch;
  loader_options.rank = rank;
  loader_options.world_size = workers;
  loader_options.num_workers = options.threads > 0 ? options.threads : 1;
  // One epoch that visits every case once across the workers.
  const int64_t steps = std::max<int64_t>(1, num_cases / (options.batch * workers));
  // Pipe mode: the shards stream through a FIFO, as SageMaker delivers them (a thread here plays
  // SageMaker's part), into the shuffle buffer of data.shuffle_buffer cases.
  std::unique_ptr<StreamedEpochs> stream;
  std::thread sagemaker;
  if (pipe) {
    const std::string fifo_dir = folder + "/pipe";
    fs::create_directories(fifo_dir);
    if (::mkfifo((fifo_dir + "/train_0").c_str(), 0600) != 0) {
      throw_system_error("cannot create a FIFO in " + fifo_dir);
    }
    sagemaker = std::thread([folder, fifo_dir] {
      sigset_t block;
      sigemptyset(&block);
      sigaddset(&block, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &block, nullptr);
      std::ofstream fifo(fifo_dir + "/train_0", std::ios::binary);
      std::vector<std::string> files;
      for (const auto& entry : fs::directory_iterator(folder)) {
        if (entry.path().extension() == kShardFileSuffix) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      for (const std::string& file : files) fifo << std::ifstream(file, std::ios::binary).rdbuf();
    });
    PipeChannelOptions pipe_options;
    pipe_options.data_dir = fifo_dir;
    pipe_options.channel = "train";
    auto channel = std::make_shared<PipeChannel>(pipe_options);
    StreamedEpochsOptions stream_options;
    stream_options.shuffle_buffer = bench_config(options).data.shuffle_buffer;
    stream_options.batch_size = options.batch;
    stream_options.max_held = static_cast<int64_t>(loader_options.num_workers + 1) * options.batch;
    stream = std::make_unique<StreamedEpochs>([channel] { return channel->open_next_epoch(); },
                                              stream_options);
  }
  auto loader = pipe ? std::make_unique<BatchLoader>(stream.get(), loader_options)
                     : std::make_unique<BatchLoader>(&cases, loader_options);
  const auto started = Clock::now();
  loader->start_epoch(0, steps);
  Batch batch;
  int64_t samples = 0;
  while (loader->next(batch)) samples += batch.batch_size;
  loader.reset();
  if (sagemaker.joinable()) sagemaker.join();
  const MemoryUsage memory = memory_usage();
  return {static_cast<double>(samples), seconds_since(started),
          static_cast<double>(memory.peak_resident_bytes),
          static_cast<double>(memory.anonymous_bytes), storage_read_bytes()};
}

int bench_loader(const BenchCommandOptions& options) {
  // Task01-size preprocessed cases (160x160x78, 4 float16 + 3 label channels, 22 MB each), as
  // `medseg preprocess` writes them, up to --gb gigabytes. Written by a child process, so that the
  // workers forked below start as lean as a training job's freshly started workers.
  const std::string dir = fs::temp_directory_path() / ("medseg-bench-" + std::to_string(getpid()));
  const int64_t voxels = 160 * 160 * 78;
  const int64_t case_bytes = 4 * 2 * voxels + 3 * voxels;
  const int cases = std::max(1, static_cast<int>(options.gigabytes * 1e9 / case_bytes));
  fs::create_directories(dir);
  const auto write_cases = [&] {
    CaseData data;
    data.spatial_shape = {160, 160, 78};
    data.image_channels = 4;
    data.label_channels = 3;
    data.image.resize(static_cast<size_t>(4 * voxels));
    for (size_t i = 0; i < data.image.size(); ++i) data.image[i] = std::sin(i * 1e-3f) * 3.0f;
    data.label.assign(static_cast<size_t>(3 * voxels), 0);
    for (int shard = 0; shard * 16 < cases; ++shard) {
      RecordWriter writer(dir + "/cases-" + std::to_string(shard) + kShardFileSuffix,
                          {ImageDType::kFloat16});
      for (int i = shard * 16; i < std::min(cases, shard * 16 + 16); ++i) {
        data.case_id = "bench_" + std::to_string(i);
        writer.append(data);
      }
      writer.finish();
    }
  };
  const pid_t writer = ::fork();
  if (writer == 0) {
    try {
      write_cases();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "bench loader: %s\n", error.what());
      ::_exit(1);
    }
    ::_exit(0);
  }
  int writer_status = 0;
  ::waitpid(writer, &writer_status, 0);
  if (!WIFEXITED(writer_status) || WEXITSTATUS(writer_status) != 0) {
    throw PlatformError("bench loader: cannot write the record set in " + dir);
  }
  const double data_gb = cases * static_cast<double>(case_bytes) / 1e9;
  // File mode (mapped shards) with 1, 2 and 4 workers, then Pipe mode (streamed) with 1.
  for (const auto& [workers, pipe] :
       std::vector<std::pair<int, bool>>{{1, false}, {2, false}, {4, false}, {1, true}}) {
    if (workers > options.nproc_max) continue;
    // Cold page cache, as on a fresh instance (root only; otherwise the data may be cached).
    ::sync();
    const bool cold = static_cast<bool>(std::ofstream("/proc/sys/vm/drop_caches") << "1\n");
    std::vector<pid_t> children;
    for (int rank = 0; rank < workers; ++rank) {
      const pid_t child = ::fork();
      if (child == 0) {
        int code = 0;
        try {
          const LoaderWorkerResult r = run_loader_worker(dir, options, rank, workers, cases, pipe);
          std::ofstream(dir + "/result-" + std::to_string(rank))
              << r.samples << ' ' << r.seconds << ' ' << r.peak_bytes << ' ' << r.private_bytes
              << ' ' << r.read_bytes << '\n';
        } catch (const std::exception& error) {
          std::fprintf(stderr, "bench loader worker %d: %s\n", rank, error.what());
          code = 1;
        }
        ::_exit(code);
      }
      children.push_back(child);
    }
    bool failed = false;
    for (const pid_t child : children) {
      int status = 0;
      ::waitpid(child, &status, 0);
      failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    if (failed) throw PlatformError("bench loader: a worker failed (see above)");
    double samples = 0, slowest = 0, peak = 0, host_private = 0, largest_private = 0, read = 0;
    for (int rank = 0; rank < workers; ++rank) {
      LoaderWorkerResult r;
      std::ifstream(dir + "/result-" + std::to_string(rank)) >> r.samples >> r.seconds >>
          r.peak_bytes >> r.private_bytes >> r.read_bytes;
      samples += r.samples;
      slowest = std::max(slowest, r.seconds);
      peak = std::max(peak, r.peak_bytes);
      host_private += r.private_bytes;
      largest_private = std::max(largest_private, r.private_bytes);
      read += r.read_bytes;
    }
    const std::string prefix =
        std::string(pipe ? "loader_pipe_" : "loader_") + std::to_string(workers) + "_workers_";
    spdlog::info(
        "bench loader: {}{:.2f} GB of records ({} cases), {} workers x {} threads, {}x{}x{} crops: "
        "{:.1f} samples/s, {:.2f} GB read from storage ({} page cache); peak resident {:.0f} MiB "
        "per worker (mapped records included, in File mode: shared through the page cache), "
        "private "
        "{:.0f} MiB "
        "per worker and {:.0f} MiB per host",
        pipe ? "Pipe mode (streamed through a FIFO and a shuffle buffer), " : "File mode, ",
        data_gb, cases, workers, std::max(1, options.threads), options.roi[0], options.roi[1],
        options.roi[2], samples / slowest, read / 1e9, cold ? "cold" : "possibly warm",
        peak / (1 << 20), largest_private / (1 << 20), host_private / (1 << 20));
    print_result(prefix + "samples_per_second", samples / slowest);
    print_result(prefix + "read_gb", read / 1e9);
    print_result(prefix + "peak_mib_per_worker", peak / (1 << 20));
    print_result(prefix + "private_mib_per_worker", largest_private / (1 << 20));
    print_result(prefix + "private_mib_per_host", host_private / (1 << 20));
  }
  fs::remove_all(dir);
  return 0;
}

// `medseg serve` as a client sees it: a model of the configured architecture (random weights: the
// time does not depend on them) and a synthetic case of --shape, POSTed by 1 and 4 concurrent
// clients (--steps requests each), with /ping polled meanwhile.
int bench_serve(const BenchCommandOptions& options) {
  const ResolvedConfig resolved = bench_resolved_config(options);
  const TemporaryFolder folder("for the serve benchmark");
  UNet unet(unet_options_from_config(resolved.config.model));
  fs::create_directories(folder.path() + "/model");
  save_model_pth(folder.path() + "/model/model.pth", *unet, config_to_yaml(resolved));
  const std::string image_path = folder.path() + "/case.nii.gz";
  write_nifti(image_path, make_synthetic_case(options.shape, 0, 0).image, NiftiDataType::kFloat32);
  const std::string body = read_text_file(image_path);
  const int port = options.master_port;
  const pid_t server = ::fork();
  if (server == 0) {
    ::setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1024", 1);
    ::setenv("MEDSEG_SERVE_MAX_WAITING", "64", 1);
    const std::string model = folder.path() + "/model";
    const std::string port_text = std::to_string(port);
    ::execl("/proc/self/exe", "medseg", "serve", "--model", model.c_str(), "--port",
            port_text.c_str(), "--device", options.device.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto stop_server = [server] {
    ::kill(server, SIGTERM);
    int status = 0;
    ::waitpid(server, &status, 0);
  };
  const auto client = [port] {
    httplib::Client http("127.0.0.1", port);
    http.set_read_timeout(3600, 0);
    return http;
  };
  const auto started_waiting = Clock::now();
  while (true) {
    const auto ping = client().Get("/ping");
    if (ping && ping->status == 200) break;
    if (seconds_since(started_waiting) > 600) {
      stop_server();
      throw PlatformError("bench serve: the server did not become ready in 600 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const int concurrency : {1, 4}) {
    std::vector<double> latencies, pings;
    std::mutex mutex;
    std::atomic<bool> done{false};
    std::atomic<int> failures{0};
    std::thread pinger([&] {
      while (!done) {
        const auto started = Clock::now();
        client().Get("/ping");
        const double seconds = seconds_since(started);
        {
          std::lock_guard<std::mutex> lock(mutex);
          pings.push_back(seconds);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
    const auto started = Clock::now();
    std::vector<std::thread> clients;
    for (int c = 0; c < concurrency; ++c) {
      clients.emplace_back([&] {
        for (int i = 0; i < options.steps; ++i) {
          const auto request_started = Clock::now();
          const auto response = client().Post("/invocations", body, "application/x-nifti");
          const double seconds = seconds_since(request_started);
          if (!response || response->status != 200) ++failures;
          std::lock_guard<std::mutex> lock(mutex);
          latencies.push_back(seconds);
        }
      });
    }
    for (std::thread& thread : clients) thread.join();
    const double wall = seconds_since(started);
    done = true;
    pinger.join();
    if (failures > 0) {
      stop_server();
      throw PlatformError("bench serve: " + std::to_string(failures.load()) + " requests failed");
    }
    const std::string prefix = "serve_concurrency_" + std::to_string(concurrency) + "_";
    spdlog::info(
        "bench serve: {}x{}x{}x4 case ({:.1f} MB), {} clients x {} requests: latency p50 {:.2f} s, "
        "p99 {:.2f} s, {:.3f} requests/s; /ping during it p50 {:.4f} s, max {:.4f} s",
        options.shape[0], options.shape[1], options.shape[2], body.size() / 1e6, concurrency,
        options.steps, percentile(latencies, 0.5), percentile(latencies, 0.99),
        latencies.size() / wall, percentile(pings, 0.5), percentile(pings, 1.0));
    print_result(prefix + "latency_p50_seconds", percentile(latencies, 0.5));
    print_result(prefix + "latency_p99_seconds", percentile(latencies, 0.99));
    print_result(prefix + "requests_per_second", latencies.size() / wall);
    print_result(prefix + "ping_max_seconds", percentile(pings, 1.0));
    // The server's peak resident memory so far (VmHWM: the largest phase so far decides it).
    const double peak_mib = memory_usage(server).peak_resident_bytes / 1048576.0;
    spdlog::info("bench serve: the server's peak resident memory after {} client(s): {:.0f} MiB",
                 concurrency, peak_mib);
    print_result(prefix + "server_peak_rss_mib", peak_mib);
  }
  stop_server();
  return 0;
}

}  // namespace

int run_bench_command(const BenchCommandOptions& options) {
  if (options.what == "preprocess") return bench_preprocess(options);
  if (options.what == "crops") return bench_crops(options);
  if (options.what == "train") return bench_train(options);
  if (options.what == "records") return bench_records(options);
  if (options.what == "loader") return bench_loader(options);
  if (options.what == "serve") return bench_serve(options);
  throw ClientError("bench: unknown benchmark '" + options.what +
                    "' (expected preprocess, crops, records, loader, serve or train)");
}

}  // namespace medseg
