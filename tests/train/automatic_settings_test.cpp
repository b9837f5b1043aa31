#include "train/automatic_settings.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

namespace medseg {
namespace {

TEST(AutomaticSettingsTest, ZeroMeansTheDocumentedRule) {
  Config config;  // num_threads, num_workers and steps_per_epoch 0; batch 2
  HostShape host;
  host.cores = 16;
  host.local_workers = 4;
  host.training_cases = 100;
  host.world_size = 8;
  AutomaticSettings settings = resolve_automatic_settings(config, host);
  EXPECT_EQ(settings.compute_threads, 4);    // 16 cores / 4 workers
  EXPECT_EQ(settings.loader_threads, 1);     // CPU
  EXPECT_EQ(settings.steps_per_epoch, 6);    // 100 cases / (2 x 8)
  host.cuda = true;
  host.cores = 2;
  host.local_workers = 8;
  host.training_cases = 3;
  settings = resolve_automatic_settings(config, host);
  EXPECT_EQ(settings.compute_threads, 1);    // never 0
  EXPECT_EQ(settings.loader_threads, 4);     // GPU
  EXPECT_EQ(settings.steps_per_epoch, 1);    // never 0
}

TEST(AutomaticSettingsTest, SetValuesAreKept) {
  Config config;
  config.train.num_threads = 3;
  config.data.num_workers = 7;
  config.train.steps_per_epoch = 11;
  const AutomaticSettings settings = resolve_automatic_settings(config, HostShape{});
  EXPECT_EQ(settings.compute_threads, 3);
  EXPECT_EQ(settings.loader_threads, 7);
  EXPECT_EQ(settings.steps_per_epoch, 11);
}

// The schema's help (and the README table made from it) states the same rules.
TEST(AutomaticSettingsTest, HelpTextsStateTheRules) {
  const std::string readme = [] {
    std::ifstream in(std::string(MEDSEG_SOURCE_DIR) + "/README.md");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }();
  EXPECT_NE(readme.find("0 = 4 on a GPU, 1 on the CPU"), std::string::npos);
  EXPECT_NE(readme.find("0 = the host's cores divided among its workers"), std::string::npos);
  EXPECT_NE(readme.find("0 = training cases / (batch size x workers), at least 1"),
            std::string::npos);
}

}  // namespace
}  // namespace medseg
