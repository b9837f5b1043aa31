#include <spdlog/spdlog.h>

#include <chrono>

#include "app/commands.h"
#include "data/synthetic_cases.h"

namespace medseg {

int run_synth_command(const SynthCommandOptions& options) {
  SynthOptions synth;
  synth.out_dir = options.out_dir;
  synth.cases = options.cases;
  synth.shape = options.shape;
  synth.seed = options.seed;
  synth.threads = options.threads;
  const auto start = std::chrono::steady_clock::now();
  const int written = write_synthetic_dataset(synth);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("synth: wrote {} cases of {}x{}x{}x4 to {} in {:.1f} s (seed {})", written,
               options.shape[0], options.shape[1], options.shape[2], options.out_dir, seconds,
               options.seed);
  return 0;
}

}  // namespace medseg
