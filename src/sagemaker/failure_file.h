// SageMaker's failure file: on any failure the job writes a one-paragraph reason to
// <ml-root>/output/failure (SageMaker shows its first 1,024 characters as FailureReason) and exits
// non-zero.
#pragma once

#include <string>

#include "util/error.h"

namespace medseg {

// The text written to the failure file: "<Kind>: <message>" on one paragraph (newlines become
// spaces).
std::string failure_reason(ErrorKind kind, const std::string& message);

// Writes the failure file under `ml_root` when that directory exists (it always does in a
// SageMaker container; a local command run without an ML root leaves no stray /opt/ml behind).
// Never throws: a failure to write is reported on stderr. Returns whether the file was written.
bool write_failure_file(const std::string& ml_root, ErrorKind kind, const std::string& message);

}  // namespace medseg
