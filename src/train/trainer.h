// The training job: from the resolved configuration and the SageMaker job environment to a
// trained model in <ml-root>/model. The story of run():
//   1. set up the device, threads and seeds; build the UNet and the optimiser
//   2. find the cases of the train (and validation) channel and preprocess them once, in memory
//   3. for each epoch: batches from the loader -> forward -> loss -> backward -> step, a progress
//      line every log_every_steps; validation on whole volumes every validate_every_epochs
//   4. write model.pth (final weights), best_model.pth (best validation mean Dice),
//      medseg_config.yaml and metrics.json to the model folder, metrics.jsonl to output/data.
// A stop request (SIGTERM) ends training at the next step boundary; the model is still written.
// Checkpoints (every N steps, every M minutes, each epoch end) make an interrupted job resume
// where it was, bit for bit on the CPU. With several workers (DistEnv) each rank trains on its
// share of every global batch, gradients are averaged across ranks, and only rank 0 writes.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "config/config_loader.h"
#include "dist/dist_env.h"
#include "sagemaker/job_environment.h"

namespace medseg {

struct TrainSummary {
  int64_t epochs_completed = 0;
  int64_t global_steps = 0;
  double last_loss = 0.0;
  double best_mean_dice = -1.0;  // -1 when validation never ran
  int64_t best_epoch = -1;
  bool stopped_early = false;  // a stop request ended training
};

class Trainer {
 public:
  // `stop_requested` (may be null) is polled between steps.
  Trainer(ResolvedConfig resolved, JobEnvironment environment,
          const std::atomic<bool>* stop_requested = nullptr, DistEnv dist = DistEnv());
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainSummary run();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace medseg
