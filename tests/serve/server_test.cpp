// `medseg serve` as SageMaker hosting drives it: the real binary on loopback, a real HTTP client.
#include "serve/server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>
#include <vector>

#include "infer/infer_fixtures.h"
#include "test_support.h"

namespace medseg {
namespace {

using Clock = std::chrono::steady_clock;

// A `medseg serve` child on a free loopback port, stopped with SIGTERM at the end.
class ServerProcess {
 public:
  ServerProcess(const std::string& ml_root, const std::vector<std::string>& env = {})
      : port_(testing::free_loopback_port()), log_(ml_root + "/serve.log") {
    pid_ = ::fork();
    if (pid_ == 0) {
      for (const std::string& entry : env) ::putenv(const_cast<char*>(entry.c_str()));
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const std::string port = std::to_string(port_);
      ::execl(MEDSEG_BINARY, MEDSEG_BINARY, "serve", "--ml-root", ml_root.c_str(), "--port",
              port.c_str(), "--device", "cpu", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) stop();
  }

  // SIGTERM; the exit code.
  int stop() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  httplib::Client client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(120, 0);
    return client;
  }

  // Polls /ping until it answers `status` (or 60 s pass); returns the last status seen.
  int wait_for_ping(int status) const {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    int last = -1;
    while (Clock::now() < deadline) {
      if (auto response = client().Get("/ping")) {
        last = response->status;
        if (last == status) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return last;
  }

  std::string log() const { return testing::read_text(log_); }

 private:
  int port_;
  std::string log_;
  pid_t pid_ = -1;
};

// An ML root whose model folder holds a tiny trained-shape model, and a 4-modality case.
struct Endpoint {
  testing::TempDir dir;
  std::string root = dir.file("ml");
  std::string image = dir.file("BRATS_900.nii.gz");
  Endpoint() {
    testing::make_ml_root(root, "{}");
    testing::write_tiny_model(root + "/model", testing::tiny_model_config());
    const SyntheticCase generated = testing::oblique_case({30, 26, 20}, 2, 0);
    write_nifti(image, generated.image, NiftiDataType::kFloat32);
  }
};

TEST(ServeTest, InvocationsAnswerWhatInferWrites) {
  Endpoint endpoint;
  const testing::CommandResult infer =
      testing::run_medseg({"infer", "--model", endpoint.root + "/model", "--input", endpoint.image,
                           "--output", endpoint.dir.file("infer"), "--device", "cpu"});
  ASSERT_EQ(infer.exit_code, 0) << infer.output;
  const std::string expected = testing::read_text(endpoint.dir.file("infer/BRATS_900.nii.gz"));
  ASSERT_EQ(
      testing::run_medseg({"infer", "--model", endpoint.root + "/model", "--input", endpoint.image,
                           "--output", endpoint.dir.file("infer-probabilities"), "--probabilities",
                           "--device", "cpu"})
          .exit_code,
      0);

  ServerProcess server(endpoint.root);
  ASSERT_EQ(server.wait_for_ping(200), 200) << server.log();
  const std::string body = testing::read_text(endpoint.image);
  auto response = server.client().Post("/invocations", body, "application/x-nifti");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(response->get_header_value("Content-Type"), "application/x-nifti");
  EXPECT_TRUE(response->body == expected) << "serve's label map differs from infer's";

  // The same image uncompressed (told apart by content), summarised as JSON.
  const NiftiVolume image = read_nifti(endpoint.image);
  write_nifti(endpoint.dir.file("plain.nii"), image, NiftiDataType::kFloat32);
  httplib::Headers accept_json = {{"Accept", "application/json"}};
  response = server.client().Post("/invocations", accept_json,
                                  testing::read_text(endpoint.dir.file("plain.nii")),
                                  "application/octet-stream");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const nlohmann::json summary = nlohmann::json::parse(response->body);
  EXPECT_EQ(summary["shape"], nlohmann::json({30, 26, 20}));
  int64_t voxels = 0;
  for (const auto& [value, entry] : summary["labels"].items())
    voxels += entry["voxels"].get<int64_t>();
  EXPECT_EQ(voxels, 30 * 26 * 20);

  // The same label map as a NumPy array (uint8, Fortran order).
  httplib::Headers accept_npy = {{"Accept", "application/x-npy"}};
  response = server.client().Post("/invocations", accept_npy, body, "application/x-nifti");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const std::string& npy = response->body;
  ASSERT_EQ(npy.compare(0, 6, "\x93NUMPY"), 0);
  const size_t header_size = static_cast<uint8_t>(npy[8]) | static_cast<uint8_t>(npy[9]) << 8;
  EXPECT_NE(npy.find("'descr': '|u1', 'fortran_order': True, 'shape': (30, 26, 20)"),
            std::string::npos);
  const NiftiVolume label_map = read_nifti(endpoint.dir.file("infer/BRATS_900.nii.gz"));
  ASSERT_EQ(npy.size(), 10 + header_size + label_map.data.size());
  for (size_t i = 0; i < label_map.data.size(); ++i) {
    ASSERT_EQ(static_cast<uint8_t>(npy[10 + header_size + i]), label_map.data[i]) << i;
  }

  // Probabilities on request, as `infer --probabilities` writes them.
  httplib::Headers probabilities = {{"X-Amzn-SageMaker-Custom-Attributes", "probabilities"}};
  response = server.client().Post("/invocations", probabilities, body, "application/x-nifti");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_TRUE(response->body == testing::read_text(endpoint.dir.file(
                                    "infer-probabilities/BRATS_900_probabilities.nii.gz")))
      << "serve's probabilities differ from infer's";

  auto parameters = server.client().Get("/execution-parameters");
  ASSERT_TRUE(parameters);
  EXPECT_EQ(nlohmann::json::parse(parameters->body)["BatchStrategy"], "SINGLE_RECORD");
  EXPECT_EQ(server.stop(), 0) << server.log();
}

TEST(ServeTest, BadRequestsGetA4xxNamingTheProblemAndTheServerStaysUp) {
  Endpoint endpoint;
  ServerProcess server(endpoint.root, {"SAGEMAKER_MAX_PAYLOAD_IN_MB=1"});
  ASSERT_EQ(server.wait_for_ping(200), 200) << server.log();
  struct BadRequest {
    std::string body;
    std::string accept;
    int status;
    std::string says;
  };
  const std::string image = testing::read_text(endpoint.image);
  // A 3-D image (one modality), three modalities, and a header claiming 30000^3 voxels.
  NiftiVolume volume = read_nifti(endpoint.image);
  const int64_t voxels = volume.dim[0] * volume.dim[1] * volume.dim[2];
  NiftiVolume three = volume;
  three.dim[3] = 3;
  three.data.resize(static_cast<size_t>(3 * voxels));
  write_nifti(endpoint.dir.file("three.nii.gz"), three, NiftiDataType::kFloat32);
  NiftiVolume one = volume;
  one.ndim = 3;
  one.dim[3] = 1;
  one.data.resize(static_cast<size_t>(voxels));
  write_nifti(endpoint.dir.file("one.nii"), one, NiftiDataType::kFloat32);
  std::string absurd = testing::read_text(endpoint.dir.file("one.nii"));
  for (int axis = 0; axis < 3; ++axis) {  // dim[1..3], int16, at byte 42 + 2 * axis (nifti1.h)
    absurd[42 + 2 * axis] = static_cast<char>(30000 & 0xff);
    absurd[43 + 2 * axis] = static_cast<char>(30000 >> 8);
  }
  // A tar whose member climbs out of the extraction folder.
  ASSERT_EQ(testing::run_shell("cd " + endpoint.dir.path() +
                               " && mkdir -p a/b && echo x > a/evil && "
                               "tar -cPf traversal.tar a/b/../evil")
                .exit_code,
            0);
  const std::vector<BadRequest> requests = {
      {testing::read_text(endpoint.dir.file("three.nii.gz")), "", 400, "4"},
      {testing::read_text(endpoint.dir.file("one.nii")), "", 400, "the request body"},
      {absurd, "", 400, "the request body"},
      {testing::read_text(endpoint.dir.file("traversal.tar")), "", 400,
       "the request body: cannot extract it as a tar file"},
      {"", "", 400, "empty request body"},
      {"not a nifti file at all, just some text", "", 400, "the request body"},
      {image.substr(0, image.size() / 2), "", 400, "the request body"},
      {image, "text/csv", 406, "Accept 'text/csv' is not served"},
      {std::string(2 << 20, 'x'), "", 413, ""},
  };
  for (const BadRequest& bad : requests) {
    SCOPED_TRACE(bad.says + " " + std::to_string(bad.body.size()) + " bytes");
    httplib::Headers headers;
    if (!bad.accept.empty()) headers.emplace("Accept", bad.accept);
    const auto response =
        server.client().Post("/invocations", headers, bad.body, "application/octet-stream");
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, bad.status) << response->body;
    EXPECT_NE(response->body.find(bad.says), std::string::npos) << response->body;
    EXPECT_EQ(server.wait_for_ping(200), 200);
  }
  EXPECT_EQ(server.stop(), 0) << server.log();
}

// A BraTS case folder: one 3-D file per modality, split from a synthetic 4-D image.
void write_brats_case(const std::string& folder, const std::string& id, bool with_t2 = true) {
  const SyntheticCase generated = testing::oblique_case({28, 24, 20}, 6, 0);
  const char* modalities[] = {"flair", "t1", "t1ce", "t2"};
  const int64_t voxels = 28 * 24 * 20;
  std::filesystem::create_directories(folder);
  for (int m = 0; m < (with_t2 ? 4 : 3); ++m) {
    NiftiVolume modality = generated.image;
    modality.ndim = 3;
    modality.dim[3] = 1;
    modality.data.assign(generated.image.data.begin() + m * voxels,
                         generated.image.data.begin() + (m + 1) * voxels);
    write_nifti(folder + "/" + id + "_" + modalities[m] + ".nii.gz", modality,
                NiftiDataType::kFloat32);
  }
}

// A tar of a BraTS case folder (or of its files) answers what `infer` writes for that folder.
TEST(ServeTest, ATarOfABratsCaseFolder) {
  Endpoint endpoint;
  write_brats_case(endpoint.dir.file("brats/case7"), "case7");
  const testing::CommandResult infer = testing::run_medseg(
      {"infer", "--model", endpoint.root + "/model", "--input", endpoint.dir.file("brats"),
       "--output", endpoint.dir.file("infer"), "--device", "cpu"});
  ASSERT_EQ(infer.exit_code, 0) << infer.output;
  const std::string expected = testing::read_text(endpoint.dir.file("infer/case7.nii.gz"));
  ASSERT_EQ(testing::run_shell("tar -cf " + endpoint.dir.file("folder.tar") + " -C " +
                               endpoint.dir.file("brats") + " case7 && tar -cf " +
                               endpoint.dir.file("files.tar") + " -C " +
                               endpoint.dir.file("brats/case7") + " .")
                .exit_code,
            0);
  write_brats_case(endpoint.dir.file("three/case8"), "case8", /*with_t2=*/false);
  ASSERT_EQ(testing::run_shell("tar -cf " + endpoint.dir.file("three.tar") + " -C " +
                               endpoint.dir.file("three") + " case8")
                .exit_code,
            0);

  ServerProcess server(endpoint.root);
  ASSERT_EQ(server.wait_for_ping(200), 200) << server.log();
  for (const char* tar : {"folder.tar", "files.tar"}) {
    SCOPED_TRACE(tar);
    const auto response = server.client().Post(
        "/invocations", testing::read_text(endpoint.dir.file(tar)), "application/x-tar");
    ASSERT_TRUE(response);
    ASSERT_EQ(response->status, 200) << response->body;
    EXPECT_TRUE(response->body == expected) << "serve's label map differs from infer's";
  }
  const auto missing = server.client().Post(
      "/invocations", testing::read_text(endpoint.dir.file("three.tar")), "application/x-tar");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 400) << missing->body;
  EXPECT_NE(missing->body.find("t2"), std::string::npos) << missing->body;
  EXPECT_EQ(missing->body.find("/tmp"), std::string::npos) << missing->body;
  EXPECT_EQ(server.wait_for_ping(200), 200);
  EXPECT_EQ(server.stop(), 0) << server.log();
}

// Batch Transform on a host with several replicas: SageMaker sends
// SAGEMAKER_MAX_CONCURRENT_TRANSFORMS requests at once; none is turned away, each is predicted by
// one of the replicas, and every answer is what `infer` writes.
TEST(ServeTest, ReplicasServeConcurrentBatchTransformRequests) {
  Endpoint endpoint;
  ASSERT_EQ(
      testing::run_medseg({"infer", "--model", endpoint.root + "/model", "--input", endpoint.image,
                           "--output", endpoint.dir.file("infer"), "--device", "cpu"})
          .exit_code,
      0);
  const std::string expected = testing::read_text(endpoint.dir.file("infer/BRATS_900.nii.gz"));
  ServerProcess server(endpoint.root,
                       {"MEDSEG_SERVE_REPLICAS=2", "MEDSEG_SERVE_MAX_WAITING=0", "SAGEMAKER_BATCH=true",
                        "SAGEMAKER_BATCH_STRATEGY=MULTI_RECORD",
                        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=6"});
  ASSERT_EQ(server.wait_for_ping(200), 200) << server.log();
  auto parameters = server.client().Get("/execution-parameters");
  ASSERT_TRUE(parameters);
  EXPECT_EQ(nlohmann::json::parse(parameters->body)["MaxConcurrentTransforms"], 2);

  const std::string body = testing::read_text(endpoint.image);
  std::vector<int> statuses(6, -1);
  std::vector<bool> equal(6, false);
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] {
      const auto response = server.client().Post("/invocations", body, "application/x-nifti");
      statuses[i] = response ? response->status : -1;
      equal[i] = response && response->body == expected;
    });
  }
  for (std::thread& client : clients) client.join();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(statuses[i], 200) << "request " << i;
    EXPECT_TRUE(equal[i]) << "request " << i << ": the label map differs from infer's";
  }
  const std::string log = server.log();
  EXPECT_NE(log.find("replica 2 of 2"), std::string::npos) << log;
  EXPECT_NE(log.find("2 replica(s), up to 4 requests waiting"), std::string::npos) << log;
  EXPECT_NE(log.find("MULTI_RECORD"), std::string::npos) << log;
  EXPECT_EQ(server.stop(), 0) << log;
}

TEST(ServeTest, BadServingSettingsAreAClientErrorNamingTheVariable) {
  Endpoint endpoint;
  for (const auto& [setting, expected] :
       std::vector<std::pair<std::string, std::string>>{
           {"SAGEMAKER_BATCH_STRATEGY=SPLIT", "expected SINGLE_RECORD or MULTI_RECORD"},
           {"MEDSEG_SERVE_REPLICAS=-1", "expected 1 to 64"},
           {"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=four", "expected an integer"}}) {
    const testing::CommandResult result = testing::run_medseg(
        {"serve", "--ml-root", endpoint.root, "--device", "cpu", "--port",
         std::to_string(testing::free_loopback_port())},
        {setting});
    EXPECT_EQ(result.exit_code, 2) << setting << ": " << result.output;
    const std::string failure = testing::read_text(endpoint.root + "/output/failure");
    EXPECT_NE(failure.find(setting.substr(0, setting.find('='))), std::string::npos) << failure;
    EXPECT_NE(failure.find(expected), std::string::npos) << failure;
  }
}

// While a long prediction runs, /ping answers at once and a request beyond the waiting limit gets
// 503 with Retry-After instead of piling up.
TEST(ServeTest, PingStaysFastDuringAPredictionAndABusyServerSays503) {
  testing::TempDir dir;
  const std::string root = dir.file("ml");
  testing::make_ml_root(root, "{}");
  // MONAI's default UNet on 64^3 windows: a prediction of a 208x208x128 case takes seconds here.
  testing::write_tiny_model(
      root + "/model",
      testing::tiny_model_config({"model.channels=[16, 32, 64, 128, 256]",
                                  "model.strides=[2, 2, 2, 2]", "model.num_res_units=2",
                                  "augment.roi_size=[64, 64, 64]", "sliding_window.batch_size=1"}));
  write_nifti(dir.file("large.nii.gz"), make_synthetic_case({208, 208, 128}, 1, 0).image,
              NiftiDataType::kFloat32);
  const std::string large = testing::read_text(dir.file("large.nii.gz"));
  ServerProcess server(root, {"SAGEMAKER_MAX_PAYLOAD_IN_MB=64", "MEDSEG_SERVE_MAX_WAITING=0"});
  ASSERT_EQ(server.wait_for_ping(200), 200) << server.log();

  int long_status = 0;
  double long_seconds = 0;
  std::thread long_request([&] {
    const auto started = Clock::now();
    const auto response = server.client().Post("/invocations", large, "application/x-nifti");
    long_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    long_status = response ? response->status : -1;
  });
  // Wait until the prediction runs (the server logs nothing before; the body takes ~0.1 s).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  double slowest_ping = 0;
  for (int i = 0; i < 20; ++i) {
    const auto started = Clock::now();
    const auto ping = server.client().Get("/ping");
    slowest_ping =
        std::max(slowest_ping, std::chrono::duration<double>(Clock::now() - started).count());
    ASSERT_TRUE(ping);
    EXPECT_EQ(ping->status, 200);
  }
  const auto busy =
      server.client().Post("/invocations", large.substr(0, 1000), "application/x-nifti");
  long_request.join();
  std::printf("[ SERVE    ] prediction %.2f s; slowest of 20 pings during it %.4f s\n",
              long_seconds, slowest_ping);
  EXPECT_EQ(long_status, 200);
  EXPECT_LT(slowest_ping, 0.5);
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 503) << busy->body << " (the prediction took " << long_seconds << " s)";
  EXPECT_EQ(busy->get_header_value("Retry-After"), "5");
  EXPECT_EQ(server.stop(), 0) << server.log();
}

TEST(ServeTest, AModelThatCannotLoadKeepsPingAt503AndSaysWhy) {
  testing::TempDir dir;
  testing::make_ml_root(dir.file("ml"), "{}");
  testing::write_text(dir.file("ml/model/model.pth"), "not a model");
  ServerProcess server(dir.file("ml"));
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!testing::file_exists(dir.file("ml/output/failure")) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(server.wait_for_ping(503), 503);
  EXPECT_NE(testing::read_text(dir.file("ml/output/failure")).find("ClientError"),
            std::string::npos);
  EXPECT_EQ(server.stop(), 0) << server.log();
}

}  // namespace
}  // namespace medseg
