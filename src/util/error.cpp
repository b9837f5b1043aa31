#include "util/error.h"

#include <cerrno>
#include <cstring>

namespace medseg {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kClient:
      return "ClientError";
    case ErrorKind::kPlatform:
      return "PlatformError";
    case ErrorKind::kInternal:
      return "InternalError";
  }
  return "InternalError";
}

int exit_code_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kClient:
      return 2;
    case ErrorKind::kPlatform:
      return 3;
    case ErrorKind::kInternal:
      return 4;
  }
  return 4;
}

void throw_system_error(const std::string& what) {
  const int saved_errno = errno;
  throw PlatformError(what + ": " + std::strerror(saved_errno));
}

}  // namespace medseg
