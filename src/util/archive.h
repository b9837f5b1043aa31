// Tar archives, extracted by the system's /bin/tar (GNU tar: compression detected from the
// content; absolute member names are made relative and members with ".." are refused) after
// their listing is checked against a size bound, into a temporary folder that is removed with everything in it.
#pragma once

#include <cstdint>
#include <string>

namespace medseg {

// A fresh folder under $TMPDIR (or /tmp), removed with its contents on destruction.
class TemporaryFolder {
 public:
  // `purpose` names it in errors ("to extract the model archive in").
  explicit TemporaryFolder(const std::string& purpose);
  ~TemporaryFolder();
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Extracts `archive` (a tar file, plain or compressed) into `folder`. The archive is listed
// first: members other than regular files and folders (symbolic or hard links, devices, FIFOs),
// more than kMaxTarMembers members, or members totalling more than `max_bytes` are refused before
// anything is written. When tar fails or a member is refused: a ClientError "<name>: ...;
// <expected>", `name` being how the caller names the archive ("model archive
// /opt/ml/model/model.tar.gz").
constexpr int64_t kMaxTarMembers = 10000;
void extract_tar(const std::string& archive, const std::string& folder, const std::string& name,
                 const std::string& expected, int64_t max_bytes);

}  // namespace medseg
