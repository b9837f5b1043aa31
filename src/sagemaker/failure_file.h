// SageMaker's failure files: on any failure the job writes a one-paragraph reason to
// <ml-root>/output/failure (a training job shows its first 1,024 characters as FailureReason) and
// to <ml-root>/output/message (what a Processing job shows), and exits non-zero.
//
// The first error of a job wins: it is the root cause, and the errors that follow in the
// launcher and the other workers of the host (a peer gone, a timeout) only repeat it. Later
// errors go to the log only.
#pragma once

#include <string>

#include "util/error.h"

namespace medseg {

// The text written to the failure files: "<Kind>: <message>" on one paragraph (newlines become
// spaces).
std::string failure_reason(ErrorKind kind, const std::string& message);

// Writes the failure files under `ml_root` when that directory exists (it always does in a
// SageMaker container; a local command run without an ML root leaves no stray /opt/ml behind)
// and no earlier error of this job wrote them. Never throws: a failure to write is reported on
// stderr. Returns whether this call wrote the failure file.
bool write_failure_file(const std::string& ml_root, ErrorKind kind, const std::string& message);

// Removes failure files an earlier run in the same ML root left (a local rerun; SageMaker starts
// every job on a clean one), saying so. Called once by the job's first process, before any worker
// starts. Never throws.
void clear_stale_failure_files(const std::string& ml_root);

}  // namespace medseg
