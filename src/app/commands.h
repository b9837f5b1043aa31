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

struct BenchCommandOptions {
  std::string what;                             // preprocess, crops or train
  int cases = 3;                                // preprocess: synthetic cases
  std::array<int, 3> shape = {240, 240, 155};   // preprocess: case size
  std::string data_dir;                         // preprocess: a data set to time (else synthetic)
  std::array<int64_t, 3> roi = {128, 128, 64};  // crops and train
  int batch = 2;                                // train
  std::string amp = "off";                      // train: off, bf16 or fp16
  std::string device = "auto";                  // train: auto, cpu or cuda
  int warmup = 3;                               // train: untimed steps
  int steps = 10;                               // train: timed steps; crops: crops per thread
  int threads = 0;                              // 0 = all cores
  int nproc = 1;                                // train: local data-parallel workers
  bool sync = false;                            // train: gradient sync even for one worker
  int master_port = 29517;                      // train: rendezvous port with --nproc
  std::string input = "tensor";                 // train: tensor, loader or device-cache
  double gigabytes = 2.0;                       // loader: size of the record set
  int nproc_max = 4;                            // loader: 1, 2, 4 workers up to this
  std::vector<std::string> overrides;           // --set key=value (model, optimiser)
};

int run_bench_command(const BenchCommandOptions& options);

struct SynthCommandOptions {
  std::string out_dir;
  int cases = 8;
  std::array<int, 3> shape = {240, 240, 155};
  uint64_t seed = 0;
  int threads = 0;
};

int run_synth_command(const SynthCommandOptions& options);

struct InferCommandOptions {
  std::string model_path;              // model folder, model.tar.gz or .pth; default: channel model
  std::string input_path;              // NIfTI file or folder of cases; default: channel data
  std::string output_dir;              // default <ml-root>/model
  bool probabilities = false;          // also write <case>_probabilities.nii.gz
  std::string weights;                 // weights file in the model folder; default best_model.pth
  std::string device;                  // auto (default), cpu or cuda
  std::vector<std::string> overrides;  // --set key=value on top of the model's configuration
};

struct ServeCommandOptions {
  std::string model_path;  // default <ml-root>/model
  int port = 8080;
  std::string device = "auto";
};

int run_serve_command(const std::string& ml_root, const ServeCommandOptions& options);

int run_infer_command(const std::string& ml_root, const InferCommandOptions& options);

}  // namespace medseg
