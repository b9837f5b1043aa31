#include "serve/server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/case_discovery.h"
#include "data/synthetic_cases.h"
#include "infer/predictor.h"
#include "io/nifti_volume.h"
#include "sagemaker/failure_file.h"
#include "util/archive.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/stop_signals.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  try {
    return std::stoi(value);
  } catch (const std::exception&) {
    throw ClientError(std::string("environment variable ") + name + "='" + value +
                      "': expected an integer");
  }
}

void send_error(httplib::Response& response, int status, const std::string& message) {
  response.status = status;
  response.set_content(nlohmann::json{{"error", message}}.dump() + "\n", "application/json");
}

// The model replicas (one per GPU, one on the CPU), loaded in the background. Ready once every
// replica is loaded; a request borrows a free replica (waiting for one) and returns it.
class ReplicaPool {
 public:
  void add(std::unique_ptr<CasePredictor> predictor) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(predictor.get());
    replicas_.push_back(std::move(predictor));
  }
  void set_ready() {
    std::lock_guard<std::mutex> lock(mutex_);
    ready_ = true;
  }
  void fail(const std::string& reason) {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = reason;
  }
  bool ready() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return ready_;
  }
  std::string failure() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_;
  }
  // Any replica, for what they share (the configuration); null until ready.
  const CasePredictor* first() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return ready_ ? replicas_.front().get() : nullptr;
  }

  // A replica for one prediction, returned to the pool when the lease ends.
  class Lease {
   public:
    Lease(ReplicaPool& pool, CasePredictor* predictor) : pool_(pool), predictor_(predictor) {}
    ~Lease() { pool_.give_back(predictor_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    CasePredictor& operator*() const { return *predictor_; }
    CasePredictor* operator->() const { return predictor_; }

   private:
    ReplicaPool& pool_;
    CasePredictor* predictor_;
  };
  Lease borrow() {
    std::unique_lock<std::mutex> lock(mutex_);
    freed_.wait(lock, [this] { return !free_.empty(); });
    CasePredictor* predictor = free_.back();
    free_.pop_back();
    return Lease(*this, predictor);
  }

 private:
  void give_back(CasePredictor* predictor) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back(predictor);
    }
    freed_.notify_one();
  }

  mutable std::mutex mutex_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<CasePredictor>> replicas_;
  std::vector<CasePredictor*> free_;
  bool ready_ = false;
  std::string failure_;
};

// How many model replicas serve: MEDSEG_SERVE_REPLICAS when set (replica i on GPU i modulo the
// GPUs: 2 per GPU overlap one case's CPU work with another's GPU work), else one per visible GPU,
// one on the CPU.
int replica_count(const std::string& device, int gpus) {
  const int requested = env_int("MEDSEG_SERVE_REPLICAS", 0);
  if (requested < 0 || requested > 64) {
    throw ClientError("environment variable MEDSEG_SERVE_REPLICAS=" + std::to_string(requested) +
                      ": expected 1 to 64 (0 or unset: one per GPU, one on the CPU)");
  }
  if (requested > 0) return requested;
  return device == "cpu" ? 1 : std::max(1, gpus);
}

// SageMaker Batch Transform's settings (SAGEMAKER_BATCH=true): every request must hold one
// whole case, so the strategy must leave objects whole.
std::string batch_strategy() {
  const char* value = std::getenv("SAGEMAKER_BATCH_STRATEGY");
  const std::string strategy = value == nullptr ? "" : value;
  if (!strategy.empty() && strategy != "SINGLE_RECORD" && strategy != "MULTI_RECORD") {
    throw ClientError("environment variable SAGEMAKER_BATCH_STRATEGY='" + strategy +
                      "': expected SINGLE_RECORD or MULTI_RECORD");
  }
  return strategy.empty() ? "SINGLE_RECORD" : strategy;
}

// Voxels and volumes per label value of `label_map`.
nlohmann::json summary_of(const NiftiVolume& label_map) {
  std::map<int, int64_t> counts;
  for (const float value : label_map.data) ++counts[static_cast<int>(value)];
  const double voxel_ml = label_map.pixdim[0] * label_map.pixdim[1] * label_map.pixdim[2] / 1000.0;
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [value, count] : counts) {
    labels[std::to_string(value)] = {{"voxels", count}, {"volume_ml", count * voxel_ml}};
  }
  return {{"shape", {label_map.dim[0], label_map.dim[1], label_map.dim[2]}},
          {"spacing_mm", {label_map.pixdim[0], label_map.pixdim[1], label_map.pixdim[2]}},
          {"labels", labels}};
}

// The label map as a NumPy .npy (version 1.0): uint8, shape (X, Y, Z), Fortran order (NIfTI's
// x-fastest order), so that numpy.load gives label[x, y, z] as nibabel's get_fdata() would.
std::string label_map_npy(const NiftiVolume& label_map) {
  std::string header = "{'descr': '|u1', 'fortran_order': True, 'shape': (" +
                       std::to_string(label_map.dim[0]) + ", " + std::to_string(label_map.dim[1]) +
                       ", " + std::to_string(label_map.dim[2]) + "), }";
  const size_t unpadded = 10 + header.size() + 1;  // magic, version, length, header, newline
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string npy = std::string("\x93NUMPY\x01\x00", 8);
  npy += static_cast<char>(header.size() & 0xff);
  npy += static_cast<char>(header.size() >> 8);
  npy += header;
  npy.reserve(npy.size() + label_map.data.size());
  for (const float value : label_map.data) npy += static_cast<char>(static_cast<uint8_t>(value));
  return npy;
}

// A tar of one BraTS case folder (<case>_flair, _t1, _t1ce, _t2 NIfTI files; or those files at
// the tar's root) as one 4-D image, modalities stacked as training stacks them. `folder` is
// created and holds the extracted files.
NiftiVolume read_brats_tar(const std::string& tar, const std::string& folder,
                           const NiftiReadOptions& options) {
  const std::string root = folder + "/case";
  fs::create_directories(root);
  // NIfTI files compress a few times at most: a tar expanding beyond 8x the body (or 256 MiB, a
  // full-size float32 case uncompressed) is refused before it is written.
  const auto body_bytes = static_cast<int64_t>(fs::file_size(tar));
  extract_tar(tar, root, "the request body", "expected a tar of one BraTS case folder",
              std::max<int64_t>(int64_t{256} << 20, 8 * body_bytes));
  // A tar of the case folder itself, or of its files.
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(root)) entries.push_back(entry.path());
  const bool one_folder = entries.size() == 1 && fs::is_directory(entries[0]);
  const DatasetIndex index = discover_dataset(one_folder ? root : folder, "brats", false);
  if (index.cases.size() != 1) {
    throw ClientError("the request's tar holds " + std::to_string(index.cases.size()) +
                      " cases; expected one BraTS case folder");
  }
  return load_case_image(index.cases[0], options);
}

// Counts the /invocations requests past their body (waiting for the model or predicting).
class Admission {
 public:
  Admission(std::atomic<int>& count, int limit) : count_(count), admitted_(++count_ <= limit) {}
  ~Admission() { --count_; }
  bool admitted() const { return admitted_; }

 private:
  std::atomic<int>& count_;
  bool admitted_;
};

}  // namespace

int serve(const ServeOptions& options, const std::atomic<bool>* stop) {
  const int port = env_int("SAGEMAKER_BIND_TO_PORT", options.port);
  const int64_t max_payload_mb =
      env_int("SAGEMAKER_MAX_PAYLOAD_IN_MB", static_cast<int>(options.max_payload_mb));
  const int gpus = options.device == "cpu" ? 0 : static_cast<int>(torch::cuda::device_count());
  const int replicas = replica_count(options.device, gpus);
  // Batch Transform sends up to SAGEMAKER_MAX_CONCURRENT_TRANSFORMS requests at once: those beyond
  // the replicas wait rather than get 503.
  const int concurrent_transforms = env_int("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", 0);
  const int max_waiting =
      std::max(env_int("MEDSEG_SERVE_MAX_WAITING", 4), concurrent_transforms - replicas);
  const std::string strategy = batch_strategy();
  if (strategy == "MULTI_RECORD") {
    spdlog::warn(
        "serve: SAGEMAKER_BATCH_STRATEGY=MULTI_RECORD: each request must still hold one whole "
        "case (use SplitType None, which sends every S3 object whole)");
  }
  ReplicaPool pool;
  std::thread loader([&] {
    try {
      for (int replica = 0; replica < replicas; ++replica) {
        PredictorOptions predictor_options;
        predictor_options.device = options.device;
        predictor_options.gpu = gpus > 0 ? replica % gpus : 0;
        predictor_options.keep_probabilities = true;  // for requests that ask for them
        auto predictor = std::make_unique<CasePredictor>(options.model_path, predictor_options);
        // One prediction before /ping says 200, so that the first request does not pay for the
        // allocations and kernel choices of the first forward pass.
        const Clock::time_point started = Clock::now();
        const auto& roi = predictor->config().config.augment.roi_size;
        predictor->predict(make_synthetic_case({roi[0], roi[1], roi[2]}, 0, 0).image, "warm-up");
        spdlog::info("serve: replica {} of {}: model {} loaded on {} ({}), warmed up in {:.2f} s",
                     replica + 1, replicas, predictor->weights_file(), predictor->device_name(),
                     predictor->precision(), seconds_since(started));
        pool.add(std::move(predictor));
      }
      pool.set_ready();
    } catch (const Error& error) {
      spdlog::error("serve: the model cannot be loaded: {}", error.what());
      write_failure_file(options.ml_root, error.kind(), error.what());
      pool.fail(error.what());
    } catch (const std::exception& error) {
      spdlog::error("serve: the model cannot be loaded: {}", error.what());
      write_failure_file(options.ml_root, ErrorKind::kInternal, error.what());
      pool.fail(error.what());
    }
  });

  httplib::Server server;
  server.set_payload_max_length(static_cast<size_t>(max_payload_mb) << 20);
  // At most one request predicting per replica and `max_waiting` waiting; more get 503 and
  // Retry-After.
  std::atomic<int> in_flight{0};

  server.Get("/ping", [&](const httplib::Request&, httplib::Response& response) {
    if (pool.ready()) {
      response.set_content("{\"status\": \"ok\"}\n", "application/json");
    } else {
      const std::string failure = pool.failure();
      send_error(response, 503, failure.empty() ? "the model is loading" : failure);
    }
  });
  server.Get("/execution-parameters", [&](const httplib::Request&, httplib::Response& response) {
    response.set_content(nlohmann::json{{"MaxConcurrentTransforms", replicas},
                                        {"BatchStrategy", "SINGLE_RECORD"},
                                        {"MaxPayloadInMB", max_payload_mb}}
                                 .dump() +
                             "\n",
                         "application/json");
  });
  server.Post("/invocations", [&](const httplib::Request& request, httplib::Response& response) {
    const CasePredictor* loaded = pool.first();
    if (loaded == nullptr) return send_error(response, 503, "the model is not loaded");
    const std::string accept = request.get_header_value("Accept");
    const bool json = accept.find("application/json") != std::string::npos;
    const bool npy = accept.find("application/x-npy") != std::string::npos;
    if (!json && !npy && !accept.empty() && accept.find("*/*") == std::string::npos &&
        accept.find("application/x-nifti") == std::string::npos &&
        accept.find("application/octet-stream") == std::string::npos &&
        accept.find("application/gzip") == std::string::npos) {
      return send_error(response, 406,
                        "Accept '" + accept +
                            "' is not served: expected application/x-nifti (the label map as "
                            ".nii.gz), application/x-npy (the label map as a NumPy array) or "
                            "application/json (a summary)");
    }
    const bool probabilities =
        request.get_header_value("X-Amzn-SageMaker-Custom-Attributes").find("probabilities") !=
        std::string::npos;
    const Admission admission(in_flight, replicas + max_waiting);
    if (!admission.admitted()) {
      response.set_header("Retry-After", "5");
      return send_error(response, 503,
                        "busy: " + std::to_string(replicas) + " request(s) are being predicted and " +
                            std::to_string(max_waiting) + " are waiting; retry later");
    }
    if (request.body.empty()) {
      return send_error(response, 400,
                        "empty request body: expected a 4-D NIfTI (.nii or .nii.gz)");
    }
    // The request's files (its body, an extracted tar, the answer) live in one temporary folder,
    // removed when the request ends.
    std::string temporary;
    try {
      const TemporaryFolder folder("for a request");
      temporary = folder.path();
      const std::string body = folder.path() + "/body";
      write_file_atomically(body, request.body);
      NiftiReadOptions read_options;
      read_options.max_bytes = static_cast<int64_t>(loaded->config().config.data.max_case_mb)
                               << 20;
      const bool tar = request.get_header_value("Content-Type") == "application/x-tar" ||
                       (request.body.size() > 262 && request.body.compare(257, 5, "ustar") == 0);
      // A request decodes its image once it holds a replica: at most one decoded case per
      // replica is in memory, however many requests wait (they hold only their bodies).
      const ReplicaPool::Lease predictor = pool.borrow();
      const NiftiVolume image = tar ? read_brats_tar(body, folder.path() + "/tar", read_options)
                                    : read_nifti(body, read_options);
      const Clock::time_point started = Clock::now();
      const Prediction prediction = predictor->predict(image, "request");
      const double seconds = seconds_since(started);
      spdlog::info("serve: {} bytes -> {}x{}x{} label map in {:.2f} s on {}", request.body.size(),
                   prediction.label_map.dim[0], prediction.label_map.dim[1],
                   prediction.label_map.dim[2], seconds, predictor->device_name());
      if (json) {
        response.set_content(summary_of(prediction.label_map).dump() + "\n", "application/json");
        return;
      }
      if (npy) {
        response.set_content(label_map_npy(prediction.label_map), "application/x-npy");
        return;
      }
      // The label map, or on request the sigmoid probabilities, as `infer` writes them.
      const std::string output = folder.path() + "/answer.nii.gz";
      if (probabilities) {
        write_nifti(output, prediction.probabilities, NiftiDataType::kFloat32);
      } else {
        write_nifti(output, prediction.label_map, NiftiDataType::kUint8);
      }
      response.set_content(read_text_file(output), "application/x-nifti");
    } catch (const ClientError& error) {
      // The temporary names mean nothing to the client: "the request body", "<tar>".
      std::string message = error.what();
      const auto rename = [&message](const std::string& from, const std::string& to) {
        for (size_t at = message.find(from); at != std::string::npos; at = message.find(from)) {
          message.replace(at, from.size(), to);
        }
      };
      if (!temporary.empty()) {
        rename("NIfTI file " + temporary + "/body", "the request body");
        rename(temporary + "/body", "the request body");
        rename(temporary + "/tar", "<tar>");
      }
      send_error(
          response, 400,
          message.rfind("the request body", 0) == 0 ? message : "the request body: " + message);
    } catch (const StopRequested&) {
      send_error(response, 503, "the server is stopping (SIGTERM); send the request again");
    } catch (const std::exception& error) {
      spdlog::error("serve: request failed: {}", error.what());
      send_error(response, 500, error.what());
    }
  });

  if (!server.bind_to_port(options.host.c_str(), port)) {
    loader.join();
    throw PlatformError("serve: cannot listen on " + options.host + ":" + std::to_string(port) +
                        " (in use? set SAGEMAKER_BIND_TO_PORT)");
  }
  spdlog::info(
      "serve: listening on {}:{} (payloads up to {} MB; {} replica(s), up to {} requests waiting)",
      options.host, port, max_payload_mb, replicas, max_waiting);
  std::thread listener([&] { server.listen_after_bind(); });
  while (!stop->load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  spdlog::info("serve: stop requested: finishing the running request and exiting");
  server.stop();  // stops accepting; in-flight handlers complete
  listener.join();
  loader.join();
  return 0;
}

}  // namespace medseg
