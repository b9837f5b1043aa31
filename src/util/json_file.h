// Reading JSON files with errors that name the file and the problem.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

namespace medseg {

// Nesting deeper than this is refused before parsing (nlohmann's recursive destruction and our
// JSON-to-YAML conversion would overflow the stack on inputs nested thousands deep).
inline constexpr int kMaxJsonDepth = 64;

// The deepest nesting of [ { ( outside quoted strings in `text`.
int nesting_depth(const std::string& text);

// Parses JSON text; ClientErrors start with `what` (a file name, a key) and say what is wrong:
// malformed, nested too deep, a number beyond double's range.
nlohmann::json parse_json_text(const std::string& text, const std::string& what);

// Parses the JSON file at `path`. A missing file is a ClientError when `required`, otherwise the
// result is null; unreadable files are PlatformErrors and malformed JSON is a ClientError naming
// the file and the parser's position.
nlohmann::json read_json_file(const std::string& path, bool required);

}  // namespace medseg
