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

int run_cli(int argc, char** argv);

}  // namespace medseg
