// What the harnesses share: a scratch file for parsers that read paths, and the rule that medseg's
// own errors (ClientError, PlatformError: a clear message for bad input) are the expected outcome
// of malformed bytes, while anything else (a signal, a sanitizer report, an InternalError, another
// exception) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace medseg::fuzz {

// Writes `size` bytes to a per-process scratch file named `name` (under $TMPDIR or /dev/shm) and
// returns its path.
std::string scratch_file(const std::string& name, const uint8_t* data, size_t size);

// Runs `parse`; returns normally for success or a ClientError / PlatformError (whose message must
// be non-empty), aborts (a libFuzzer crash) for an InternalError or any other exception.
void expect_clean(const std::function<void()>& parse);

}  // namespace medseg::fuzz
