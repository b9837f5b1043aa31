// Reading JSON files with errors that name the file and the problem.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

namespace medseg {

// Parses the JSON file at `path`. A missing file is a ClientError when `required`, otherwise the
// result is null; unreadable files are PlatformErrors and malformed JSON is a ClientError naming
// the file and the parser's position.
nlohmann::json read_json_file(const std::string& path, bool required);

// The whole file as bytes; PlatformError naming the path when it cannot be read.
std::string read_text_file(const std::string& path);

// Writes `text` to `path` atomically: a temporary file in the same directory, fsync, rename, fsync
// of the directory. A reader sees either the old file or the whole new one.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace medseg
