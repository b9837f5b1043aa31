// The command line: `medseg <command> [options]`. Parses arguments, resolves the ML root and
// dispatches to a command. This is the one place that catches errors: it logs them, writes
// SageMaker's failure file and turns them into the exit code (0 ok, 2 client error, 3 platform
// error, 4 internal error or a command that is not built yet).
#pragma once

#include <string>
#include <vector>

namespace medseg {

// When the binary is started as `train` or `serve` (a link on PATH, for images run without the
// entrypoint), the command word is implied: {"train", "--x"} -> {"medseg", "train", "--x"}.
std::vector<std::string> normalize_arguments(const std::vector<std::string>& arguments);

// The command for a start with no argument at all (SageMaker SDK v3's ModelTrainer and
// Processing jobs start the image that way) or with the bare word `train` (how SageMaker starts
// every training job), chosen in this order: $MEDSEG_COMMAND (any command word); the
// hyperparameter `command` in <ml-root>/input/config/hyperparameters.json (train, preprocess or
// infer: e.g. inference as a training job from a launcher that cannot pass arguments);
// `preprocess` when <ml-root>/config/processingjobconfig.json exists (a Processing job); `train`
// when <ml-root>/input/config exists (a training job). "" when none applies. `reason` says why.
// An invalid `command` hyperparameter is a ClientError naming the file and the key.
std::string command_from_environment(const std::string& ml_root, std::string* reason);

int run_cli(int argc, char** argv);

}  // namespace medseg
