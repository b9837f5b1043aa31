#include "sagemaker/ml_paths.h"

#include <cstdlib>

namespace medseg {

std::string resolve_ml_root(const std::string& flag) {
  std::string root = flag;
  if (root.empty()) {
    const char* from_environment = std::getenv("MEDSEG_ML_ROOT");
    root = from_environment && *from_environment ? from_environment : "/opt/ml";
  }
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return root;
}

}  // namespace medseg
