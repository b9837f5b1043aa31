#include "util/json_file.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/file_io.h"

namespace medseg {
namespace fs = std::filesystem;

nlohmann::json read_json_file(const std::string& path, bool required) {
  std::error_code error;
  if (!fs::exists(path, error)) {
    if (required) throw ClientError(path + ": file not found (expected a JSON file)");
    return nullptr;
  }
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& parse_error) {
    throw ClientError(path + ": malformed JSON (" + parse_error.what() + ")");
  }
}

}  // namespace medseg
