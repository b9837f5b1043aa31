#include "train/device_batches.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "data/batch_loader.h"
#include "data/training_set.h"
#include "util/clock.h"
#include "util/cuda.h"
#include "util/error.h"

namespace medseg {
namespace {

std::vector<int64_t> batch_shape(const Batch& batch, int64_t channels) {
  return {batch.batch_size, channels, batch.shape[0], batch.shape[1], batch.shape[2]};
}

// ------------------------------------------------------------------------------ host batches

class HostBatches final : public DeviceBatches {
 public:
  HostBatches(BatchLoader& loader, c10::Device device) : loader_(loader), device_(device) {}

  ~HostBatches() override {
    // Copies still queued on the side stream read the pinned buffers freed below.
    if (side_) cuda::synchronize();
  }

  void start_epoch(uint64_t epoch, int64_t steps, int64_t first_step) override {
    loader_.start_epoch(epoch, steps, first_step);
  }

  bool next(DeviceBatch& out) override {
    if (!loader_.next(batch_)) return false;
    const Clock::time_point started = Clock::now();
    out.step = batch_.step;
    out.batch_size = batch_.batch_size;
    const at::Tensor image = at::from_blob(batch_.image.data(),
                                           batch_shape(batch_, batch_.image_channels), at::kFloat);
    const at::Tensor label = at::from_blob(batch_.label.data(),
                                           batch_shape(batch_, batch_.label_channels), at::kByte);
    if (device_.is_cuda()) {
      copy_to_device(image, label, out);
    } else {
      out.image = image;  // views batch_, which stays until the next call
      out.label = label.to(at::kFloat);
    }
    out.copy_seconds = seconds_since(started);
    return true;
  }

  int64_t device_bytes() const override {
    int64_t bytes = 0;
    for (const std::unique_ptr<Stage>& stage : stages_) {
      if (stage) bytes += stage->image.nbytes() + stage->label.nbytes();
    }
    return bytes;
  }

 private:
  // A pinned host buffer and the device buffer it is copied into, with the events that order
  // the copy after the last step that read the device buffer, and that step's successor after
  // the copy.
  struct Stage {
    at::Tensor pinned_image, pinned_label, image, label;
    c10::Event copied{c10::DeviceType::CUDA};
    c10::Event released{c10::DeviceType::CUDA};
  };

  Stage& stage_for(const at::Tensor& image, const at::Tensor& label) {
    std::unique_ptr<Stage>& stage = stages_[next_stage_];
    if (stage && stage->image.sizes() == image.sizes() && stage->label.sizes() == label.sizes()) {
      return *stage;
    }
    cuda::synchronize();  // the crop shape is fixed; this runs once per buffer
    stage = std::make_unique<Stage>();
    const at::TensorOptions pinned = at::TensorOptions().pinned_memory(true);
    stage->pinned_image = at::empty(image.sizes(), pinned.dtype(at::kFloat));
    stage->pinned_label = at::empty(label.sizes(), pinned.dtype(at::kByte));
    stage->image = at::empty(image.sizes(), at::TensorOptions(device_).dtype(at::kFloat));
    stage->label = at::empty(label.sizes(), at::TensorOptions(device_).dtype(at::kByte));
    return *stage;
  }

  void copy_to_device(const at::Tensor& image, const at::Tensor& label, DeviceBatch& out) {
    const c10::impl::VirtualGuardImpl guard_impl(device_.type());
    if (!side_) side_ = guard_impl.getStreamFromGlobalPool(device_);
    const c10::Stream compute = guard_impl.getStream(device_);
    // The previous batch's step is queued by now: its buffer is free once the GPU gets there.
    if (in_use_ >= 0) stages_[in_use_]->released.record(compute);
    Stage& stage = stage_for(image, label);
    stage.copied.synchronize();  // the pinned buffer's last copy has left it
    std::memcpy(stage.pinned_image.data_ptr(), image.data_ptr(), image.nbytes());
    std::memcpy(stage.pinned_label.data_ptr(), label.data_ptr(), label.nbytes());
    {
      const c10::StreamGuard on_side(*side_);
      stage.released.block(*side_);
      stage.image.copy_(stage.pinned_image, /*non_blocking=*/true);
      stage.label.copy_(stage.pinned_label, /*non_blocking=*/true);
      stage.copied.record(*side_);
    }
    stage.copied.block(compute);
    out.image = stage.image;
    out.label = stage.label.to(at::kFloat);
    in_use_ = next_stage_;
    next_stage_ = 1 - next_stage_;
  }

  BatchLoader& loader_;
  c10::Device device_;
  Batch batch_;
  std::optional<c10::Stream> side_;
  std::array<std::unique_ptr<Stage>, 2> stages_;
  int next_stage_ = 0;
  int in_use_ = -1;
};

// ------------------------------------------------------------------------------ device cache

std::array<int64_t, 3> padded_shape(const std::array<int64_t, 3>& shape,
                                    const std::array<int64_t, 3>& roi) {
  return {std::max(shape[0], roi[0]), std::max(shape[1], roi[1]), std::max(shape[2], roi[2])};
}

// The case padded like make_random_sample pads it: zeros, symmetrically, the extra voxel after.
at::Tensor pad_to_roi(const at::Tensor& volume, const std::array<int64_t, 3>& roi) {
  std::vector<int64_t> pads;  // last dimension first, (before, after) each
  bool any = false;
  for (int axis = 2; axis >= 0; --axis) {
    const int64_t missing = std::max<int64_t>(0, roi[axis] - volume.size(axis + 1));
    pads.push_back(missing / 2);
    pads.push_back(missing - missing / 2);
    any = any || missing > 0;
  }
  return any ? at::constant_pad_nd(volume, pads, 0) : volume;
}

class DeviceCaseCache final : public DeviceBatches {
 public:
  DeviceCaseCache(const TrainingSet& cases, const BatchLoaderOptions& options, c10::Device device)
      : options_(options) {
    entries_.reserve(cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      const CaseView view = cases.view(i);
      if (i > 0 && (view.image_channels != entries_.front().image.size(0) ||
                    view.label_channels != entries_.front().label.size(0))) {
        throw ClientError("case " + *view.case_id + " has " +
                          std::to_string(view.image_channels) + " image and " +
                          std::to_string(view.label_channels) + " label channels; case " +
                          cases.case_id(0) + " has " +
                          std::to_string(entries_.front().image.size(0)) + " and " +
                          std::to_string(entries_.front().label.size(0)));
      }
      const std::vector<int64_t> sizes = {view.image_channels, view.spatial_shape[0],
                                          view.spatial_shape[1], view.spatial_shape[2]};
      std::vector<int64_t> label_sizes = sizes;
      label_sizes[0] = view.label_channels;
      const at::Tensor image =
          view.image_float32 != nullptr
              ? at::from_blob(const_cast<float*>(view.image_float32), sizes, at::kFloat)
              : at::from_blob(const_cast<uint16_t*>(view.image_float16), sizes, at::kHalf);
      const at::Tensor label =
          view.label != nullptr
              ? at::from_blob(const_cast<uint8_t*>(view.label), label_sizes, at::kByte)
              : at::zeros(label_sizes, at::kByte);
      Entry entry;
      entry.shape = view.spatial_shape;
      // Always a copy: the cache owns its cases, whatever held them before.
      entry.image = pad_to_roi(image, options_.transforms.roi_size)
                        .to(device, image.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
      entry.label = pad_to_roi(label, options_.transforms.roi_size)
                        .to(device, at::kByte, /*non_blocking=*/false, /*copy=*/true);
      bytes_ += entry.image.nbytes() + entry.label.nbytes();
      entries_.push_back(std::move(entry));
    }
  }

  void start_epoch(uint64_t epoch, int64_t steps, int64_t first_step) override {
    epoch_ = epoch;
    const int64_t global_batch = options_.batch_size * options_.world_size;
    order_ = epoch_case_order(static_cast<int64_t>(entries_.size()), steps * global_batch,
                              options_.seed, epoch);
    next_step_ = first_step;
    end_step_ = steps;
  }

  bool next(DeviceBatch& out) override {
    if (next_step_ >= end_step_) return false;
    const Clock::time_point started = Clock::now();
    const int64_t step = next_step_++;
    const int64_t first_sample =
        step * options_.batch_size * options_.world_size + options_.rank * options_.batch_size;
    std::vector<at::Tensor> images, labels;
    for (int64_t i = 0; i < options_.batch_size; ++i) {
      const int64_t global_sample = first_sample + i;
      const Entry& entry = entries_[static_cast<size_t>(order_[global_sample])];
      const SampleDraws draws =
          draw_random_sample(entry.shape, options_.transforms, options_.seed, epoch_,
                             static_cast<uint64_t>(global_sample));
      auto [image, label] = crop(entry, draws);
      images.push_back(std::move(image));
      labels.push_back(std::move(label));
    }
    out.step = step;
    out.batch_size = options_.batch_size;
    out.image = at::stack(images);
    out.label = at::stack(labels).to(at::kFloat);
    out.copy_seconds = seconds_since(started);
    return true;
  }

  int64_t device_bytes() const override { return bytes_; }

 private:
  struct Entry {
    std::array<int64_t, 3> shape{0, 0, 0};  // before padding: the draws' view of the case
    at::Tensor image;                       // [C, X', Y', Z'] as stored, padded to the crop
    at::Tensor label;                       // [L, X', Y', Z'] uint8
  };

  // make_random_sample's crop, flips and intensity changes, as tensor operations, in its order
  // and float32 arithmetic (v * (1 + f) then + o).
  std::pair<at::Tensor, at::Tensor> crop(const Entry& entry, const SampleDraws& draws) const {
    const RandomTransformOptions& t = options_.transforms;
    std::vector<int64_t> flip_dims;
    at::Tensor image = entry.image;
    at::Tensor label = entry.label;
    for (int axis = 0; axis < 3; ++axis) {
      const int64_t start = draws.crop_start[axis];
      image = image.slice(axis + 1, start, start + t.roi_size[axis]);
      label = label.slice(axis + 1, start, start + t.roi_size[axis]);
      if (draws.flipped[axis]) flip_dims.push_back(axis + 1);
    }
    if (!flip_dims.empty()) {
      image = at::flip(image, flip_dims);
      label = at::flip(label, flip_dims);
    }
    image = image.to(at::kFloat);
    const bool intensity = draws.scale != 0.0 || draws.offset != 0.0;
    const float scale = static_cast<float>(1.0 + draws.scale);
    const float offset = static_cast<float>(draws.offset);
    if (t.normalize_crop) image = normalize_nonzero_channelwise(image);
    if (intensity) image = image.mul(scale).add(offset);
    return {image, label};
  }

  BatchLoaderOptions options_;
  std::vector<Entry> entries_;
  int64_t bytes_ = 0;
  uint64_t epoch_ = 0;
  std::vector<int64_t> order_;
  int64_t next_step_ = 0;
  int64_t end_step_ = 0;
};

}  // namespace

std::unique_ptr<DeviceBatches> make_host_batches(BatchLoader& loader, c10::Device device) {
  return std::make_unique<HostBatches>(loader, device);
}

int64_t device_cache_bytes(const TrainingSet& cases, const std::array<int64_t, 3>& roi) {
  int64_t bytes = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const CaseView view = cases.view(i);
    const std::array<int64_t, 3> shape = padded_shape(view.spatial_shape, roi);
    const int64_t voxels = shape[0] * shape[1] * shape[2];
    const int64_t image_bytes = view.image_float32 != nullptr ? 4 : 2;
    bytes += voxels * (view.image_channels * image_bytes + view.label_channels);
  }
  return bytes;
}

std::unique_ptr<DeviceBatches> make_device_cache(const TrainingSet& cases,
                                                 const BatchLoaderOptions& options,
                                                 c10::Device device) {
  return std::make_unique<DeviceCaseCache>(cases, options, device);
}

at::Tensor normalize_nonzero_channelwise(const at::Tensor& image) {
  const int64_t channels = image.size(0);
  const at::Tensor flat = image.reshape({channels, -1});
  const at::Tensor mask = flat != 0;
  const at::Tensor values = flat.to(at::kDouble);
  const at::Tensor count = mask.sum(1, /*keepdim=*/true, at::kDouble).clamp_min(1.0);
  const at::Tensor mean = (values * mask).sum(1, /*keepdim=*/true) / count;
  const at::Tensor centred = (values - mean) * mask;
  at::Tensor std_dev = (centred * centred).sum(1, /*keepdim=*/true).div(count).sqrt();
  std_dev = at::where(std_dev == 0, at::ones_like(std_dev), std_dev);
  const at::Tensor normalised = (flat - mean.to(at::kFloat)) / std_dev.to(at::kFloat);
  return at::where(mask, normalised, flat).reshape(image.sizes());
}

}  // namespace medseg
