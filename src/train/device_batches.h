// How training batches reach the compute device. Two sources, one interface for the training
// loop:
//  - host batches: the BatchLoader's threads cut crops on the CPU; on a GPU each batch is staged
//    in pinned memory and copied on a side stream, so the copy of step k's batch runs while the
//    GPU still works on step k-1 (the compute stream waits for the copy, not the host);
//  - the device-resident case cache (MONAI's fast-training recipe): every training case is
//    uploaded to the device once, and each step's crops, flips and intensity changes are tensor
//    operations there. No loader thread, no host-to-device copy per step. The draws are
//    draw_random_sample's, keyed like the loader's, so both sources give the same batches
//    (bit-identical on the CPU; data.normalize = crop to float rounding of the statistics).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <cstdint>
#include <memory>

#include "data/batch_loader.h"
#include "data/random_transforms.h"

namespace medseg {

class TrainingSet;

// One step's batch on the compute device.
struct DeviceBatch {
  int64_t step = 0;  // step within the epoch
  int64_t batch_size = 0;
  at::Tensor image;           // float [B, C, x, y, z]
  at::Tensor label;           // float 0/1 [B, L, x, y, z]
  double copy_seconds = 0.0;  // host time spent putting it on the device
};

class DeviceBatches {
 public:
  virtual ~DeviceBatches() = default;
  // Begins `steps` batches of `epoch` from `first_step` (resume mid-epoch).
  virtual void start_epoch(uint64_t epoch, int64_t steps, int64_t first_step) = 0;
  // The next batch; false when the epoch is exhausted. The tensors stay valid until the next
  // call (host batches reuse two device buffers in turn).
  virtual bool next(DeviceBatch& out) = 0;
  // Bytes the source holds on the device (the case cache; staging buffers).
  virtual int64_t device_bytes() const = 0;
};

// The loader's batches on `device` (which must outlive nothing: the loader must outlive this).
std::unique_ptr<DeviceBatches> make_host_batches(BatchLoader& loader, c10::Device device);

// Bytes the cache of `cases` takes on a device: every image as stored (float16 or float32) and
// its label, each padded to at least the crop size.
int64_t device_cache_bytes(const TrainingSet& cases, const std::array<int64_t, 3>& roi);

// Uploads every case of `cases` (read only during construction) to `device`. The batches are the
// ones a BatchLoader with `options` gives (its thread and prefetch settings play no part).
// ClientError when the cases disagree in their channel counts (naming the case).
std::unique_ptr<DeviceBatches> make_device_cache(const TrainingSet& cases,
                                                 const BatchLoaderOptions& options,
                                                 c10::Device device);

// NormalizeIntensity(nonzero, channel-wise) of a float [C, ...] tensor, as
// normalize_nonzero_channelwise: statistics over the nonzero voxels in double, zeros kept.
at::Tensor normalize_nonzero_channelwise(const at::Tensor& image);

}  // namespace medseg
