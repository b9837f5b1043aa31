#include "util/archive.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cerrno>
#include <fstream>
#include <sstream>
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

struct TarRun {
  bool exited = false;
  int exit_code = 0;
  std::string messages;  // stderr (and stdout unless it went to `output`)
  bool ok() const { return exited && exit_code == 0; }
};

// Runs /bin/tar with `arguments`, stdout to the file `output` and stderr to a file in `folder`
// (removed); returns how it ended and what it said on stderr.
TarRun run_tar(const std::vector<std::string>& arguments, const std::string& output,
               const std::string& folder) {
  const std::string errors = folder + "/.tar-errors";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, errors.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<std::string> all = {kTar};
  all.insert(all.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (std::string& argument : all) argv.push_back(argument.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawn_error = ::posix_spawn(&pid, kTar, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    errno = spawn_error;
    throw_system_error(std::string("cannot run ") + kTar);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_system_error("waiting for tar");
  }
  TarRun run;
  run.exited = WIFEXITED(status);
  run.exit_code = run.exited ? WEXITSTATUS(status) : 0;
  try {
    run.messages = trim(read_text_file(errors));
  } catch (const Error&) {
  }
  std::error_code ignored;
  fs::remove(errors, ignored);
  return run;
}

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
                 const std::string& expected, int64_t max_bytes) {
  const auto refuse = [&](const std::string& why) {
    throw ClientError(name + ": " + why + "; " + expected);
  };
  const auto failed = [&](const TarRun& run) {
    refuse("cannot extract it as a tar file (tar " +
           (run.exited ? "exited with " + std::to_string(run.exit_code)
                       : std::string("was killed")) +
           (run.messages.empty() ? "" : ": " + truncate_text(run.messages, 300)) + ")");
  };
  // 1. The listing, checked before anything is written: `tar -tv` prints one line per member,
  //    "<type><mode> <uid>/<gid> <size> <date> <time> <name>" (numeric owners, escaped names).
  const std::string listing_path = folder + "/.tar-listing";
  const TarRun listing = run_tar({"-tvf", archive, "--numeric-owner"}, listing_path, folder);
  if (!listing.ok()) failed(listing);
  std::ifstream lines(listing_path);
  int64_t members = 0;
  int64_t total = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string mode, owner, size_text, date, time, member;
    fields >> mode >> owner >> size_text >> date >> time;
    std::getline(fields, member);
    member = trim(member);
    const char type = mode[0];
    // "name -> target" for a symbolic link, "name link to target" for a hard link.
    const size_t arrow = member.find(type == 'h' ? " link to " : " -> ");
    if ((type == 'l' || type == 'h') && arrow != std::string::npos) member.resize(arrow);
    if (member.rfind("./", 0) == 0 && member.size() > 2) member.erase(0, 2);
    if (type != '-' && type != 'd') {
      const std::string kind = type == 'l'   ? "a symbolic link"
                               : type == 'h' ? "a hard link"
                                             : std::string("not a regular file (type '") + type +
                                                   "')";
      refuse("member " + truncate_text(member, 200) + " is " + kind +
             "; only regular files and folders are extracted");
    }
    if (++members > kMaxTarMembers) {
      refuse("more than " + std::to_string(kMaxTarMembers) + " members");
    }
    int64_t size = 0;
    const auto parsed =
        std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
    if (parsed.ec != std::errc() || size < 0) {
      refuse("tar lists member " + truncate_text(member, 200) + " with size '" + size_text + "'");
    }
    total += size;
    if (total > max_bytes) {
      refuse("its members hold more than " + std::to_string(max_bytes >> 20) +
             " MiB (the limit for it; reached at member " + truncate_text(member, 200) + ")");
    }
  }
  lines.close();
  std::error_code ignored;
  fs::remove(listing_path, ignored);
  // 2. The extraction.
  const TarRun extraction =
      run_tar({"-xf", archive, "-C", folder, "--no-same-owner", "--no-same-permissions"},
              folder + "/.tar-messages", folder);
  fs::remove(folder + "/.tar-messages", ignored);
  if (!extraction.ok()) failed(extraction);
}

}  // namespace medseg
