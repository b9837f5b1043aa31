#include "train/progress_meter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>

namespace medseg {
namespace {

StepTimes sync_only(double seconds) {
  StepTimes times;
  times.exposed_sync = seconds;
  return times;
}

TEST(ProgressMeterTest, ReportsTheIntervalAndStartsANewOne) {
  ProgressMeter meter(/*first_global_step=*/100, /*total_steps=*/200, /*world_size=*/2);
  meter.add_step(4, sync_only(0.010), /*timed=*/false);
  meter.add_step(4, sync_only(0.030), /*timed=*/false);
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

TEST(ProgressMeterTest, TheStepBreakdownAveragesTimedStepsAndSharesAddUpToOne) {
  ProgressMeter meter(0, 100, 1);
  StepTimes timed;
  timed.data_wait = 0.002;
  timed.copy = 0.001;
  timed.forward = 0.010;
  timed.backward = 0.020;
  timed.exposed_sync = 0.001;
  timed.optimizer = 0.004;
  StepTimes untimed = timed;  // a GPU step without synchronisation: its phases mean nothing
  untimed.forward = 5.0;
  meter.add_step(2, timed, true);
  meter.add_step(2, untimed, false);
  meter.add_checkpoint(0.006);  // amortised over the interval's 2 steps
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const ProgressReport report = meter.report(2);
  EXPECT_DOUBLE_EQ(report.parts.forward, 0.010);
  EXPECT_DOUBLE_EQ(report.checkpoint_seconds_per_step, 0.003);
  EXPECT_GE(report.step_seconds, 0.040);
  std::map<std::string, double> shares;
  double total = 0.0;
  for (const auto& [name, share] : report.shares()) {
    shares[name] = share;
    total += share;
  }
  EXPECT_NEAR(total, 1.0, 1e-9);
  EXPECT_EQ(shares.size(), 8u);
  EXPECT_NEAR(shares["forward"], 0.010 / report.step_seconds, 1e-9);
  EXPECT_NEAR(shares["checkpoint"], 0.003 / report.step_seconds, 1e-9);
  EXPECT_GT(shares["other"], 0.0);  // the sleep: time no phase accounts for
  // The next interval starts empty.
  EXPECT_EQ(meter.report(2).parts.forward, 0.0);
}

TEST(ProgressMeterTest, ValidationTimeIsNotPartOfTheSteps) {
  ProgressMeter meter(0, 100, 1);
  meter.add_step(2, StepTimes(), true);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  meter.exclude(0.3);  // a validation took all of that
  const ProgressReport report = meter.report(1);
  EXPECT_LT(report.step_seconds, 0.05);
  EXPECT_GT(report.samples_per_second, 2 / 0.05);
}

}  // namespace
}  // namespace medseg
