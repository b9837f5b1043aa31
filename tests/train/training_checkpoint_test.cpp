#include "train/training_checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "model/unet.h"
#include "test_support.h"
#include "torch_test_support.h"
#include "train/checkpoint_store.h"
#include "train/optimizer.h"
#include "util/error.h"

namespace medseg {
namespace {

CheckpointMeta sample_meta() {
  CheckpointMeta meta;
  meta.reason = "steps";
  meta.epoch = 3;
  meta.next_step = 7;
  meta.global_step = 52;
  meta.world_size = 2;
  meta.compatibility_key = R"({"model.channels":[8,16]})";
  meta.config_yaml = "train:\n  epochs: 9\n";
  meta.history = nlohmann::json::array({{{"type", "validation"}, {"val_mean_dice", 0.5}}});
  meta.best_mean_dice = 0.5;
  meta.best_epoch = 2;
  meta.loss_scale = 1024.0;
  meta.loss_scale_good_steps = 11;
  meta.last_loss = 0.25;
  return meta;
}

// One Adam step, so the optimiser has state worth restoring.
void take_a_step(torch::nn::Linear& model, torch::optim::Adam& adam) {
  adam.zero_grad();
  model->forward(torch::ones({2, 4})).sum().backward();
  adam.step();
}

TEST(TrainingCheckpointTest, RoundTripsModelOptimiserGeneratorAndMetadata) {
  torch::manual_seed(1);
  torch::nn::Linear model(4, 3);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.1));
  take_a_step(model, adam);
  torch::serialize::OutputArchive out;
  write_training_state(out, *model, adam, sample_meta());
  const at::Tensor next_random = at::rand({3});  // drawn after the state was saved
  testing::TempDir dir;
  out.save_to(dir.file("state.pt"));

  torch::manual_seed(2);
  torch::nn::Linear restored(4, 3);
  torch::optim::Adam restored_adam(restored->parameters(), torch::optim::AdamOptions(0.1));
  torch::serialize::InputArchive in;
  in.load_from(dir.file("state.pt"));
  const CheckpointMeta meta = read_checkpoint_meta(in, "state.pt");
  read_training_state(in, "state.pt", *restored, restored_adam);
  EXPECT_EQ(meta.to_json(), sample_meta().to_json());
  EXPECT_TRUE(restored->weight.equal(model->weight));
  EXPECT_TRUE(at::rand({3}).equal(next_random)) << "the generator continues where it was saved";
  // The same next step from the same state: Adam's moments came back too.
  take_a_step(model, adam);
  take_a_step(restored, restored_adam);
  EXPECT_TRUE(restored->weight.equal(model->weight));
}

TEST(TrainingCheckpointTest, BadMetadataIsAClientErrorNamingTheKey) {
  const std::string good = sample_meta().to_json();
  const auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json meta = nlohmann::json::parse(good);
    if (value.is_discarded()) {
      meta.erase(key);
    } else {
      meta[key] = value;
    }
    return meta.dump();
  };
  const nlohmann::json missing = nlohmann::json(nlohmann::json::value_t::discarded);
  const struct {
    std::string text;
    std::vector<std::string> parts;
  } cases[] = {
      {"{not json", {"ckpt-7", "is not JSON"}},
      {"[1, 2]", {"ckpt-7", "expected a JSON object"}},
      {with("format_version", 2), {"format version 2", "reads version 1"}},
      {with("epoch", missing), {"has no 'epoch'"}},
      {with("epoch", "three"), {"'epoch' is \"three\"", "an integer >= 0"}},
      {with("next_step", -5), {"'next_step' is -5", "an integer >= 0"}},
      {with("global_step", 1.5), {"'global_step' is 1.5"}},
      {with("world_size", 0), {"'world_size' is 0", ">= 1"}},
      {with("loss_scale", 0.0), {"'loss_scale'", "a positive finite number"}},
      {with("history", "none"), {"'history'", "an array"}},
      {with("compatibility_key", 5), {"'compatibility_key' is 5", "a string"}},
  };
  for (const auto& bad : cases) {
    testing::expect_client_error([&] { CheckpointMeta::parse(bad.text, "ckpt-7"); }, bad.parts);
  }
  EXPECT_NO_THROW(CheckpointMeta::parse(good, "ckpt-7"));
}

TEST(TrainingCheckpointTest, ParameterOfAnotherShapeOrMissingIsRefusedBeforeAnythingChanges) {
  torch::nn::Linear model(4, 3);
  torch::optim::Adam adam(model->parameters());
  torch::serialize::OutputArchive out;
  write_training_state(out, *model, adam, sample_meta());
  testing::TempDir dir;
  out.save_to(dir.file("state.pt"));

  torch::nn::Linear wider(4, 5);
  torch::optim::Adam wider_adam(wider->parameters());
  const at::Tensor before = wider->weight.detach().clone();
  torch::serialize::InputArchive in;
  in.load_from(dir.file("state.pt"));
  testing::expect_client_error([&] { read_training_state(in, "state.pt", *wider, wider_adam); },
                               {"state.pt", "parameter 'weight'", "[3, 4]", "[5, 4]"});
  EXPECT_TRUE(wider->weight.equal(before));

  torch::nn::Sequential other(torch::nn::Linear(4, 3));
  torch::optim::Adam other_adam(other->parameters());
  torch::serialize::InputArchive again;
  again.load_from(dir.file("state.pt"));
  testing::expect_client_error([&] { read_training_state(again, "state.pt", *other, other_adam); },
                               {"has no parameter '0.weight'"});
}

// What read_training_state says ("" when it accepts it) of a checkpoint of `model` and `adam`
// with `rng` as its random generator state and `weight` (when given) as the model's weight.
std::string error_of_state(torch::nn::Linear& model, torch::optim::Adam& adam,
                           const at::Tensor& rng, const at::Tensor& weight = {}) {
  torch::serialize::OutputArchive out;
  for (const auto& parameter : model->named_parameters()) {
    out.write("model/" + parameter.key(), parameter.key() == "weight" && weight.defined()
                                              ? weight
                                              : parameter.value().detach());
  }
  torch::serialize::OutputArchive optimizer_archive;
  adam.save(optimizer_archive);
  out.write("optimizer", optimizer_archive);
  out.write("rng/cpu", rng);
  testing::TempDir dir;
  out.save_to(dir.file("state.pt"));
  torch::nn::Linear restored(4, 3);
  torch::optim::Adam restored_adam(restored->parameters());
  torch::serialize::InputArchive in;
  in.load_from(dir.file("state.pt"));
  try {
    read_training_state(in, "state.pt", *restored, restored_adam);
  } catch (const ClientError& error) {
    return error.what();
  }
  return "";
}

// Found by fuzz/fuzz_checkpoint (CI, 1,766 inputs): a CRC-valid checkpoint whose 'rng/cpu'
// tensor claimed more bytes than its storage held made the generator's set_state read past the
// buffer: SIGSEGV. Every tensor of a checkpoint is checked against its storage, the generator
// state's type and size, and each optimiser moment against its parameter.
TEST(TrainingCheckpointTest, TensorsThatDoNotFitTheirStorageOrTheirUseAreClientErrors) {
  torch::nn::Linear model(4, 3);
  torch::optim::Adam adam(model->parameters());
  take_a_step(model, adam);
  const at::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
  const auto expect_error = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find("state.pt"), std::string::npos) << message;
    EXPECT_NE(message.find(part), std::string::npos) << message;
  };
  expect_error(error_of_state(model, adam,
                              testing::beyond_its_storage(at::zeros({10}, at::kByte), rng.sizes())),
               "'rng/cpu' is a tensor of " + std::to_string(rng.numel()) +
                   " elements whose last one is element " + std::to_string(rng.numel() - 1) +
                   " of a storage holding 10");
  expect_error(error_of_state(model, adam, rng.to(at::kFloat)),
               "'rng/cpu' is float [" + std::to_string(rng.numel()) + "], expected uint8");
  expect_error(error_of_state(model, adam, rng.narrow(0, 0, 100)),
               "'rng/cpu' is unsigned char [100]");

  auto& state = static_cast<torch::optim::AdamParamState&>(
      *adam.state().at(model->weight.unsafeGetTensorImpl()));
  const at::Tensor moment = state.exp_avg();
  state.exp_avg(testing::beyond_its_storage(at::zeros({2}), {3, 4}));
  expect_error(error_of_state(model, adam, rng),
               "optimiser state 'exp_avg' of parameter #0 is a tensor of 12 elements");
  state.exp_avg(at::zeros({4, 3}));
  expect_error(error_of_state(model, adam, rng),
               "optimiser state 'exp_avg' of parameter #0 is float [4, 3], its parameter float "
               "[3, 4]");
  state.exp_avg(moment);
  EXPECT_EQ(error_of_state(model, adam, rng), "");

  // Two parameters naming one stored state: LibTorch's load leaves the second a null state.
  torch::optim::Adam twice(std::vector<at::Tensor>{model->weight, model->weight});
  model->zero_grad();
  model->forward(torch::ones({2, 4})).sum().backward();
  twice.step();
  expect_error(error_of_state(model, twice, rng),
               "optimiser state of parameter #1 is another parameter's as well");

  expect_error(
      error_of_state(model, adam, rng, testing::beyond_its_storage(at::zeros({5}), {3, 4})),
      "parameter 'weight' is a tensor of 12 elements whose last one is element 11 of a "
      "storage holding 5");
}

TEST(TrainingCheckpointTest, APositionTheJobCannotReachIsAClientError) {
  CheckpointMeta meta;
  meta.epoch = 3;
  meta.next_step = 2;
  meta.global_step = 3 * 5 + 2;
  EXPECT_NO_THROW(check_position(meta, 5, "ckpt-17"));
  meta.next_step = 5;  // an epoch-end checkpoint
  meta.global_step = 20;
  EXPECT_NO_THROW(check_position(meta, 5, "ckpt-20"));
  meta.epoch = 1'000'000'000'000'000'000;
  testing::expect_client_error([&] { check_position(meta, 5, "ckpt-x"); },
                               {"checkpoint ckpt-x", "epoch 1000000000000000000", "disagree"});
  meta.epoch = 3;
  meta.global_step = 99;
  testing::expect_client_error([&] { check_position(meta, 5, "ckpt-y"); }, {"global_step 99"});
  meta.next_step = 7;
  meta.global_step = 22;
  testing::expect_client_error([&] { check_position(meta, 5, "ckpt-z"); }, {"next_step 7"});
}

}  // namespace
}  // namespace medseg

namespace medseg {
namespace {

// Found by fuzz/fuzz_checkpoint after 628,000 inputs: an intact checkpoint whose optimiser
// module lacks a field ('params/8') made LibTorch throw torch::jit::ObjectAttributeError (not a
// c10::Error) out of the optimiser's load: exit 4. It is a ClientError naming the file.
TEST(TrainingCheckpointTest, AnOptimiserStateMissingAFieldIsAClientError) {
  testing::TempDir dir;
  std::filesystem::copy_file(
      std::string(MEDSEG_SOURCE_DIR) +
          "/tests/data/fuzz_findings/checkpoint-optimizer-missing-field.ckpt",
      dir.file("checkpoint-0000000001.ckpt"));
  const CheckpointStore store(dir.path(), /*keep=*/1);
  const std::optional<CheckpointInfo> found = store.newest_complete();
  ASSERT_TRUE(found.has_value());
  torch::serialize::InputArchive archive;
  store.load(*found, archive);
  UNet model(testing::harness_network_options());
  OptimConfig adam;
  const auto optimizer = make_optimizer(adam, model->parameters());
  testing::expect_client_error(
      [&] { read_training_state(archive, found->path, *model, *optimizer); },
      {"checkpoint " + found->path + ": its ", "checkpoint.resume = false"});
}

}  // namespace
}  // namespace medseg
