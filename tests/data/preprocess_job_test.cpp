#include "data/preprocess_job.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/case_discovery.h"
#include "data/case_store.h"
#include "data/synthetic_cases.h"
#include "io/medseg_record.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

std::string make_cases(const testing::TempDir& dir, int cases) {
  SynthOptions synth;
  synth.out_dir = dir.file("nifti");
  synth.cases = cases;
  synth.shape = {40, 36, 30};
  write_synthetic_dataset(synth);
  return synth.out_dir;
}

PreprocessJobOptions job_for(const std::string& input, const std::string& output) {
  PreprocessJobOptions options;
  options.input_dir = input;
  options.output_dir = output;
  options.image_dtype = ImageDType::kFloat32;
  return options;
}

TEST(PreprocessJobTest, RecordsHoldExactlyWhatTrainingWouldComputeWhateverTheThreads) {
  testing::TempDir dir;
  const std::string input = make_cases(dir, 3);
  PreprocessJobOptions one = job_for(input, dir.file("one"));
  one.threads = 1;
  PreprocessJobOptions three = job_for(input, dir.file("three"));
  three.threads = 3;
  run_preprocess_job(one);
  run_preprocess_job(three);
  const MappedRecordReader a(dir.file("one"));
  const MappedRecordReader b(dir.file("three"));
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  const DatasetIndex index = discover_dataset(input, "auto", true);
  CaseLoadOptions load;
  for (size_t i = 0; i < 3; ++i) {
    const CaseData from_a = a.read(i);
    EXPECT_EQ(from_a.image, b.read(i).image);
    const CaseData direct = load_case(index.cases[i], load);
    EXPECT_EQ(from_a.case_id, direct.case_id);
    EXPECT_EQ(from_a.image, direct.image);
    EXPECT_EQ(from_a.label, direct.label);
    EXPECT_EQ(from_a.spatial_shape, direct.spatial_shape);
    EXPECT_EQ(from_a.original.spatial_shape, (std::array<int64_t, 3>{40, 36, 30}));
  }
}

TEST(PreprocessJobTest, HostsSplitTheCasesBetweenThem) {
  testing::TempDir dir;
  const std::string input = make_cases(dir, 5);
  std::vector<std::string> seen;
  for (int host = 0; host < 2; ++host) {
    PreprocessJobOptions options = job_for(input, dir.file("out"));
    options.host_rank = host;
    options.host_count = 2;
    options.host_name = "algo-" + std::to_string(host + 1);
    const PreprocessSummary summary = run_preprocess_job(options);
    EXPECT_EQ(summary.cases_written, host == 0 ? 3 : 2);
  }
  const MappedRecordReader all(dir.file("out"));  // both hosts' shards, merged as in S3
  ASSERT_EQ(all.size(), 5u);
  for (size_t i = 0; i < all.size(); ++i) seen.push_back(all.read(i).case_id);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{"BRATS_001", "BRATS_002", "BRATS_003", "BRATS_004",
                                            "BRATS_005"}));
  EXPECT_TRUE(testing::file_exists(dir.file("out/preprocess-summary-algo-2.json")));
}

TEST(PreprocessJobTest, NiftiFormatWritesTheTransformedGrid) {
  testing::TempDir dir;
  const std::string input = make_cases(dir, 1);
  PreprocessJobOptions options = job_for(input, dir.file("out"));
  options.format = "nifti";
  run_preprocess_job(options);
  const NiftiVolume image = read_nifti(dir.file("out/BRATS_001_image.nii.gz"));
  const NiftiVolume label = read_nifti(dir.file("out/BRATS_001_label.nii.gz"));
  // 40x36x30 at 1 mm -> pixdim 1.5, 1.5, 2: MONAI's np.round(extent + 1), half to even:
  // round(39/1.5 + 1) = 27, round(35/1.5 + 1) = 24, round(29/2 + 1) = round(15.5) = 16.
  EXPECT_EQ(image.dim, (std::array<int64_t, 4>{27, 24, 16, 4}));
  EXPECT_EQ(label.dim, (std::array<int64_t, 4>{27, 24, 16, 3}));
  EXPECT_NEAR(std::fabs(image.affine[0][0]), 1.5, 1e-6);
  EXPECT_GT(image.affine[0][0], 0.0);  // RAS after Orientation
}

TEST(PreprocessJobTest, CorruptCaseNamesTheFile) {
  testing::TempDir dir;
  const std::string input = make_cases(dir, 2);
  const std::string victim = input + "/imagesTr/BRATS_002.nii.gz";
  const std::string bytes = testing::read_text(victim);
  testing::write_text(victim, bytes.substr(0, bytes.size() / 2));
  try {
    run_preprocess_job(job_for(input, dir.file("out")));
    FAIL() << "expected a ClientError";
  } catch (const ClientError& error) {
    EXPECT_NE(std::string(error.what()).find(victim), std::string::npos) << error.what();
  }
  // No partial shard is left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("out"))) {
    EXPECT_NE(entry.path().extension(), ".medrec") << entry.path();
  }
}

TEST(PreprocessJobTest, NonFiniteVoxelsAreRefusedNamingTheFile) {
  testing::TempDir dir;
  const std::string input = make_cases(dir, 1);
  const std::string image_file = input + "/imagesTr/BRATS_001.nii.gz";
  NiftiVolume image = read_nifti(image_file);
  image.data[image.data.size() - 1] = std::nanf("");
  write_nifti(image_file, image, NiftiDataType::kFloat32);
  try {
    run_preprocess_job(job_for(input, dir.file("out")));
    FAIL() << "expected a ClientError";
  } catch (const ClientError& error) {
    EXPECT_NE(std::string(error.what()).find(image_file + ": case BRATS_001 has a non-finite"),
              std::string::npos)
        << error.what();
  }
}

// StopProcessingJob sends SIGTERM: the job finishes the case in hand, closes its shard and exits
// 0 within seconds; every shard it leaves is whole and there is no temporary file.
TEST(PreprocessJobTest, SigtermStopsWithWholeShardsOnly) {
  testing::TempDir dir;
  SynthOptions synth;
  synth.out_dir = dir.file("input");
  synth.cases = 40;
  synth.shape = {96, 96, 64};
  write_synthetic_dataset(synth);
  const pid_t child = ::fork();
  if (child == 0) {
    const int fd = ::open(dir.file("log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(MEDSEG_BINARY, MEDSEG_BINARY, "preprocess", "--input", dir.file("input").c_str(),
            "--output", dir.file("output").c_str(), "--threads", "1", "--set", "preprocess.shard_mb=1",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Once a few cases are written, stop it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (testing::read_text(dir.file("log")).find("BRATS_004") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto stopped = std::chrono::steady_clock::now();
  ::kill(child, SIGTERM);
  int status = 0;
  ::waitpid(child, &status, 0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  const std::string log = testing::read_text(dir.file("log"));
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 0) << log;
  EXPECT_LT(seconds, 10.0);
  EXPECT_NE(log.find("stop requested"), std::string::npos) << log;
  const nlohmann::json summary =
      nlohmann::json::parse(testing::read_text(dir.file("output/preprocess-summary-algo-1.json")));
  EXPECT_TRUE(summary["stopped"].get<bool>());
  const int64_t written = summary["cases_written"].get<int64_t>();
  EXPECT_GT(written, 0);
  EXPECT_LT(written, 40);
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("output"))) {
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
  }
  const MappedRecordReader reader(dir.file("output"));
  EXPECT_EQ(static_cast<int64_t>(reader.size()), written);
  for (size_t i = 0; i < reader.size(); ++i) EXPECT_NO_THROW(reader.read(i));
}

}  // namespace
}  // namespace medseg
