#include "util/archive.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "util/error.h"
#include "util/file_io.h"
#include "util/strings.h"

extern char** environ;

namespace medseg {
namespace fs = std::filesystem;
namespace {

constexpr const char* kTar = "/bin/tar";

}  // namespace

TemporaryFolder::TemporaryFolder(const std::string& purpose) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/medseg-tmp.XXXXXX";
  if (::mkdtemp(&pattern[0]) == nullptr) {
    throw_system_error("cannot create a temporary folder " + purpose);
  }
  path_ = pattern;
}

TemporaryFolder::~TemporaryFolder() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

void extract_tar(const std::string& archive, const std::string& folder, const std::string& name,
                 const std::string& expected) {
  const std::string log_path = folder + "/.tar-messages";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<std::string> arguments = {
      kTar, "-xf", archive, "-C", folder, "--no-same-owner", "--no-same-permissions"};
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawn_error = ::posix_spawn(&pid, kTar, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    errno = spawn_error;
    throw_system_error(std::string("cannot run ") + kTar + " to extract " + name);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_system_error("waiting for tar extracting " + archive);
  }
  std::string messages;
  try {
    messages = trim(read_text_file(log_path));
  } catch (const Error&) {
  }
  std::error_code ignored;
  fs::remove(log_path, ignored);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw ClientError(name + ": cannot extract it as a tar file (tar " +
                      (WIFEXITED(status) ? "exited with " + std::to_string(WEXITSTATUS(status))
                                         : std::string("was killed")) +
                      (messages.empty() ? "" : ": " + truncate_text(messages, 300)) + "); " +
                      expected);
  }
}

}  // namespace medseg
