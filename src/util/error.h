// The closed set of error kinds medseg raises. Every failure is one of these; they are caught once,
// at the entrypoint (app/cli.cpp), which writes SageMaker's failure file and picks the exit code.
//
//   ClientError    the user's input is wrong (config, hyperparameters, data). Exit code 2.
//   PlatformError  something outside medseg failed (disk full, network, a missing device). Exit 3.
//   InternalError  a bug in medseg. Exit 4.
//
// Messages name the file, key or value involved and what was expected, so the first 1,024
// characters (what SageMaker shows as FailureReason) are enough to fix the problem.
#pragma once

#include <stdexcept>
#include <string>

namespace medseg {

enum class ErrorKind { kClient, kPlatform, kInternal };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

class ClientError : public Error {
 public:
  explicit ClientError(const std::string& message) : Error(ErrorKind::kClient, message) {}
};

class PlatformError : public Error {
 public:
  explicit PlatformError(const std::string& message) : Error(ErrorKind::kPlatform, message) {}
};

class InternalError : public Error {
 public:
  explicit InternalError(const std::string& message) : Error(ErrorKind::kInternal, message) {}
};

// "ClientError", "PlatformError" or "InternalError": the prefix of the failure file's reason.
const char* error_kind_name(ErrorKind kind);

// The process exit code for an error of this kind (2, 3, 4).
int exit_code_for(ErrorKind kind);

// Throws PlatformError naming `what` and strerror(errno). For failed system calls.
[[noreturn]] void throw_system_error(const std::string& what);

}  // namespace medseg
