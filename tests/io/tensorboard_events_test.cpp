#include "io/tensorboard_events.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "io/png_image.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

TEST(TensorBoardEventsTest, Crc32cIsCastagnolis) {
  // The check value of CRC-32C (RFC 3720, iSCSI) and TensorBoard's mask of a known CRC.
  EXPECT_EQ(crc32c("123456789", 9), 0xe3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  const uint32_t crc = crc32c("a", 1);
  EXPECT_EQ(masked_crc32c("a", 1), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TensorBoardEventsTest, TensorBoardReadsTheScalarsAndPicturesBack) {
  testing::TempDir dir;
  RgbImage picture(5, 3);
  for (int x = 0; x < 5; ++x) std::memcpy(picture.at(x, 1), "\xff\x00\x00", 3);  // a red row
  std::string event_file;
  {
    TensorBoardWriter writer(dir.file("tensorboard"));
    event_file = writer.path();
    writer.add_scalar("train/train_loss", 10, 0.75);
    writer.add_scalar("train/train_loss", 20, 0.5);
    writer.add_scalar("validation/val_mean_dice", 20, 0.8125);
    writer.add_scalar("train/negative_step", -3, -1e-3);
    writer.add_image("validation_picture/case_0", 20, encode_png(picture), 5, 3, 3);
    writer.flush();
  }
  EXPECT_NE(event_file.find("/tensorboard/events.out.tfevents."), std::string::npos);
  const nlohmann::json read = testing::read_tensorboard(dir.file("tensorboard"));
  ASSERT_TRUE(read.contains("scalars")) << read.dump();
  EXPECT_EQ(read["scalars"]["train/train_loss"], nlohmann::json::parse("[[10, 0.75], [20, 0.5]]"));
  EXPECT_EQ(read["scalars"]["validation/val_mean_dice"], nlohmann::json::parse("[[20, 0.8125]]"));
  ASSERT_EQ(read["scalars"]["train/negative_step"].size(), 1u);
  EXPECT_EQ(read["scalars"]["train/negative_step"][0][0], -3);
  EXPECT_NEAR(read["scalars"]["train/negative_step"][0][1].get<double>(), -1e-3, 1e-9);
  const nlohmann::json& pictures = read["images"]["validation_picture/case_0"];
  ASSERT_EQ(pictures.size(), 1u) << read.dump();
  EXPECT_EQ(pictures[0]["step"], 20);
  EXPECT_EQ(pictures[0]["pixels_width"], 5);
  EXPECT_EQ(pictures[0]["pixels_height"], 3);
  EXPECT_EQ(pictures[0]["colours"]["red"], 5);
}

TEST(TensorBoardEventsTest, ASessionStartMakesTensorBoardForgetWhatCameAfterIt) {
  // An interrupted run wrote steps 10..30; it resumes from its checkpoint of step 20 into a new
  // file, starting at step 21: TensorBoard shows the resumed run's step 30, not both.
  testing::TempDir dir;
  {
    TensorBoardWriter first(dir.file("tb"));
    for (int step : {10, 20, 30}) first.add_scalar("loss", step, 1.0);
    first.flush();
  }
  sleep(1);  // a new file name (seconds resolution), as a restarted container gets
  {
    TensorBoardWriter resumed(dir.file("tb"));
    resumed.add_session_start(21);
    resumed.add_scalar("loss", 30, 2.0);
    resumed.flush();
  }
  const nlohmann::json read = testing::read_tensorboard(dir.file("tb"));
  EXPECT_EQ(read["scalars"]["loss"], nlohmann::json::parse("[[10, 1.0], [20, 1.0], [30, 2.0]]"));
}

TEST(TensorBoardEventsTest, AFolderThatCannotBeWrittenIsAPlatformErrorNamingIt) {
  testing::TempDir dir;
  testing::write_text(dir.file("file"), "not a folder");
  try {
    TensorBoardWriter writer(dir.file("file/tensorboard"));
    FAIL() << "no error";
  } catch (const PlatformError& error) {
    EXPECT_NE(std::string(error.what()).find(dir.file("file/tensorboard")), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace medseg
