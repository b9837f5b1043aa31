// Reading JSON files with errors that name the file and the problem.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

namespace medseg {

// Parses the JSON file at `path`. A missing file is a ClientError when `required`, otherwise the
// result is null; unreadable files are PlatformErrors and malformed JSON is a ClientError naming
// the file and the parser's position.
nlohmann::json read_json_file(const std::string& path, bool required);

}  // namespace medseg
