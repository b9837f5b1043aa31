#include "util/file_io.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

TEST(FileIoTest, AtomicWriteReplacesTheFileAndLeavesNothingElse) {
  testing::TempDir dir;
  write_file_atomically(dir.file("a.json"), std::string("first"));
  write_file_atomically(dir.file("a.json"), std::string("second, longer"));
  EXPECT_EQ(read_text_file(dir.file("a.json")), "second, longer");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"a.json"});
  EXPECT_EQ(std::filesystem::status(dir.file("a.json")).permissions() & std::filesystem::perms::all,
            std::filesystem::perms(0644));
}

TEST(FileIoTest, AFileNeverCommittedLeavesTheOldOneAndNoTemporaryFile) {
  testing::TempDir dir;
  write_file_atomically(dir.file("model.pth"), std::string("old"));
  {
    AtomicFile file(dir.file("model.pth"));
    file.write("new", 3);
  }  // e.g. an exception before commit
  EXPECT_EQ(read_text_file(dir.file("model.pth")), "old");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.pth"});
}

TEST(FileIoTest, ANamedTemporaryFileWithAHeaderWrittenLast) {
  testing::TempDir dir;
  testing::write_text(dir.file(".out.bin.tmp-1"), "left over by an earlier writer, much longer");
  AtomicFile file(dir.file("out.bin"), dir.file(".out.bin.tmp-1"));
  file.write("....payload", 11);
  EXPECT_EQ(read_text_file(dir.file(".out.bin.tmp-1")), "....payload");  // truncated first
  file.write_at(0, "HEAD", 4);
  file.commit();
  EXPECT_EQ(read_text_file(dir.file("out.bin")), "HEADpayload");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
}

TEST(FileIoTest, AFullDiskIsAPlatformErrorNamingTheFileAndKeepsTheOldOne) {
  // A file-size limit stands in for a full disk (EFBIG instead of ENOSPC); in a child process.
  testing::TempDir dir;
  write_file_atomically(dir.file("metrics.json"), std::string("old"));
  const pid_t child = fork();
  if (child == 0) {
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{100, 100};
    setrlimit(RLIMIT_FSIZE, &limit);
    try {
      write_file_atomically(dir.file("metrics.json"), std::string(1000, 'x'));
    } catch (const PlatformError& error) {
      const std::string message = error.what();
      _exit(message.find("cannot write") != std::string::npos &&
                    message.find("metrics.json") != std::string::npos
                ? 0
                : 2);
    }
    _exit(1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no error; 2: an error without the file's name";
  EXPECT_EQ(read_text_file(dir.file("metrics.json")), "old");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"metrics.json"});
}

TEST(FileIoTest, MissingFolderOrFileIsAPlatformErrorNamingIt) {
  testing::TempDir dir;
  try {
    write_file_atomically(dir.file("absent/x.json"), std::string("{}"));
    ADD_FAILURE() << "no error";
  } catch (const PlatformError& error) {
    EXPECT_NE(std::string(error.what()).find("absent/x.json"), std::string::npos) << error.what();
  }
  EXPECT_THROW(read_text_file(dir.file("nothing.txt")), PlatformError);
}

}  // namespace
}  // namespace medseg
