#include "sagemaker/failure_file.h"

#include <cstdio>
#include <filesystem>

#include "sagemaker/ml_paths.h"
#include "util/file_io.h"
#include "util/json_file.h"

namespace medseg {
namespace fs = std::filesystem;

std::string failure_reason(ErrorKind kind, const std::string& message) {
  std::string reason = std::string(error_kind_name(kind)) + ": " + message;
  for (char& c : reason) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return reason;
}

bool write_failure_file(const std::string& ml_root, ErrorKind kind, const std::string& message) {
  const MlPaths paths{ml_root};
  std::error_code error;
  if (!fs::is_directory(ml_root, error)) return false;
  try {
    fs::create_directories(paths.output_dir());
    write_file_atomically(paths.failure_file(), failure_reason(kind, message) + "\n");
    return true;
  } catch (const std::exception& write_error) {
    std::fprintf(stderr, "medseg: could not write %s: %s\n", paths.failure_file().c_str(),
                 write_error.what());
    return false;
  }
}

}  // namespace medseg
