#include "train/progress_meter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace medseg {
namespace {

TEST(ProgressMeterTest, ReportsTheIntervalAndStartsANewOne) {
  ProgressMeter meter(/*first_global_step=*/100, /*total_steps=*/200, /*world_size=*/2);
  meter.add_step(4, 0.010);
  meter.add_step(4, 0.030);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const ProgressReport first = meter.report(/*global_step=*/102);
  EXPECT_EQ(first.steps, 2);
  EXPECT_DOUBLE_EQ(first.exposed_sync_seconds_per_step, 0.020);
  // 8 samples of this rank x 2 ranks in at least 50 ms.
  EXPECT_GT(first.samples_per_second, 0.0);
  EXPECT_LE(first.samples_per_second, 16 / 0.05);
  EXPECT_GT(first.exposed_sync_share, 0.0);
  EXPECT_LE(first.exposed_sync_share, 0.04 / 0.05);
  // 98 steps left at the pace of the 2 this run took (a resumed job's earlier 100 do not count).
  EXPECT_NEAR(first.eta_seconds, 49 * meter.seconds_since_start(), 0.01 * first.eta_seconds + 0.01);
  const ProgressReport second = meter.report(102);
  EXPECT_EQ(second.steps, 0);
  EXPECT_EQ(second.samples_per_second, 0.0);
  EXPECT_EQ(second.exposed_sync_seconds_per_step, 0.0);
}

}  // namespace
}  // namespace medseg
