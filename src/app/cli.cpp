#include "app/cli.h"

#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "app/commands.h"
#include "config/config_loader.h"
#include "dist/collectives.h"
#include "dist/launcher.h"
#include "sagemaker/failure_file.h"
#include "sagemaker/hyperparameters.h"
#include "sagemaker/metrics.h"
#include "sagemaker/ml_paths.h"
#include "util/cuda.h"
#include "util/error.h"
#include "util/log.h"

namespace medseg {
namespace {

// The process that starts a job on this host: not one of medseg's launched workers, nor a
// torchrun worker other than local rank 0.
bool is_first_process_of_host() {
  if (is_launched_worker()) return false;
  const char* local_rank = std::getenv("LOCAL_RANK");
  return local_rank == nullptr || std::string(local_rank) == "0";
}

int report_error(const std::string& ml_root, ErrorKind kind, const std::string& message) {
  spdlog::error("{}", failure_reason(kind, message));
  write_failure_file(ml_root, kind, message);
  return exit_code_for(kind);
}

}  // namespace

std::vector<std::string> normalize_arguments(const std::vector<std::string>& arguments) {
  if (arguments.empty()) return {"medseg"};
  const std::string invoked_as = std::filesystem::path(arguments[0]).filename().string();
  if (invoked_as == "train" || invoked_as == "serve") {
    std::vector<std::string> normalized = {"medseg", invoked_as};
    size_t first = 1;
    if (arguments.size() > 1 && arguments[1] == invoked_as) first = 2;  // `train train`
    normalized.insert(normalized.end(), arguments.begin() + first, arguments.end());
    return normalized;
  }
  return arguments;
}

std::string command_from_environment(const std::string& ml_root, std::string* reason) {
  const char* requested = std::getenv("MEDSEG_COMMAND");
  if (requested != nullptr && *requested != '\0') {
    *reason = "MEDSEG_COMMAND=" + std::string(requested);
    return requested;
  }
  const MlPaths paths{ml_root};
  const std::string from_hyperparameters =
      read_command_hyperparameter(paths.hyperparameters_file());
  if (!from_hyperparameters.empty()) {
    if (from_hyperparameters != "train" && from_hyperparameters != "preprocess" &&
        from_hyperparameters != "infer") {
      throw ClientError(paths.hyperparameters_file() + ": " + kCommandHyperparameter + " = '" +
                        from_hyperparameters + "': expected train, preprocess or infer");
    }
    *reason = "hyperparameter " + std::string(kCommandHyperparameter) + "=" + from_hyperparameters;
    return from_hyperparameters;
  }
  std::error_code error;
  const std::string processing_config = ml_root + "/config/processingjobconfig.json";
  if (std::filesystem::exists(processing_config, error)) {
    *reason = processing_config + " exists (a SageMaker Processing job)";
    return "preprocess";
  }
  if (std::filesystem::is_directory(paths.config_dir(), error)) {
    *reason = paths.config_dir() + " exists (a SageMaker training job)";
    return "train";
  }
  return "";
}

int run_cli(int argc, char** argv) {
  // A write to a peer that is gone (a gradient socket after another host died, a closed HTTP
  // client) fails with EPIPE, which the caller reports, instead of a SIGPIPE that ends the
  // process before it can write its failure file (seen: a host resumed after SIGSTOP died of
  // SIGPIPE writing to the host that had already exited). Workers inherit it.
  std::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> arguments =
      normalize_arguments(std::vector<std::string>(argv, argv + argc));
  init_logging(LogOptions{});
  // Started as SageMaker starts every training job (`train`, nothing else) or with no argument at
  // all (SDK v3, Processing): the platform may ask for another command.
  const bool bare_train = arguments.size() == 2 && arguments[1] == "train";
  if (arguments.size() == 1 || bare_train) {
    std::string reason;
    std::string command;
    try {
      command = command_from_environment(resolve_ml_root(""), &reason);
    } catch (const Error& error) {
      return report_error(resolve_ml_root(""), error.kind(), error.what());
    }
    if (!command.empty() && !(bare_train && command == "train")) {
      spdlog::info("{}: running `medseg {}` ({})",
                   bare_train ? "started as `train`" : "no command given", command, reason);
      arguments.resize(1);
      arguments.push_back(command);
    }
  }

  CLI::App app{"medseg " MEDSEG_VERSION
               ": train, preprocess, infer and serve MONAI-compatible 3D U-Nets for brain-tumour "
               "segmentation on Amazon SageMaker",
               "medseg"};
  // The build's LibTorch, CUDA and collective backends: which binary a job runs.
  app.set_version_flag("--version", "medseg " MEDSEG_VERSION " (LibTorch " TORCH_VERSION ", " +
                                        cuda::build_description() + ", " + available_backends() +
                                        ")");
  app.require_subcommand(1);
  app.fallthrough();  // global options (--ml-root) may follow the command word
  std::string ml_root_flag;
  app.add_option("--ml-root", ml_root_flag,
                 "SageMaker ML root (default $MEDSEG_ML_ROOT, else /opt/ml)");

  TrainCommandOptions train_options;
  bool list_config = false;
  CLI::App* train = app.add_subcommand("train", "Train on the job's channels (SageMaker training)");
  train->add_option("--set", train_options.overrides,
                    "Override a configuration key, e.g. --set epochs=10 (repeatable)");
  train->add_flag("--print-config", train_options.print_config,
                  "Print the resolved configuration as YAML and exit without touching data");
  train->add_flag("--list-config", list_config,
                  "Print every configuration key as a Markdown table and exit");

  SynthCommandOptions synth_options;
  std::vector<int> shape(synth_options.shape.begin(), synth_options.shape.end());
  CLI::App* synth = app.add_subcommand("synth", "Write a synthetic BraTS-like Decathlon data set");
  synth->add_option("--out", synth_options.out_dir, "Output folder")->required();
  synth->add_option("--cases", synth_options.cases, "Number of cases")
      ->check(CLI::Range(1, 100000));
  synth->add_option("--shape", shape, "Volume size X Y Z (voxels)")->expected(3);
  synth->add_option("--seed", synth_options.seed, "Seed; the same seed writes the same data");
  synth->add_option("--threads", synth_options.threads, "Writer threads (0 = one per core)")
      ->check(CLI::Range(0, 1024));

  PreprocessCommandOptions preprocess_options;
  CLI::App* preprocess = app.add_subcommand(
      "preprocess", "Preprocess NIfTI cases into medseg records (SageMaker Processing job)");
  preprocess->add_option("--input", preprocess_options.input_dir,
                         "Data folder (default <ml-root>/processing/input/data)");
  preprocess->add_option("--output", preprocess_options.output_dir,
                         "Output folder (default <ml-root>/processing/output/data)");
  preprocess->add_option("--format", preprocess_options.format, "records or nifti")
      ->check(CLI::IsMember({"records", "nifti"}));
  preprocess->add_option("--threads", preprocess_options.threads, "Cases at once (0 = cores)")
      ->check(CLI::Range(0, 1024));
  preprocess->add_flag("--no-split", preprocess_options.no_split,
                       "Process every case, not this host's share");
  preprocess->add_option("--set", preprocess_options.overrides,
                         "Override a configuration key, e.g. --set pixdim=1,1,1 (repeatable)");

  BenchCommandOptions bench_options;
  std::vector<int> bench_shape(bench_options.shape.begin(), bench_options.shape.end());
  std::vector<int64_t> bench_roi(bench_options.roi.begin(), bench_options.roi.end());
  CLI::App* bench = app.add_subcommand("bench", "Throughput benchmarks (print numbers)");
  bench
      ->add_option("what", bench_options.what, "preprocess, crops, records, loader, serve or train")
      ->required()
      ->check(CLI::IsMember({"preprocess", "crops", "records", "loader", "serve", "train"}));
  bench->add_option("--gb", bench_options.gigabytes, "loader: gigabytes of records")
      ->check(CLI::Range(0.01, 10000.0));
  bench->add_option("--max-workers", bench_options.nproc_max, "loader: 1, 2, 4 ... up to this")
      ->check(CLI::Range(1, 64));
  bench->add_option("--cases", bench_options.cases, "preprocess, records, train --input: cases")
      ->check(CLI::Range(1, 64));
  bench->add_option("--shape", bench_shape, "preprocess, train --input: case size X Y Z")
      ->expected(3);
  bench->add_option("--data", bench_options.data_dir,
                    "preprocess: time the first --cases cases of this data set (Decathlon or BraTS "
                    "folders) instead of synthetic ones");
  bench->add_option("--roi", bench_roi, "crops, train: crop size X Y Z")->expected(3);
  bench->add_option("--batch", bench_options.batch, "train: batch size")->check(CLI::Range(1, 512));
  bench->add_option("--amp", bench_options.amp, "train: off, bf16 or fp16")
      ->check(CLI::IsMember({"off", "bf16", "fp16"}));
  bench->add_option("--device", bench_options.device, "train, serve: auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  bench->add_option("--warmup", bench_options.warmup, "train: untimed steps")
      ->check(CLI::Range(0, 1000));
  bench
      ->add_option("--steps", bench_options.steps,
                   "train: timed steps; crops: crops per thread; serve: requests per client")
      ->check(CLI::Range(1, 100000));
  bench->add_option("--threads", bench_options.threads, "Threads (0 = all cores)")
      ->check(CLI::Range(0, 1024));
  bench
      ->add_option("--nproc", bench_options.nproc,
                   "train: local data-parallel workers (measures the gradient sync)")
      ->check(CLI::Range(1, 64));
  bench
      ->add_option("--input", bench_options.input,
                   "train: batches from fixed tensors on the device (compute only), the host "
                   "loader's threads (cropped on the CPU, copied per step) or the device cache "
                   "(cropped on the device), from --cases random cases of --shape")
      ->check(CLI::IsMember({"tensor", "loader", "device-cache"}));
  bench->add_flag("--sync", bench_options.sync,
                  "train: sync gradients through a real process group even with one worker");
  bench
      ->add_option("--master-port", bench_options.master_port,
                   "train: rendezvous port; serve: the server's port")
      ->check(CLI::Range(1, 65535));
  bench->add_option("--set", bench_options.overrides, "Override a configuration key");

  InferCommandOptions infer_options;
  CLI::App* infer = app.add_subcommand(
      "infer", "Sliding-window inference on NIfTI cases: label maps in each case's original grid");
  infer->add_option("--model", infer_options.model_path,
                    "Model folder, model.tar.gz or .pth file (default: channel `model`)");
  infer->add_option("--input", infer_options.input_path,
                    "NIfTI file, Decathlon folder, BraTS case folders or a folder of images "
                    "(default: channel `data`)");
  infer->add_option("--output", infer_options.output_dir,
                    "Output folder (default <ml-root>/model)");
  infer->add_flag("--probabilities", infer_options.probabilities,
                  "Also write <case>_probabilities.nii.gz (sigmoid, preprocessed grid)");
  infer->add_option("--weights", infer_options.weights,
                    "Weights file in the model folder (default best_model.pth, else model.pth)");
  infer->add_option("--device", infer_options.device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  infer->add_option("--set", infer_options.overrides,
                    "Override a key of the model's configuration, e.g. --set overlap=0.5 "
                    "(repeatable)");

  ServeCommandOptions serve_options;
  CLI::App* serve_command = app.add_subcommand(
      "serve",
      "Serve the model over HTTP (SageMaker hosting: real-time, asynchronous, Batch "
      "Transform): GET /ping, POST /invocations");
  serve_command->add_option("--model", serve_options.model_path,
                            "Model folder or model.tar.gz (default <ml-root>/model)");
  serve_command->add_option("--port", serve_options.port, "Port (SAGEMAKER_BIND_TO_PORT wins)")
      ->check(CLI::Range(1, 65535));
  serve_command->add_option("--device", serve_options.device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));

  CLI::App* metric_definitions_command = app.add_subcommand(
      "metric-definitions",
      "Print the metric definitions for SageMaker (JSON for metric_definitions= / "
      "MetricDefinitions)");

  std::vector<const char*> raw_arguments;
  for (const std::string& argument : arguments) raw_arguments.push_back(argument.c_str());
  try {
    app.parse(static_cast<int>(raw_arguments.size()), raw_arguments.data());
  } catch (const CLI::ParseError& parse_error) {
    const int code = app.exit(parse_error);
    if (code == 0) return 0;  // --help, --version
    return report_error(
        resolve_ml_root(ml_root_flag), ErrorKind::kClient,
        std::string("command line: ") + parse_error.what() + " (run `medseg --help`)");
  }

  const std::string ml_root = resolve_ml_root(ml_root_flag);
  const bool runs_a_job = (train->parsed() && !list_config && !train_options.print_config) ||
                          preprocess->parsed() || infer->parsed() || serve_command->parsed();
  if (runs_a_job && is_first_process_of_host()) clear_stale_failure_files(ml_root);
  try {
    if (metric_definitions_command->parsed()) {
      std::cout << metric_definitions().dump(2) << std::endl;
      return 0;
    }
    if (train->parsed()) {
      if (list_config) {
        std::cout << config_markdown_table();
        return 0;
      }
      return run_train_command(ml_root, train_options);
    }
    if (preprocess->parsed()) return run_preprocess_command(ml_root, preprocess_options);
    if (infer->parsed()) return run_infer_command(ml_root, infer_options);
    if (serve_command->parsed()) return run_serve_command(ml_root, serve_options);
    if (bench->parsed()) {
      std::copy(bench_shape.begin(), bench_shape.end(), bench_options.shape.begin());
      std::copy(bench_roi.begin(), bench_roi.end(), bench_options.roi.begin());
      return run_bench_command(bench_options);
    }
    if (synth->parsed()) {
      std::copy(shape.begin(), shape.end(), synth_options.shape.begin());
      return run_synth_command(synth_options);
    }
    throw InternalError("no command was dispatched");
  } catch (const Error& error) {
    return report_error(ml_root, error.kind(), error.what());
  } catch (const std::exception& error) {
    return report_error(ml_root, ErrorKind::kInternal,
                        std::string("unexpected error: ") + error.what());
  }
}

}  // namespace medseg
