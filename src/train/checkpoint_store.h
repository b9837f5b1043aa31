// The checkpoint store: how training checkpoints are written, found, validated and pruned in the
// checkpoint directory (SageMaker's /opt/ml/checkpoints). What goes into a checkpoint is the
// trainer's business; this layer stores one torch::serialize::OutputArchive per checkpoint.
//
// One checkpoint is one file, `<dir>/checkpoint-<global step, 10 digits>.ckpt`, because SageMaker
// uploads the directory's files to S3 one by one while training runs and a fresh container after a
// Spot interruption gets back whichever complete files were uploaded: a checkpoint spread over
// several files could come back half. The file is
//
//   header (32 bytes, little-endian)
//     magic "MEDSEGCK" | uint32 format version (1) | uint32 CRC-32 of the payload |
//     uint64 payload length | int64 global step (equals the step in the file name)
//   payload: the bytes of the OutputArchive (a PyTorch zip archive)
//   trailer (16 bytes): "CKPTDONE" | uint64 payload length again
//
// and it is only trusted when all of it checks out (magic, version, file size, trailer, CRC), so a
// file cut short by a kill, a full disk or a partial S3 download is never loaded. Files appear
// under their final name only once complete (temporary name in the same directory, fsync, rename,
// fsync of the directory), so a reader sees either no file or the whole one.
//
// Thread safety: none. One process (rank 0) writes; readers in other processes are safe while it
// writes (they never trust or remove a temporary file whose writer is still running).
#pragma once

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace medseg {

struct CheckpointInfo {
  std::string path;         // <dir>/checkpoint-<step>.ckpt
  int64_t global_step = 0;  // from the file name
  int64_t bytes = 0;        // file size, header and trailer included
};

struct CheckpointWriteStats {
  std::string path;      // the checkpoint written
  int64_t bytes = 0;     // its file size
  double seconds = 0.0;  // serialising, writing, fsync and rename (pruning excluded)
};

class CheckpointStore {
 public:
  // Checkpoints live in `directory` (created by the first save() if missing). After each save the
  // newest `keep` complete checkpoints are kept. REQUIRES: keep >= 1 (InternalError otherwise).
  // On SageMaker keep >= 2 is the safe choice: a local delete is mirrored to S3 at once, while the
  // upload of the checkpoint just written takes a while, so with keep == 1 a Spot kill right after
  // a save can leave S3 with no checkpoint at all.
  CheckpointStore(std::string directory, int keep);

  const std::string& directory() const { return directory_; }

  // Writes `archive` as the checkpoint of `global_step`, replacing one of the same step, then
  // prunes: of the checkpoints older than this one, all but the newest keep-1 complete-looking ones
  // are deleted (so `keep` remain counting this one), as are stray temporary files of dead writers.
  // Checkpoints newer than `global_step` are never touched.
  // On any failure (ENOSPC, EFBIG, EIO, a directory that is not one...) the temporary file is
  // removed, nothing is pruned, every earlier checkpoint stays as it was, and PlatformError names
  // the checkpoint and the cause. REQUIRES: global_step >= 0.
  CheckpointWriteStats save(int64_t global_step, torch::serialize::OutputArchive& archive);

  // The newest checkpoint that validates completely (CRC included), scanning newest first.
  // Corrupt or truncated files are skipped with a warning naming them (and left in place: they are
  // evidence, and pruning removes them later); temporary files of writers that are no longer
  // running are removed, never trusted. std::nullopt when there is none or the directory does not
  // exist. PlatformError when the directory cannot be read.
  std::optional<CheckpointInfo> newest_complete() const;

  // Reads and validates `info`'s file and loads its payload into `archive` (tensors mapped to
  // `device` when given, else to the device they were saved from). ClientError naming the file and
  // the defect when it does not validate or is not a PyTorch archive; PlatformError when it cannot
  // be read. The file is read twice, through one descriptor: a CRC pass, then LibTorch's reads
  // straight into the tensors (no buffer the size of the payload).
  void load(const CheckpointInfo& info, torch::serialize::InputArchive& archive,
            std::optional<c10::Device> device = std::nullopt) const;

  // Checkpoint files that look complete (header, size and trailer agree; the CRC is not checked),
  // oldest first. Stray temporary files and misnamed files are not listed.
  std::vector<CheckpointInfo> list() const;

  // The file name a checkpoint of `global_step` gets: "checkpoint-0000000042.ckpt".
  static std::string file_name(int64_t global_step);

 private:
  std::string path_for(int64_t global_step) const;
  void prune(int64_t just_written_step) const;

  std::string directory_;
  int keep_;
};

// Metadata in archives. write_* stores `value` under `key` (as a c10::IValue attribute);
// read_* returns it, with a ClientError naming the key when it is missing or of another type
// (a checkpoint from another medseg version or another program).
void write_string(torch::serialize::OutputArchive& archive, const std::string& key,
                  const std::string& value);
std::string read_string(torch::serialize::InputArchive& archive, const std::string& key);
void write_int64(torch::serialize::OutputArchive& archive, const std::string& key, int64_t value);
int64_t read_int64(torch::serialize::InputArchive& archive, const std::string& key);

}  // namespace medseg
