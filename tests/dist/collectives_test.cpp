// Collectives over two real Gloo ranks: the test re-executes this binary twice through
// run_workers (so the launcher -> worker path is exercised too), each child running the hidden
// test CollectivesWorker.Run, which does nothing unless MEDSEG_TEST_SCENARIO is set.
#include "dist/collectives.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "dist/dist_env.h"
#include "dist/launcher.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

using Clock = std::chrono::steady_clock;

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value == nullptr ? fallback : value;
}

// Runs `scenario` on two worker processes; returns the launcher's result. Each worker writes
// its verdict to <out>/rank<r>.
LaunchResult run_scenario(const std::string& scenario, const std::string& out_dir,
                          int timeout_seconds) {
  LaunchOptions options;
  options.extra_env = {"MEDSEG_TEST_SCENARIO=" + scenario,
                       "MEDSEG_TEST_PORT=" + std::to_string(testing::free_loopback_port()),
                       "MEDSEG_TEST_OUT=" + out_dir,
                       "MEDSEG_TEST_TIMEOUT=" + std::to_string(timeout_seconds)};
  options.heartbeat_timeout_seconds = 120;
  options.kill_grace_seconds = 5;
  return run_workers({"medseg_tests", "--gtest_filter=CollectivesWorker.Run"}, /*nproc=*/2,
                     options);
}

void write_verdict(const std::string& text) {
  std::ofstream(env_or("MEDSEG_TEST_OUT", ".") + "/rank" + env_or("MEDSEG_LOCAL_RANK", "0"))
      << text;
}

double max_difference(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// --- the worker side --------------------------------------------------------------------------

void basic_scenario(Collectives& collectives) {
  const int rank = collectives.rank();
  // Broadcast: every rank starts with different values; afterwards all hold rank 0's. Tiny
  // buckets (64 bytes) force several broadcasts, and the double tensor its own bucket.
  std::vector<at::Tensor> parameters = {
      at::full({3, 4}, 1.0 + rank, at::kFloat), at::full({5}, 10.0 + rank, at::kFloat),
      at::full({2, 3}, 100.0 + rank, at::kDouble), at::full({7}, 1000.0 + rank, at::kFloat)};
  for (auto& parameter : parameters) parameter.requires_grad_(true);
  collectives.broadcast_parameters(parameters, /*bucket_bytes=*/64);
  EXPECT_EQ(max_difference(parameters[0], at::full({3, 4}, 1.0)), 0.0);
  EXPECT_EQ(max_difference(parameters[1], at::full({5}, 10.0)), 0.0);
  EXPECT_EQ(max_difference(parameters[2], at::full({2, 3}, 100.0)), 0.0);
  EXPECT_EQ(max_difference(parameters[3], at::full({7}, 1000.0)), 0.0);

  // Gradients: rank r holds g * (r + 1) + index; the mean over two ranks is g * 1.5 + index.
  // parameters[3] has no gradient (becomes zero); a frozen tensor is left alone.
  for (size_t index = 0; index < 3; ++index) {
    const at::Tensor base = at::arange(parameters[index].numel(), parameters[index].options())
                                .reshape(parameters[index].sizes())
                                .detach();
    parameters[index].mutable_grad() = base * (rank + 1) + static_cast<double>(index) * 0.25;
  }
  at::Tensor frozen = at::ones({4});
  std::vector<at::Tensor> with_frozen = parameters;
  with_frozen.push_back(frozen);
  collectives.allreduce_mean_gradients(with_frozen, /*bucket_bytes=*/32);
  for (size_t index = 0; index < 3; ++index) {
    const at::Tensor base = at::arange(parameters[index].numel(), parameters[index].options())
                                .reshape(parameters[index].sizes())
                                .detach();
    EXPECT_LT(
        max_difference(parameters[index].grad(), base * 1.5 + static_cast<double>(index) * 0.25),
        1e-6)
        << "parameter " << index;
  }
  ASSERT_TRUE(parameters[3].grad().defined());
  EXPECT_EQ(parameters[3].grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(frozen.grad().defined());
  EXPECT_GT(collectives.last_sync_seconds(), 0.0);

  std::vector<double> metrics = {rank + 0.5, 10.0 * rank, 1e-3};
  collectives.allreduce_sum(metrics);
  EXPECT_DOUBLE_EQ(metrics[0], 2.0);
  EXPECT_DOUBLE_EQ(metrics[1], 10.0);
  EXPECT_DOUBLE_EQ(metrics[2], 2e-3);
  collectives.barrier();
  write_verdict(::testing::Test::HasFailure() ? "failed" : "ok");
}

// Rank 1 leaves (exit) or stops answering (stall) after the rendezvous; rank 0 must fail.
void peer_scenario(Collectives& collectives, bool stall, int timeout_seconds) {
  collectives.barrier();  // both ranks are fully connected before rank 1 goes away
  if (collectives.rank() == 1) {
    if (stall) {
      const std::string verdict = env_or("MEDSEG_TEST_OUT", ".") + "/rank0";
      for (int waited = 0; waited < 60 * 10 && !testing::file_exists(verdict); ++waited) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    std::_Exit(0);  // no destructors: like a crash, but an exit code the launcher accepts
  }
  std::vector<at::Tensor> parameters = {at::ones({1000}).requires_grad_(true)};
  parameters[0].mutable_grad() = at::ones({1000});
  const auto start = Clock::now();
  std::string message;
  try {
    collectives.allreduce_mean_gradients(parameters, int64_t{1} << 20);
    collectives.allreduce_mean_gradients(parameters, int64_t{1} << 20);
  } catch (const PlatformError& error) {
    message = error.what();
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_NE(message, "") << "the all-reduce succeeded without a peer";
  EXPECT_NE(message.find("rank 0 of 2"), std::string::npos) << message;
  EXPECT_LT(elapsed, timeout_seconds + 5.0);
  write_verdict("elapsed=" + std::to_string(elapsed) + " " + message);
}

// Gradient sync time for a UNet-sized (4.8M parameter) gradient set.
void bench_scenario(Collectives& collectives) {
  std::vector<at::Tensor> parameters;
  int64_t total = 0;
  for (int64_t numel : {442368, 884736, 1769472, 884736, 442368, 221184, 110592, 55296}) {
    for (int64_t tensor_numel : {numel - 64, int64_t{64}}) {  // a weight and its bias
      parameters.push_back(at::randn({tensor_numel}).requires_grad_(true));
      parameters.back().mutable_grad() = at::randn({tensor_numel});
      total += tensor_numel;
    }
  }
  std::string report = "parameters=" + std::to_string(total);
  for (int64_t bucket_mb : {1, 4, 25}) {
    for (int warmup = 0; warmup < 3; ++warmup) {
      collectives.allreduce_mean_gradients(parameters, bucket_mb << 20);
    }
    constexpr int kSteps = 20;
    double sum = 0;
    for (int step = 0; step < kSteps; ++step) {
      collectives.allreduce_mean_gradients(parameters, bucket_mb << 20);
      sum += collectives.last_sync_seconds();
    }
    report += " bucket_mb=" + std::to_string(bucket_mb) +
              ":ms_per_step=" + std::to_string(1000.0 * sum / kSteps);
  }
  write_verdict(report);
}

TEST(CollectivesWorker, Run) {
  const std::string scenario = env_or("MEDSEG_TEST_SCENARIO", "");
  if (scenario.empty()) return;  // only meaningful as a child of CollectivesTest
  const int timeout_seconds = std::stoi(env_or("MEDSEG_TEST_TIMEOUT", "20"));
  const DistEnv env = resolve_dist_env(ResourceConfig{}, /*nproc_per_node=*/2,
                                       std::stoi(env_or("MEDSEG_TEST_PORT", "0")));
  CollectivesOptions options;
  options.backend = "gloo";
  options.timeout_seconds = timeout_seconds;
  options.dns_retry_seconds = 0;
  Collectives collectives(env, options);
  ASSERT_EQ(collectives.world_size(), 2);
  if (scenario == "basic") basic_scenario(collectives);
  if (scenario == "exit") peer_scenario(collectives, /*stall=*/false, timeout_seconds);
  if (scenario == "stall") peer_scenario(collectives, /*stall=*/true, timeout_seconds);
  if (scenario == "bench") bench_scenario(collectives);
}

// --- the tests --------------------------------------------------------------------------------

TEST(CollectivesTest, TwoGlooRanksBroadcastAverageAndSum) {
  testing::TempDir dir;
  const LaunchResult result = run_scenario("basic", dir.path(), /*timeout_seconds=*/20);
  EXPECT_EQ(result.exit_code, 0) << result.failure;
  EXPECT_EQ(testing::read_text(dir.file("rank0")), "ok");
  EXPECT_EQ(testing::read_text(dir.file("rank1")), "ok");
}

TEST(CollectivesTest, PeerThatExitsMakesTheOtherFail) {
  testing::TempDir dir;
  const LaunchResult result = run_scenario("exit", dir.path(), /*timeout_seconds=*/10);
  EXPECT_EQ(result.exit_code, 0) << result.failure;
  const std::string verdict = testing::read_text(dir.file("rank0"));
  EXPECT_NE(verdict.find("all-reduce of the gradients failed on rank 0 of 2"), std::string::npos)
      << verdict;
  std::printf("rank 0 saw: %s\n", verdict.c_str());
}

TEST(CollectivesTest, StalledPeerTimesOutInsteadOfHanging) {
  testing::TempDir dir;
  const auto start = Clock::now();
  const LaunchResult result = run_scenario("stall", dir.path(), /*timeout_seconds=*/3);
  EXPECT_EQ(result.exit_code, 0) << result.failure;
  const std::string verdict = testing::read_text(dir.file("rank0"));
  EXPECT_NE(verdict.find("failed on rank 0 of 2"), std::string::npos) << verdict;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 20.0);
  std::printf("rank 0 saw: %s\n", verdict.c_str());
}

TEST(CollectivesTest, WorldSizeOneIsANoOp) {
  Collectives collectives(DistEnv{}, CollectivesOptions{});
  EXPECT_EQ(collectives.world_size(), 1);
  std::vector<at::Tensor> parameters = {at::full({3}, 2.0).requires_grad_(true)};
  parameters[0].mutable_grad() = at::full({3}, 4.0);
  collectives.broadcast_parameters(parameters);
  collectives.allreduce_mean_gradients(parameters, int64_t{25} << 20);
  std::vector<double> metrics = {1.5};
  collectives.allreduce_sum(metrics);
  collectives.barrier();
  EXPECT_EQ(max_difference(parameters[0], at::full({3}, 2.0)), 0.0);
  EXPECT_EQ(max_difference(parameters[0].grad(), at::full({3}, 4.0)), 0.0);
  EXPECT_EQ(metrics[0], 1.5);
  EXPECT_EQ(collectives.last_sync_seconds(), 0.0);
}

TEST(CollectivesTest, ResolveBackend) {
  EXPECT_EQ(resolve_backend("auto", /*cuda_available=*/false), "gloo");
  EXPECT_EQ(resolve_backend("gloo", /*cuda_available=*/true), "gloo");
#ifdef USE_C10D_NCCL
  EXPECT_EQ(resolve_backend("auto", true), "nccl");
  EXPECT_EQ(resolve_backend("nccl", true), "nccl");
#else
  EXPECT_THROW(resolve_backend("nccl", false), ClientError);
#endif
  EXPECT_THROW(resolve_backend("mpi", false), ClientError);
}

// An NCCL process group of one rank on one GPU: rendezvous, broadcast, the gradient mean and
// the metric sum go through NCCL and leave the values as they are.
TEST(GpuCollectivesTest, NcclWorldOfOne) {
  MEDSEG_REQUIRE_CUDA_DEVICES(1);
  CollectivesOptions options;
  options.backend = "nccl";
  options.timeout_seconds = 60;
  options.device = c10::Device(c10::kCUDA, 0);
  options.group_for_one_worker = true;
  DistEnv env;
  env.master_port = 29561;
  Collectives collectives(env, options);
  const auto on_gpu = at::TensorOptions().device(options.device);
  std::vector<at::Tensor> parameters = {at::full({1000}, 2.0, on_gpu).requires_grad_(true)};
  parameters[0].mutable_grad() = at::full({1000}, 4.0, on_gpu);
  collectives.broadcast_parameters(parameters);
  collectives.allreduce_mean_gradients(parameters, int64_t{1} << 20);
  std::vector<double> metrics = {1.5, -2.0};
  collectives.allreduce_sum(metrics);
  collectives.barrier();
  EXPECT_EQ(max_difference(parameters[0].cpu(), at::full({1000}, 2.0)), 0.0);
  EXPECT_EQ(max_difference(parameters[0].grad().cpu(), at::full({1000}, 4.0)), 0.0);
  EXPECT_EQ(metrics, (std::vector<double>{1.5, -2.0}));
  EXPECT_GT(collectives.last_sync_seconds(), 0.0);
}

}  // namespace
}  // namespace medseg
