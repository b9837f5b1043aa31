// `medseg serve`: SageMaker hosting's contract (real-time endpoints, asynchronous inference, Batch
// Transform) on cpp-httplib. The model is loaded once, in the background, and warmed up with one
// prediction; meanwhile GET /ping answers 503, then 200. POST /invocations takes one 4-D NIfTI
// (.nii or .nii.gz, told apart by content) and answers, by Accept, with the label map exactly as
// `medseg infer` writes it (application/x-nifti, the default), as a NumPy array
// (application/x-npy: uint8, shape (X, Y, Z), Fortran order) or a JSON summary (application/json:
// voxels and millilitres per label value, shape and spacing); the custom attribute
// `probabilities` (X-Amzn-SageMaker-Custom-Attributes) returns the sigmoid probabilities as
// `infer --probabilities` writes them. Each model replica (one per GPU, one on the CPU;
// MEDSEG_SERVE_REPLICAS overrides) predicts one request at a time, and at most
// MEDSEG_SERVE_MAX_WAITING (default 4; at least SAGEMAKER_MAX_CONCURRENT_TRANSFORMS minus the
// replicas) requests wait for one; more get 503 with Retry-After. /ping answers from the other
// connection threads meanwhile. Bodies beyond the payload limit get 413 before they are read; a
// tar body is listed before it is extracted (links refused, at most 8x its size or 256 MiB). Bad
// input gets 400 with {"error": "..."} naming the problem; the server stays up. SIGTERM stops
// accepting, lets the running requests finish and exits 0.
#pragma once

#include <atomic>
#include <string>

namespace medseg {

struct ServeOptions {
  std::string model_path;  // a model folder or model.tar.gz
  std::string host = "0.0.0.0";
  int port = 8080;             // SAGEMAKER_BIND_TO_PORT wins when set
  int64_t max_payload_mb = 6;  // real-time endpoints; SAGEMAKER_MAX_PAYLOAD_IN_MB wins when set
  std::string device = "auto";
  std::string ml_root;  // where a model that fails to load is reported (failure file)
};

// Serves until `stop` becomes true (SIGTERM). Returns the exit code.
int serve(const ServeOptions& options, const std::atomic<bool>* stop);

}  // namespace medseg
