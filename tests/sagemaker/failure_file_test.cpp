#include "sagemaker/failure_file.h"

#include <gtest/gtest.h>

#include "test_support.h"

namespace medseg {
namespace {

TEST(FailureFileTest, TheFirstErrorWinsInBothFiles) {
  testing::TempDir root;
  EXPECT_TRUE(write_failure_file(root.path(), ErrorKind::kClient, "train channel is empty"));
  EXPECT_FALSE(write_failure_file(root.path(), ErrorKind::kPlatform, "peer rank 1 is gone"));
  const std::string first = "ClientError: train channel is empty\n";
  EXPECT_EQ(testing::read_text(root.file("output/failure")), first);
  EXPECT_EQ(testing::read_text(root.file("output/message")), first);
}

TEST(FailureFileTest, OneParagraph) {
  EXPECT_EQ(failure_reason(ErrorKind::kInternal, "a\nb\r\nc"), "InternalError: a b  c");
  // A NUL (from a hostile key) must not cut the message short.
  EXPECT_EQ(failure_reason(ErrorKind::kClient, std::string("key 'a\0b' is unknown", 20)),
            "ClientError: key 'a\\0b' is unknown");
}

TEST(FailureFileTest, StaleFilesAreClearedAndNothingOutsideAnMlRoot) {
  testing::TempDir root;
  write_failure_file(root.path(), ErrorKind::kClient, "an earlier run");
  clear_stale_failure_files(root.path());
  EXPECT_TRUE(root.entries() == std::vector<std::string>{"output"});
  EXPECT_TRUE(write_failure_file(root.path(), ErrorKind::kClient, "this run"));
  EXPECT_FALSE(write_failure_file(root.file("absent"), ErrorKind::kClient, "no ML root"));
  EXPECT_FALSE(testing::file_exists(root.file("absent")));
}

}  // namespace
}  // namespace medseg
