// `medseg serve`: SageMaker hosting's contract (real-time endpoints, asynchronous inference, Batch
// Transform) on cpp-httplib. The model is loaded once, in the background; meanwhile GET /ping
// answers 503, then 200. POST /invocations takes one 4-D NIfTI (.nii or .nii.gz, told apart by
// content) and answers with the label map exactly as `medseg infer` writes it (Accept
// application/x-nifti, the default: .nii.gz in the input's grid and header) or a JSON summary
// (Accept application/json: voxels and millilitres per label value, shape and spacing). One
// prediction runs at a time (CasePredictor is not thread-safe); other requests wait for it while
// /ping keeps answering from the other connection threads. Bodies beyond the payload limit get 413
// before they are read. Bad input gets 400 with {"error": "..."} naming the problem; the server
// stays up. SIGTERM stops accepting, lets the running request finish and exits 0.
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
