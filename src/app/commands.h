// The commands `medseg` dispatches to. Each takes its parsed options and the ML root, returns the
// process exit code and reports failures by throwing medseg::Error.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace medseg {

struct TrainCommandOptions {
  std::vector<std::string> overrides;  // --set key=value
  bool print_config = false;           // print the resolved YAML and exit
};

int run_train_command(const std::string& ml_root, const TrainCommandOptions& options);

struct PreprocessCommandOptions {
  std::string input_dir;               // default <ml-root>/processing/input/data
  std::string output_dir;              // default <ml-root>/processing/output/data
  std::string format;                  // records or nifti; default preprocess.format
  int threads = 0;                     // 0 = one per core
  bool no_split = false;               // process every case even on a multi-host job
  std::vector<std::string> overrides;  // --set key=value
};

int run_preprocess_command(const std::string& ml_root, const PreprocessCommandOptions& options);

struct SynthCommandOptions {
  std::string out_dir;
  int cases = 8;
  std::array<int, 3> shape = {240, 240, 155};
  uint64_t seed = 0;
  int threads = 0;
};

int run_synth_command(const SynthCommandOptions& options);

}  // namespace medseg
