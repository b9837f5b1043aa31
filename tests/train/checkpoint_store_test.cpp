#include "train/checkpoint_store.h"

#include <gtest/gtest.h>
#include <libdeflate.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "test_support.h"
#include "train/optimizer.h"
#include "util/error.h"

namespace medseg {
namespace {
namespace fs = std::filesystem;
using torch::serialize::InputArchive;
using torch::serialize::OutputArchive;

// An archive as the trainer would write it: a tensor and some metadata.
void fill_archive(OutputArchive& archive, const at::Tensor& weights, const std::string& note) {
  archive.write("weights", weights);
  write_string(archive, "note", note);
  write_int64(archive, "epoch", 3);
}

at::Tensor pattern_tensor(int64_t elements) {
  return at::arange(elements, at::kFloat).mul_(0.5f).sin_();
}

// Saves a small archive (a few KB) for `step`.
CheckpointWriteStats save_small(CheckpointStore& store, int64_t step) {
  OutputArchive archive;
  fill_archive(archive, at::full({256}, static_cast<float>(step)), "step " + std::to_string(step));
  return store.save(step, archive);
}

// Loads `info` and checks it holds what save_small wrote for its step.
void expect_small_checkpoint(const CheckpointStore& store, const CheckpointInfo& info) {
  InputArchive archive;
  store.load(info, archive);
  at::Tensor weights;
  archive.read("weights", weights);
  EXPECT_TRUE(at::equal(weights, at::full({256}, static_cast<float>(info.global_step))));
  EXPECT_EQ(read_string(archive, "note"), "step " + std::to_string(info.global_step));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> temporary_files(const std::string& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".checkpoint-", 0) == 0) names.push_back(name);
  }
  return names;
}

std::vector<int64_t> listed_steps(const CheckpointStore& store) {
  std::vector<int64_t> steps;
  for (const CheckpointInfo& info : store.list()) steps.push_back(info.global_step);
  return steps;
}

// A pid that certainly belongs to no running process: a child that has exited and been reaped.
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

TEST(CheckpointStoreTest, SaveAndLoadRoundTripTensorsAndMetadata) {
  testing::TempDir dir;
  CheckpointStore store(dir.file("checkpoints"), /*keep=*/3);  // created by save()
  EXPECT_FALSE(store.newest_complete().has_value());

  const at::Tensor weights = pattern_tensor(1000);
  OutputArchive out;
  fill_archive(out, weights, "resolved config: {lr: 0.001}");
  const CheckpointWriteStats stats = store.save(42, out);
  EXPECT_EQ(stats.path, dir.file("checkpoints/checkpoint-0000000042.ckpt"));
  EXPECT_EQ(stats.bytes, static_cast<int64_t>(fs::file_size(stats.path)));

  const std::optional<CheckpointInfo> newest = store.newest_complete();
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->path, stats.path);
  EXPECT_EQ(newest->global_step, 42);
  EXPECT_EQ(newest->bytes, stats.bytes);

  InputArchive in;
  store.load(*newest, in);
  at::Tensor loaded;
  in.read("weights", loaded);
  EXPECT_TRUE(at::equal(loaded, weights));
  EXPECT_EQ(read_string(in, "note"), "resolved config: {lr: 0.001}");
  EXPECT_EQ(read_int64(in, "epoch"), 3);
  try {
    read_string(in, "config_fingerprint");
    FAIL() << "a missing key must be a ClientError";
  } catch (const ClientError& error) {
    EXPECT_NE(std::string(error.what()).find("'config_fingerprint'"), std::string::npos);
  }
  EXPECT_THROW(read_string(in, "epoch"), ClientError);  // an int, not a string
  EXPECT_THROW(read_int64(in, "note"), ClientError);
  EXPECT_TRUE(temporary_files(store.directory()).empty());
}

TEST(CheckpointStoreTest, StepsOrderNumericallyThroughZeroPadding) {
  EXPECT_EQ(CheckpointStore::file_name(9), "checkpoint-0000000009.ckpt");
  EXPECT_EQ(CheckpointStore::file_name(12345678901), "checkpoint-12345678901.ckpt");
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/10);
  for (int64_t step : {10, 9, 100, 99}) save_small(store, step);
  EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{9, 10, 99, 100}));
  EXPECT_EQ(store.newest_complete()->global_step, 100);
  // Files that are not canonical checkpoint names are ignored, whatever they hold.
  fs::copy_file(dir.file("checkpoint-0000000100.ckpt"), dir.file("checkpoint-7.ckpt"));
  fs::copy_file(dir.file("checkpoint-0000000100.ckpt"), dir.file("checkpoint-0000000100.ckpt.bak"));
  EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{9, 10, 99, 100}));
}

TEST(CheckpointStoreTest, KeepsTheNewestKAfterEachSave) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/2);
  for (int64_t step = 1; step <= 5; ++step) {
    save_small(store, step * 10);
    EXPECT_EQ(store.list().size(), std::min<size_t>(step, 2));
  }
  EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{40, 50}));
  for (const CheckpointInfo& info : store.list()) expect_small_checkpoint(store, info);

  CheckpointStore keep_one(dir.path(), /*keep=*/1);
  save_small(keep_one, 60);
  EXPECT_EQ(listed_steps(keep_one), (std::vector<int64_t>{60}));
}

TEST(CheckpointStoreTest, PruningNeverTouchesNewerCheckpointsAndDropsBrokenOlderOnes) {
  testing::TempDir dir;
  {
    CheckpointStore keep_all(dir.path(), /*keep=*/10);
    save_small(keep_all, 10);
    save_small(keep_all, 20);
    save_small(keep_all, 90);  // e.g. left by a run whose config differs
  }
  fs::resize_file(dir.file("checkpoint-0000000020.ckpt"), 100);  // broken
  // Resuming from 10 and saving 30 with keep=2: 90 is newer and stays; 20 is broken and goes;
  // 10 is the newest complete older one and is kept.
  CheckpointStore store(dir.path(), /*keep=*/2);
  save_small(store, 30);
  EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{10, 30, 90}));
  EXPECT_FALSE(fs::exists(dir.file("checkpoint-0000000020.ckpt")));
}

TEST(CheckpointStoreTest, TruncatedCheckpointsAreSkippedAndRefused) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/5);
  save_small(store, 1);
  const CheckpointWriteStats newest = save_small(store, 2);
  const std::string original = read_bytes(newest.path);
  const size_t size = original.size();
  for (size_t cut :
       {size_t{0}, size_t{7}, size_t{31}, size_t{32}, size / 2, size - 17, size - 16, size - 1}) {
    SCOPED_TRACE("cut at " + std::to_string(cut) + " of " + std::to_string(size));
    testing::write_text(newest.path, original.substr(0, cut));
    const std::optional<CheckpointInfo> found = store.newest_complete();
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->global_step, 1);
    expect_small_checkpoint(store, *found);
    EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{1}));
    InputArchive archive;
    EXPECT_THROW(store.load({newest.path, 2, static_cast<int64_t>(cut)}, archive), ClientError);
  }
  testing::write_text(newest.path, original + "extra");
  EXPECT_EQ(store.newest_complete()->global_step, 1);
  testing::write_text(newest.path, original);
  EXPECT_EQ(store.newest_complete()->global_step, 2);
}

TEST(CheckpointStoreTest, FlippedBytesFailTheChecks) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/5);
  save_small(store, 1);
  const CheckpointWriteStats newest = save_small(store, 2);
  const std::string original = read_bytes(newest.path);
  // Magic, version, CRC, length, step, payload (first, middle, last byte), end marker.
  for (size_t offset :
       {size_t{0}, size_t{8}, size_t{12}, size_t{16}, size_t{24}, size_t{32}, original.size() / 2,
        original.size() - 17, original.size() - 16, original.size() - 1}) {
    SCOPED_TRACE("byte " + std::to_string(offset));
    std::string damaged = original;
    damaged[offset] = static_cast<char>(damaged[offset] ^ 0x10);
    testing::write_text(newest.path, damaged);
    EXPECT_EQ(store.newest_complete()->global_step, 1);
    InputArchive archive;
    EXPECT_THROW(store.load({newest.path, 2, 0}, archive), ClientError);
  }
  std::string damaged = original;
  damaged[original.size() / 2] ^= 0x01;
  testing::write_text(newest.path, damaged);
  InputArchive archive;
  try {
    store.load({newest.path, 2, 0}, archive);
    FAIL() << "a corrupt payload must be refused";
  } catch (const ClientError& error) {
    EXPECT_NE(std::string(error.what()).find("CRC mismatch"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(newest.path), std::string::npos) << error.what();
  }
}

TEST(CheckpointStoreTest, IntactFileWithoutALibTorchArchiveIsAClientError) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/1);
  const std::string payload = "this is not a zip archive";
  std::string header(32, '\0');
  std::memcpy(header.data(), "MEDSEGCK", 8);
  auto put = [](std::string& out, size_t offset, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
  };
  put(header, 8, 1, 4);
  put(header, 12, libdeflate_crc32(0, payload.data(), payload.size()), 4);
  put(header, 16, payload.size(), 8);
  put(header, 24, 3, 8);
  std::string trailer = "CKPTDONE" + std::string(8, '\0');
  put(trailer, 8, payload.size(), 8);
  testing::write_text(dir.file("checkpoint-0000000003.ckpt"), header + payload + trailer);
  const std::optional<CheckpointInfo> found = store.newest_complete();  // the format checks pass
  ASSERT_TRUE(found.has_value());
  InputArchive archive;
  try {
    store.load(*found, archive);
    FAIL() << "a payload that is not a LibTorch archive must be refused";
  } catch (const ClientError& error) {
    EXPECT_NE(std::string(error.what()).find("checkpoint-0000000003.ckpt"), std::string::npos);
  }
  EXPECT_THROW(store.load({dir.file("model.pth"), 3, 0}, archive), ClientError);
  EXPECT_THROW(CheckpointStore(dir.path(), /*keep=*/0), InternalError);
}

// Found by fuzz/fuzz_checkpoint: an intact checkpoint whose archive's code names a type that
// does not exist made LibTorch throw torch::jit::ErrorReport (not a c10::Error), which escaped as
// an InternalError (exit 4). It is a ClientError naming the file and the cause in one line.
TEST(CheckpointStoreTest, AnArchiveNamingAnUnknownTypeIsAClientError) {
  testing::TempDir dir;
  std::filesystem::copy_file(
      std::string(MEDSEG_SOURCE_DIR) + "/tests/data/fuzz_findings/checkpoint-unknown-type.ckpt",
      dir.file("checkpoint-0000000001.ckpt"));
  const CheckpointStore store(dir.path(), /*keep=*/1);
  const std::optional<CheckpointInfo> found = store.newest_complete();
  ASSERT_TRUE(found.has_value());
  InputArchive archive;
  try {
    store.load(*found, archive);
    FAIL() << "the archive must be refused";
  } catch (const ClientError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("checkpoint-0000000001.ckpt does not hold a readable LibTorch archive: "
                           "Unknown type name"),
              std::string::npos)
        << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(CheckpointStoreTest, TemporaryFilesAreNeverTrustedAndRemovedOnceTheirWriterIsGone) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/5);
  const CheckpointWriteStats first = save_small(store, 1);
  // A complete-looking copy under a temporary name must still not count as a checkpoint.
  const std::string stray =
      dir.file(".checkpoint-0000000005.ckpt.tmp-" + std::to_string(dead_pid()));
  const std::string live = dir.file(".checkpoint-0000000006.ckpt.tmp-" + std::to_string(getppid()));
  fs::copy_file(first.path, stray);
  fs::copy_file(first.path, live);
  const std::optional<CheckpointInfo> found = store.newest_complete();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->global_step, 1);
  EXPECT_FALSE(fs::exists(stray));
  EXPECT_TRUE(fs::exists(live));  // its writer (a running process) may still be at work
  EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{1}));
}

TEST(CheckpointStoreTest, CheckpointDirectoryThatIsAFileIsAPlatformError) {
  testing::TempDir dir;
  testing::write_text(dir.file("checkpoints"), "not a directory");
  CheckpointStore store(dir.file("checkpoints"), /*keep=*/2);
  try {
    save_small(store, 1);
    FAIL() << "saving into a file must fail";
  } catch (const PlatformError& error) {
    EXPECT_NE(std::string(error.what()).find(dir.file("checkpoints")), std::string::npos);
  }
  EXPECT_THROW(store.newest_complete(), PlatformError);
  EXPECT_EQ(testing::read_text(dir.file("checkpoints")), "not a directory");
}

TEST(CheckpointStoreTest, FailedRenameLeavesEarlierCheckpointsAndNoTemporaryFile) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/1);
  save_small(store, 1);
  // A non-empty directory where the new checkpoint should go makes rename() fail, even as root.
  testing::write_text(dir.file("checkpoint-0000000002.ckpt/blocker"), "x");
  try {
    save_small(store, 2);
    FAIL() << "the rename must fail";
  } catch (const PlatformError& error) {
    EXPECT_NE(std::string(error.what()).find("checkpoint-0000000002.ckpt"), std::string::npos);
  }
  EXPECT_TRUE(temporary_files(dir.path()).empty());
  EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{1}));  // nothing pruned
  expect_small_checkpoint(store, *store.newest_complete());
}

// Runs `body` in a forked child and returns its exit code (the child never returns to gtest).
// The child only serialises archives built by the parent; it starts no LibTorch computation.
template <typename Body>
int run_in_child(Body body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 100;
    try {
      code = body();
    } catch (...) {
      code = 101;
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

// A full disk (ENOSPC) and a file size limit (EFBIG) take the same path through the writer; the
// size limit can be imposed on one process, as root, without a special file system.
TEST(CheckpointStoreTest, FullDiskKeepsThePreviousCheckpointValid) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/1);
  save_small(store, 1);
  OutputArchive big;
  fill_archive(big, pattern_tensor(1 << 20), "four megabytes");
  int64_t full_size = 0;
  {
    testing::TempDir scratch;
    CheckpointStore measure(scratch.path(), 1);
    full_size = measure.save(2, big).bytes;
  }
  const std::string target = dir.file("checkpoint-0000000002.ckpt");
  for (int64_t limit :
       {int64_t{1}, int64_t{40}, int64_t{4096}, full_size / 2, full_size - 16, full_size - 1}) {
    SCOPED_TRACE("file size limit " + std::to_string(limit) + " of " + std::to_string(full_size));
    const int code = run_in_child([&] {
      ::signal(SIGXFSZ, SIG_IGN);
      const rlimit limits{static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
      if (::setrlimit(RLIMIT_FSIZE, &limits) != 0) return 90;
      try {
        store.save(2, big);
        return 1;
      } catch (const PlatformError& error) {
        const std::string message = error.what();
        if (message.find(target) == std::string::npos) return 3;
        if (message.find("File too large") == std::string::npos) return 4;
        return 0;
      }
    });
    ASSERT_EQ(code, 0) << "0: PlatformError naming the checkpoint and EFBIG";
    EXPECT_TRUE(temporary_files(dir.path()).empty());
    EXPECT_FALSE(fs::exists(target));
    const std::optional<CheckpointInfo> found = store.newest_complete();
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->global_step, 1);
    expect_small_checkpoint(store, *found);
  }
  // Without the limit the same save succeeds and prunes step 1.
  store.save(2, big);
  EXPECT_EQ(listed_steps(store), (std::vector<int64_t>{2}));
}

// SIGKILL at random moments of a writer that saves continuously (write, fsync, rename, prune):
// whatever moment the kill hits, the newest complete checkpoint loads and holds what was saved.
TEST(CheckpointStoreTest, SigkillDuringSavesNeverLeavesAPartialCheckpoint) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/2);
  const at::Tensor weights = pattern_tensor(2 << 20);  // 8 MB: most of a save is writing
  OutputArchive archive;
  fill_archive(archive, weights, "kill test");
  store.save(0, archive);

  std::mt19937 random(20240607);
  std::uniform_int_distribution<int> delay_ms(5, 120);
  int64_t newest_step = 0;
  int kills_with_a_temporary_file = 0;
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int64_t first_step = newest_step + 1;
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (int64_t step = first_step;; ++step) {
        try {
          store.save(step, archive);
        } catch (...) {
          ::_exit(1);
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(random)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer failed before the kill";
    if (!temporary_files(dir.path()).empty()) ++kills_with_a_temporary_file;

    const std::optional<CheckpointInfo> found = store.newest_complete();
    ASSERT_TRUE(found.has_value());
    EXPECT_GE(found->global_step, newest_step);
    newest_step = found->global_step;
    EXPECT_TRUE(temporary_files(dir.path()).empty());
    // Every file under a checkpoint name is whole: kills only ever leave temporary files behind.
    for (const CheckpointInfo& info : store.list()) {
      InputArchive in;
      ASSERT_NO_THROW(store.load(info, in)) << info.path;
      at::Tensor loaded;
      in.read("weights", loaded);
      EXPECT_TRUE(at::equal(loaded, weights)) << info.path;
    }
    size_t checkpoint_files = 0;
    for (const auto& entry : fs::directory_iterator(dir.path())) {
      if (entry.path().extension() == ".ckpt") ++checkpoint_files;
    }
    EXPECT_EQ(checkpoint_files, store.list().size());
  }
  std::printf("[          ] %d of 10 kills hit a save in progress; newest step %lld\n",
              kills_with_a_temporary_file, static_cast<long long>(newest_step));
  EXPECT_GT(newest_step, 0);
  EXPECT_GE(kills_with_a_temporary_file, 1);
}

// The trainer's case: model parameters and Adam's state in one archive, the optimizer nested as a
// sub-archive. After the round trip one more step keeps original and restored bit-identical.
TEST(CheckpointStoreTest, ModelAndAdamStateRoundTripBitForBit) {
  torch::manual_seed(7);
  auto make_model = [] {
    return torch::nn::Sequential(torch::nn::Linear(6, 16), torch::nn::ReLU(),
                                 torch::nn::Linear(16, 3));
  };
  const at::Tensor inputs = torch::randn({32, 6});
  const at::Tensor targets = torch::randn({32, 3});
  const auto adam_options = torch::optim::AdamOptions(1e-2).betas({0.9, 0.99}).weight_decay(1e-4);
  auto step = [&](torch::nn::Sequential& model, torch::optim::Adam& adam) {
    adam.zero_grad();
    torch::nn::functional::mse_loss(model->forward(inputs), targets).backward();
    adam.step();
  };

  torch::nn::Sequential model = make_model();
  torch::optim::Adam adam(model->parameters(), adam_options);
  step(model, adam);
  step(model, adam);

  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/2);
  {
    OutputArchive archive;
    for (const auto& parameter : model->named_parameters()) {
      archive.write("model/" + parameter.key(), parameter.value());
    }
    OutputArchive optimizer_archive;
    adam.save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    store.save(2, archive);
  }

  torch::manual_seed(99);  // a different initialisation, overwritten by the load
  torch::nn::Sequential restored = make_model();
  // load_optimizer_state restores the moments and step counts but keeps the options the
  // optimiser was built with (lr, betas, weight decay: the configuration), which LibTorch 2.x's
  // Optimizer::load alone would replace with the checkpoint's.
  torch::optim::Adam restored_adam(restored->parameters(), adam_options);
  torch::optim::Adam other_options_adam(restored->parameters(), torch::optim::AdamOptions(1.0));
  {
    InputArchive archive;
    store.load(*store.newest_complete(), archive);
    torch::NoGradGuard no_grad;
    for (auto& parameter : restored->named_parameters()) {
      at::Tensor saved;
      archive.read("model/" + parameter.key(), saved);
      parameter.value().copy_(saved);
    }
    InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    load_optimizer_state(restored_adam, optimizer_archive);
    load_optimizer_state(other_options_adam, optimizer_archive);
  }
  EXPECT_DOUBLE_EQ(
      static_cast<const torch::optim::AdamOptions&>(other_options_adam.param_groups()[0].options())
          .lr(),
      1.0);

  // Without Adam's moments (a fresh optimizer) the next step would differ: the test can tell.
  torch::nn::Sequential fresh = make_model();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < fresh->parameters().size(); ++i) {
      fresh->parameters()[i].copy_(model->parameters()[i]);
    }
  }
  torch::optim::Adam fresh_adam(fresh->parameters(), adam_options);

  step(model, adam);
  step(restored, restored_adam);
  step(fresh, fresh_adam);
  const auto original_parameters = model->parameters();
  const auto restored_parameters = restored->parameters();
  const auto fresh_parameters = fresh->parameters();
  ASSERT_EQ(original_parameters.size(), restored_parameters.size());
  bool fresh_differs = false;
  for (size_t i = 0; i < original_parameters.size(); ++i) {
    EXPECT_TRUE(at::equal(original_parameters[i], restored_parameters[i])) << "parameter " << i;
    fresh_differs = fresh_differs || !at::equal(original_parameters[i], fresh_parameters[i]);
  }
  EXPECT_TRUE(fresh_differs);
}

// Not a correctness test: measures a ~60 MB checkpoint's write and read (printed, not asserted).
TEST(CheckpointStoreTest, SixtyMegabyteCheckpointRoundTrips) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), /*keep=*/1);
  const at::Tensor weights = pattern_tensor(15 << 20);  // 60 MiB of float32
  OutputArchive archive;
  fill_archive(archive, weights, "throughput");
  const CheckpointWriteStats stats = store.save(1, archive);
  const auto start = std::chrono::steady_clock::now();
  const std::optional<CheckpointInfo> found = store.newest_complete();
  ASSERT_TRUE(found.has_value());
  const double validate_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  InputArchive in;
  store.load(*found, in);
  at::Tensor loaded;
  in.read("weights", loaded);
  const double total_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(at::equal(loaded, weights));
  const double megabytes = static_cast<double>(stats.bytes) / 1e6;
  std::printf(
      "[          ] %.1f MB: save %.3f s (%.0f MB/s); find+validate %.3f s; "
      "find+validate+load %.3f s (%.0f MB/s)\n",
      megabytes, stats.seconds, megabytes / stats.seconds, validate_seconds, total_seconds,
      megabytes / total_seconds);
}

}  // namespace
}  // namespace medseg
