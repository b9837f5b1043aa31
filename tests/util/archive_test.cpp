#include "util/archive.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

namespace fs = std::filesystem;

// Packs the files of `dir`/src into `dir`/<name> with the system's tar (options before the
// member list, e.g. "-z").
std::string pack(const testing::TempDir& dir, const std::string& name, const std::string& options) {
  const std::string archive = dir.file(name);
  const auto result = testing::run_shell("tar " + options + " -cf " + archive + " -C " +
                                         dir.file("src") + " .");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return archive;
}

void extract(const std::string& archive, const std::string& folder, int64_t max_bytes) {
  fs::create_directories(folder);
  extract_tar(archive, folder, "archive " + archive, "expected a test archive", max_bytes);
}

TEST(ArchiveTest, ExtractsRegularFilesAndFoldersWithinTheBound) {
  testing::TempDir dir;
  fs::create_directories(dir.file("src/case"));
  testing::write_text(dir.file("src/case/a.nii"), std::string(1000, 'a'));
  testing::write_text(dir.file("src/b.txt"), "b");
  const std::string archive = pack(dir, "ok.tar.gz", "-z");
  extract(archive, dir.file("out"), 1001);
  EXPECT_EQ(testing::read_text(dir.file("out/case/a.nii")), std::string(1000, 'a'));
  EXPECT_EQ(testing::read_text(dir.file("out/b.txt")), "b");
  // Nothing of tar's own (listing, messages) is left behind.
  EXPECT_FALSE(fs::exists(dir.file("out/.tar-listing")));
  EXPECT_FALSE(fs::exists(dir.file("out/.tar-errors")));
}

// A small compressed archive that expands to far more than the bound (a "tar bomb") is refused
// from its listing, before anything is written.
TEST(ArchiveTest, MembersBeyondTheBoundAreRefusedBeforeAnythingIsWritten) {
  testing::TempDir dir;
  fs::create_directories(dir.file("src"));
  ASSERT_EQ(testing::run_shell("head -c 8388608 /dev/zero > " + dir.file("src/zeros.nii")).exit_code,
            0);
  const std::string archive = pack(dir, "bomb.tar.gz", "-z");
  EXPECT_LT(fs::file_size(archive), 100000u);
  testing::expect_client_error([&] { extract(archive, dir.file("out"), 1 << 20); },
                               {archive, "more than 1 MiB", "zeros.nii", "expected a test archive"});
  EXPECT_FALSE(fs::exists(dir.file("out/zeros.nii")));
}

TEST(ArchiveTest, LinksAndSpecialFilesAreRefused) {
  testing::TempDir dir;
  fs::create_directories(dir.file("src"));
  testing::write_text(dir.file("outside"), "secret");
  fs::create_symlink(dir.file("outside"), dir.file("src/model.pth"));
  testing::expect_client_error(
      [&] { extract(pack(dir, "symlink.tar", ""), dir.file("out1"), 1 << 20); },
      {"member model.pth is a symbolic link"});
  EXPECT_FALSE(fs::exists(dir.file("out1/model.pth")));

  fs::remove(dir.file("src/model.pth"));
  testing::write_text(dir.file("src/a"), "a");
  fs::create_hard_link(dir.file("src/a"), dir.file("src/b"));
  testing::expect_client_error(
      [&] { extract(pack(dir, "hardlink.tar", ""), dir.file("out2"), 1 << 20); },
      {"is a hard link"});

  fs::remove(dir.file("src/b"));
  ASSERT_EQ(testing::run_shell("mkfifo " + dir.file("src/fifo")).exit_code, 0);
  testing::expect_client_error(
      [&] { extract(pack(dir, "fifo.tar", ""), dir.file("out3"), 1 << 20); },
      {"member fifo is not a regular file"});
}

TEST(ArchiveTest, TooManyMembersAreRefused) {
  testing::TempDir dir;
  fs::create_directories(dir.file("src"));
  ASSERT_EQ(testing::run_shell("cd " + dir.file("src") + " && seq " +
                               std::to_string(kMaxTarMembers + 1) + " | xargs touch")
                .exit_code,
            0);
  testing::expect_client_error(
      [&] { extract(pack(dir, "many.tar", ""), dir.file("out"), 1 << 20); },
      {"more than " + std::to_string(kMaxTarMembers) + " members"});
}

TEST(ArchiveTest, NotATarIsAClientErrorQuotingTar) {
  testing::TempDir dir;
  testing::write_text(dir.file("model.tar.gz"), "not a tar file");
  testing::expect_client_error([&] { extract(dir.file("model.tar.gz"), dir.file("out"), 1 << 20); },
                               {dir.file("model.tar.gz"), "cannot extract it as a tar file"});
}

}  // namespace
}  // namespace medseg
