#include "util/json_file.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/file_io.h"

namespace medseg {
namespace fs = std::filesystem;

int nesting_depth(const std::string& text) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == quote) {
        in_string = false;
      }
    } else if (c == '"' || c == '\'') {
      in_string = true;
      quote = c;
    } else if (c == '[' || c == '{' || c == '(') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}' || c == ')') {
      --depth;
    }
  }
  return deepest;
}

nlohmann::json parse_json_text(const std::string& text, const std::string& what) {
  const int depth = nesting_depth(text);
  if (depth > kMaxJsonDepth) {
    throw ClientError(what + ": nested " + std::to_string(depth) + " levels deep; at most " +
                      std::to_string(kMaxJsonDepth) + " are accepted");
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& parse_error) {
    throw ClientError(what + ": malformed JSON (" + parse_error.what() + ")");
  } catch (const nlohmann::json::exception& error) {  // e.g. a number beyond double's range
    throw ClientError(what + ": " + error.what());
  }
}

nlohmann::json read_json_file(const std::string& path, bool required) {
  std::error_code error;
  if (!fs::exists(path, error)) {
    if (required) throw ClientError(path + ": file not found (expected a JSON file)");
    return nullptr;
  }
  if (fs::is_directory(path, error)) {
    throw ClientError(path + ": is a folder; expected a JSON file");
  }
  return parse_json_text(read_text_file(path), path);
}

}  // namespace medseg
