// Training checkpoints as a restarted job finds them in /opt/ml/checkpoints (downloaded from S3,
// perhaps cut short, damaged or written by something else): found and validated by the checkpoint
// store, then read as the trainer resumes (metadata, position, the model's parameters and Adam's
// state into the network of fuzz/corpus/fuzz_checkpoint's checkpoints: channels [4, 8],
// strides [2], no residual units, 4 -> 3 channels).
//
// Byte 0 picks the road: 0 = the rest is the whole checkpoint file; anything else = the rest is
// the payload (the PyTorch archive), framed here with a valid header, CRC and trailer, so that the
// mutations reach the archive and the metadata instead of stopping at the CRC.
#include <libdeflate.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>

#include "fuzz_support.h"
#include "model/unet.h"
#include "train/checkpoint_store.h"
#include "train/optimizer.h"
#include "train/training_checkpoint.h"
#include "util/file_io.h"

namespace {

void put(std::string& out, const void* value, size_t size) {
  out.append(static_cast<const char*>(value), size);
}

// CheckpointStore's file layout (see train/checkpoint_store.h) around `payload`, step 1.
std::string framed(const uint8_t* payload, size_t size) {
  std::string file = "MEDSEGCK";
  const uint32_t version = 1;
  const uint32_t crc = libdeflate_crc32(0, payload, size);
  const uint64_t length = size;
  const int64_t step = 1;
  put(file, &version, 4);
  put(file, &crc, 4);
  put(file, &length, 8);
  put(file, &step, 8);
  put(file, payload, size);
  file += "CKPTDONE";
  put(file, &length, 8);
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const std::string folder = [] {
    const std::string path = std::filesystem::path(medseg::fuzz::scratch_file("unused", nullptr, 0))
                                 .parent_path()
                                 .string() +
                             "/checkpoints";
    std::filesystem::create_directories(path);
    return path;
  }();
  const std::string file = folder + "/" + medseg::CheckpointStore::file_name(1);
  const std::string bytes = data[0] == 0 ? std::string(reinterpret_cast<const char*>(data + 1),
                                                       size - 1)
                                         : framed(data + 1, size - 1);
  medseg::write_file_atomically(file, bytes);

  medseg::fuzz::expect_clean([&] {
    const medseg::CheckpointStore store(folder, 2);
    const std::optional<medseg::CheckpointInfo> newest = store.newest_complete();
    if (!newest) return;
    torch::serialize::InputArchive archive;
    store.load(*newest, archive);
    const medseg::CheckpointMeta meta = medseg::read_checkpoint_meta(archive, newest->path);
    medseg::check_position(meta, 5, newest->path);
    // One network and optimiser for every input: a read changes them only when all of it fits.
    static medseg::UNet model = [] {
      medseg::UNetOptions options;
      options.channels = {4, 8};
      options.strides = {2};
      options.num_res_units = 0;
      return medseg::UNet(options);
    }();
    static const auto optimizer = [] {
      medseg::OptimConfig adam;
      adam.learning_rate = 1e-3;
      return medseg::make_optimizer(adam, model->parameters());
    }();
    medseg::read_training_state(archive, newest->path, *model, *optimizer);
  });
  return 0;
}
