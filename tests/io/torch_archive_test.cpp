#include "io/torch_archive.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <string>

#include "model/model_io.h"
#include "model/unet.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

std::string problem_of(const std::string& pickle) {
  return pickle_problem(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size());
}

// The archive at `path` passes (or fails) check_torch_archive.
void check_file(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader reader(path);
  check_torch_archive(reader, testing::read_text(path).size(), "model file " + path);
}

TEST(TorchArchiveTest, PicklesOfTorchSaveAndMedsegPass) {
  testing::TempDir dir;
  UNetOptions options;
  options.channels = {4, 8};
  options.strides = {2};
  options.num_res_units = 1;
  UNet unet(options);
  save_model_pth(dir.file("model.pth"), *unet);
  EXPECT_NO_THROW(check_file(dir.file("model.pth")));
  // Python's torch.save of MONAI's state dict (fuzz/make_corpus.sh wrote it).
  EXPECT_NO_THROW(
      check_file(std::string(MEDSEG_SOURCE_DIR) + "/fuzz/corpus/fuzz_model/monai_state_dict.pth"));
  // A protocol-2 pickle of {} with its memo entry and a read of it.
  EXPECT_EQ(problem_of(std::string("\x80\x02}q\x00h\x00.", 9)), "");
}

TEST(TorchArchiveTest, LengthsPastTheEndAndMemoIndicesOutOfOrderAreNamed) {
  // BINUNICODE claiming 2 GiB in a 12-byte pickle: LibTorch's unpickler would reserve it.
  EXPECT_EQ(problem_of(std::string("\x80\x02X\xff\xff\xff\x7f" "abc.", 11)),
            "a length of 2147483647 bytes at byte 2, past the end of the pickle (4 bytes left)");
  // LONG_BINPUT 4e9 after no entry: the memo table would grow to 4e9 values.
  EXPECT_EQ(problem_of(std::string("\x80\x02Nr\x00\x28\x6b\xee.", 9)),
            "memo index 4000000000 at byte 3 skips entries (0 defined so far)");
  EXPECT_EQ(problem_of(std::string("\x80\x02h\x05.", 5)),
            "memo index 5 at byte 2 was never defined");
  EXPECT_EQ(problem_of(std::string("\x80\x02" "ctorch\nTensor", 15)),
            "an unterminated text argument at byte 2");
  EXPECT_EQ(problem_of(std::string("\x80\x02N", 3)), "the pickle ends without STOP");
  EXPECT_EQ(problem_of(std::string("\x80\x02J\x01", 4)),
            "the pickle ends inside the opcode at byte 2");
}

// Found by fuzz/fuzz_model and fuzz/fuzz_checkpoint: damaged archives of 12 and 54 kB whose
// pickles claim strings of 3.0 and 1.6 GB, which LibTorch's unpickler reserved before reading.
TEST(TorchArchiveTest, ArchivesWhosePicklesClaimGigabytesAreRefusedBeforeLoading) {
  const std::string findings = std::string(MEDSEG_SOURCE_DIR) + "/tests/data/fuzz_findings/";
  UNetOptions options;
  options.channels = {4, 8};
  options.strides = {2};
  options.num_res_units = 0;
  UNet unet(options);
  testing::expect_client_error(
      [&] { load_model_pth(findings + "model-claiming-3-gb.pth", *unet); },
      {"model file " + findings + "model-claiming-3-gb.pth: its record", "is not a valid pickle",
       "past the end of the pickle"});
  // A zip directory entry claiming 1.4 GB, which LibTorch's reader allocated in its constructor.
  testing::expect_client_error(
      [&] { load_model_pth(findings + "model-zip-entry-claiming-1-4-gb.pth", *unet); },
      {"model-zip-entry-claiming-1-4-gb.pth is not a PyTorch file", "claims",
       "more than the whole file"});
}

}  // namespace
}  // namespace medseg
