// Checks on a PyTorch zip archive (model.pth, a checkpoint's payload) before LibTorch loads it,
// for the sizes LibTorch trusts: it allocates a record's buffer from the size the zip directory
// claims, and its unpickler reserves a string's or bytes' length and a memo table's index as the
// pickle states them, before reading. A 12 kB damaged model.pth made it allocate 3 GB
// (fuzz/fuzz_model); a LONG_BINPUT index of 4e9 asks for 64 GB. These checks refuse such files
// with a ClientError first, so loading allocates no more than the archive's size, give or take.
#pragma once

#include <c10/util/ArrayRef.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace at {
class Tensor;
}

namespace caffe2::serialize {
class PyTorchStreamReader;
class ReadAdapterInterface;
}

namespace medseg {

// "" when the pickle `data` (protocol 0-5, as torch.save and torch::pickle_save write) states no
// length past its end and no memo index beyond the ones it defined; else what is wrong and where.
// Scanning stops at STOP and at an opcode it does not know (LibTorch refuses those itself).
std::string pickle_problem(const uint8_t* data, size_t size);

// Refuses (ClientError "<subject> is not a PyTorch file ...: <why>") bytes that are not a zip archive whose directory fits
// them: the end-of-central-directory record (zip64 too) found, the central directory inside the
// file, its entry count possible, and no entry claiming more bytes than the file holds. For use
// before a PyTorchStreamReader is made: miniz sizes its tables from these numbers, and the reader's
// constructor reads a record into a buffer of the size its entry claims.
void check_zip_directory(const caffe2::serialize::ReadAdapterInterface& in,
                         const std::string& subject);

// Refuses (ClientError "<subject>: ...") an archive of `archive_bytes` bytes in which a record
// claims more bytes than the archive holds (torch.save stores records uncompressed) or a .pkl
// record fails pickle_problem. `subject` names the file: "model file /opt/ml/model/model.pth".
void check_torch_archive(caffe2::serialize::PyTorchStreamReader& reader, uint64_t archive_bytes,
                         const std::string& subject);

// "" when every element of `tensor` lies inside its storage, else what is wrong. LibTorch's
// unpickler takes a tensor's offset, sizes and strides from the pickle as they are: a 10-byte
// storage can come back as a tensor of 5,056 elements, and reading it reads past the buffer
// (fuzz/fuzz_checkpoint: a SIGSEGV in the random generator's set_state). Check every tensor
// loaded from a file before its values are used.
std::string tensor_storage_problem(const at::Tensor& tensor);

// A tensor's shape as messages show it: "[16, 4, 3, 3, 3]".
std::string shape_text(c10::IntArrayRef sizes);

}  // namespace medseg
