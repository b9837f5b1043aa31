// Shared by the tests that run `medseg train` as SageMaker does: an ML root with a synthetic
// Decathlon channel, the small network they train, and starting/stopping the binary.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "data/synthetic_cases.h"
#include "model/model_io.h"
#include "model/unet.h"
#include "test_support.h"

namespace medseg::testing {

// The hyperparameters of the small network below, to splice into a hyperparameters.json.
inline constexpr const char* kSmallNetwork =
    R"("channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]", "num_res_units": "1")";

inline UNet small_unet() {
  UNetOptions options;
  options.channels = {8, 16, 32, 64};
  options.strides = {2, 2, 2};
  options.num_res_units = 1;
  return UNet(options);
}

// Lays out `root` like /opt/ml with `hyperparameters` and a File-mode `train` channel holding
// `cases` synthetic 64x64x48 cases.
inline void make_training_job(const std::string& root, const std::string& hyperparameters,
                              int cases, uint64_t seed, const std::string& resource_config = "") {
  make_ml_root(root, hyperparameters, R"({"train": {"TrainingInputMode": "File"}})",
               resource_config);
  SynthOptions synth;
  synth.out_dir = root + "/input/data/train";
  synth.cases = cases;
  synth.shape = {64, 64, 48};
  synth.seed = seed;
  write_synthetic_dataset(synth);
}

// The weights the job at `root` wrote to model/model.pth (the small network).
inline std::vector<at::Tensor> trained_weights(const std::string& root) {
  UNet model = small_unet();
  load_model_pth(root + "/model/model.pth", *model);
  return model->parameters();
}

// Starts `medseg train` on `root` in the background, output appended to <root>/train.log.
inline pid_t start_training(const std::string& root) {
  const pid_t child = fork();
  if (child == 0) {
    setenv("MEDSEG_ML_ROOT", root.c_str(), 1);
    const int fd = ::open((root + "/train.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(MEDSEG_BINARY, MEDSEG_BINARY, "train", static_cast<char*>(nullptr));
    _exit(127);
  }
  return child;
}

// The child's exit code, or minus the signal that killed it.
inline int wait_exit_code(pid_t child) {
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

inline size_t count_occurrences(const std::string& text, const std::string& needle) {
  size_t found = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++found;
  }
  return found;
}

}  // namespace medseg::testing
