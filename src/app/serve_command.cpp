#include <spdlog/spdlog.h>

#include "app/commands.h"
#include "sagemaker/ml_paths.h"
#include "serve/server.h"
#include "util/stop_signals.h"

namespace medseg {

int run_serve_command(const std::string& ml_root, const ServeCommandOptions& options) {
  ServeOptions serve_options;
  serve_options.model_path =
      options.model_path.empty() ? MlPaths{ml_root}.model_dir() : options.model_path;
  serve_options.port = options.port;
  serve_options.device = options.device;
  serve_options.ml_root = ml_root;
  spdlog::info("medseg {} serve: model {}", MEDSEG_VERSION, serve_options.model_path);
  StopSignals signals;
  return serve(serve_options, signals.flag());
}

}  // namespace medseg
