#include "dist/launcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "test_support.h"

namespace medseg {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs `script` with /bin/sh as each of `nproc` workers; $OUT is `out_dir`.
LaunchResult run_script(const std::string& script, int nproc, const std::string& out_dir,
                        LaunchOptions options = {}) {
  options.executable = "/bin/sh";
  options.extra_env.push_back("OUT=" + out_dir);
  if (options.kill_grace_seconds == LaunchOptions{}.kill_grace_seconds) {
    options.kill_grace_seconds = 5;
  }
  return run_workers({"sh", "-c", script}, nproc, options);
}

std::string trimmed(const std::string& text) {
  std::string result = text;
  while (!result.empty() && (result.back() == '\n' || result.back() == ' ')) result.pop_back();
  return result;
}

TEST(LauncherTest, AllWorkersExitZero) {
  testing::TempDir dir;
  LaunchOptions options;
  options.extra_env = {"MEDSEG_TEST_EXTRA=yes"};
  const LaunchResult result =
      run_script(R"(test "$MEDSEG_WORKER" = 1 && test -f "$MEDSEG_HEARTBEAT_FILE" && )"
                 R"(echo "$MEDSEG_LOCAL_RANK $MEDSEG_TEST_EXTRA" > "$OUT/rank$MEDSEG_LOCAL_RANK")",
                 2, dir.path(), options);
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.failure, "");
  EXPECT_EQ(result.forwarded_signal, 0);
  EXPECT_EQ(trimmed(testing::read_text(dir.file("rank0"))), "0 yes");
  EXPECT_EQ(trimmed(testing::read_text(dir.file("rank1"))), "1 yes");
}

TEST(LauncherTest, FailingWorkerStopsTheOthers) {
  testing::TempDir dir;
  const auto start = Clock::now();
  const LaunchResult result = run_script(
      R"(if [ "$MEDSEG_LOCAL_RANK" = 1 ]; then sleep 0.3; exit 3; fi
         trap 'echo stopped > "$OUT/stopped"; exit 0' TERM
         while :; do sleep 0.1; done)",
      2, dir.path());
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_NE(result.failure.find("rank 1 exited with code 3"), std::string::npos) << result.failure;
  EXPECT_EQ(trimmed(testing::read_text(dir.file("stopped"))), "stopped");
  EXPECT_LT(seconds_since(start), 5.0);
}

TEST(LauncherTest, FirstRankNamesTheGlobalRank) {
  testing::TempDir dir;
  LaunchOptions options;
  options.first_rank = 4;  // node 1 of a 2-process-per-node job
  const LaunchResult result = run_script(
      R"(if [ "$MEDSEG_LOCAL_RANK" = 0 ]; then exit 2; fi; exec sleep 30)", 2, dir.path(), options);
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.failure.find("rank 4 exited with code 2"), std::string::npos) << result.failure;
}

TEST(LauncherTest, KilledWorkerIsReportedWithItsSignal) {
  testing::TempDir dir;
  const LaunchResult result = run_script(
      R"(if [ "$MEDSEG_LOCAL_RANK" = 0 ]; then kill -KILL $$; fi; exec sleep 30)", 2, dir.path());
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_NE(result.failure.find("rank 0 was killed by SIGKILL"), std::string::npos)
      << result.failure;
}

TEST(LauncherTest, HungWorkerIsDetectedByItsHeartbeat) {
  testing::TempDir dir;
  LaunchOptions options;
  options.heartbeat_timeout_seconds = 2;
  options.kill_grace_seconds = 1;
  const auto start = Clock::now();
  // Rank 0 beats every 0.2 s; rank 1 never does (and ignores SIGTERM, so SIGKILL is needed).
  const LaunchResult result = run_script(
      R"(if [ "$MEDSEG_LOCAL_RANK" = 1 ]; then trap '' TERM; while :; do sleep 0.1; done; fi
         while :; do touch "$MEDSEG_HEARTBEAT_FILE"; sleep 0.2; done)",
      2, dir.path(), options);
  const double elapsed = seconds_since(start);
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_NE(result.failure.find("rank 1 sent no heartbeat"), std::string::npos) << result.failure;
  EXPECT_GE(elapsed, 2.0);
  EXPECT_LT(elapsed, 8.0);
}

TEST(LauncherTest, SigtermIsForwardedToEveryWorker) {
  testing::TempDir dir;
  std::thread stopper([&dir] {
    // Wait until both workers have installed their trap, then stop "the job" like SageMaker.
    for (int attempt = 0; attempt < 200; ++attempt) {
      if (testing::file_exists(dir.file("ready0")) && testing::file_exists(dir.file("ready1"))) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ::kill(::getpid(), SIGTERM);
  });
  const LaunchResult result = run_script(
      R"(trap 'echo TERM > "$OUT/got$MEDSEG_LOCAL_RANK"; exit 0' TERM
         touch "$OUT/ready$MEDSEG_LOCAL_RANK"
         while :; do sleep 0.1; done)",
      2, dir.path());
  stopper.join();
  EXPECT_EQ(result.exit_code, 0) << result.failure;
  EXPECT_EQ(result.failure, "");
  EXPECT_EQ(result.forwarded_signal, SIGTERM);
  EXPECT_EQ(trimmed(testing::read_text(dir.file("got0"))), "TERM");
  EXPECT_EQ(trimmed(testing::read_text(dir.file("got1"))), "TERM");
}

TEST(LauncherTest, CurrentCommandLineIsThisProcesssArgv) {
  const std::vector<std::string> argv = current_command_line();
  ASSERT_FALSE(argv.empty());
  EXPECT_NE(argv.front().find("medseg_tests"), std::string::npos) << argv.front();
}

TEST(LauncherTest, MissingExecutableIsReported) {
  LaunchOptions options;
  options.executable = "/nonexistent/medseg";
  const LaunchResult result = run_workers({"medseg"}, 1, options);
  EXPECT_EQ(result.exit_code, 127);
  EXPECT_NE(result.failure.find("rank 0 exited with code 127"), std::string::npos)
      << result.failure;
}

TEST(LauncherTest, HeartbeatTouchesItsFile) {
  testing::TempDir dir;
  const std::string path = dir.file("heartbeat");
  testing::write_text(path, "");
  struct timespec old_times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old_times, 0), 0);
  Heartbeat heartbeat(path);
  EXPECT_TRUE(heartbeat.active());
  heartbeat.beat();
  struct stat status {};
  ASSERT_EQ(::stat(path.c_str(), &status), 0);
  EXPECT_GT(status.st_mtim.tv_sec, 1000);

  EXPECT_FALSE(Heartbeat("").active());
  Heartbeat("").beat();  // inactive: no effect, no error
}

}  // namespace
}  // namespace medseg
