// MONAI's 3-D UNet (monai.networks.nets.UNet, MONAI 1.4) in LibTorch.
//
// Contract: for equal UNetOptions the module tree, the state-dict names and shapes, and the
// forward output equal MONAI's `UNet(spatial_dims=3, ..., kernel_size=3, up_kernel_size=3,
// act=PReLU, norm=InstanceNorm, bias=True, adn_ordering="NDA")`, so weights move between the two
// by name (see model_io.h). Parameters are initialised by LibTorch's Conv3d/ConvTranspose3d/PReLU
// defaults, which are PyTorch's (same distributions, not the same random numbers as Python).
//
// Input: [N, in_channels, D, H, W] float with every spatial size divisible by the product of
// `strides`; output: [N, out_channels, D, H, W] logits. Keep the bottom level above one voxel
// (default network: inputs >= 32^3): MONAI's InstanceNorm rejects 1x1x1 there, LibTorch's does
// not check and returns zeros. Not thread-safe (like any nn::Module).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace torch::nn {
class SequentialImpl;
}  // namespace torch::nn

namespace medseg {

// The architecture. Defaults are medseg's BraTS network (4,810,074 parameters).
struct UNetOptions {
  // Channels of the input volume (BraTS: FLAIR, T1, T1ce, T2).
  int64_t in_channels = 4;
  // Channels of the output logits (BraTS: tumour core, whole tumour, enhancing tumour).
  int64_t out_channels = 3;
  // Feature channels per level, top first; at least two entries.
  std::vector<int64_t> channels = {16, 32, 64, 128, 256};
  // Down-sampling stride per level; exactly channels.size() - 1 entries, each >= 1. (MONAI
  // ignores extra entries with a warning; medseg rejects them as a likely config mistake.)
  std::vector<int64_t> strides = {2, 2, 2, 2};
  // Convolutions per ResidualUnit in the down path; 0 builds plain conv blocks instead.
  int64_t num_res_units = 2;
  // Dropout probability after each normalisation, in [0, 1).
  double dropout = 0.0;
};

// Throws ClientError naming the field and value when `options` cannot build a network.
void validate_unet_options(const UNetOptions& options);

class UNetImpl : public torch::nn::Module {
 public:
  // REQUIRES: validate_unet_options(options) passes (the constructor calls it).
  explicit UNetImpl(const UNetOptions& options = UNetOptions());

  torch::Tensor forward(const torch::Tensor& input);

  const UNetOptions& options() const { return options_; }

 private:
  UNetOptions options_;
  // Registered as "model", MONAI's attribute name: every state-dict key starts with "model.".
  std::shared_ptr<torch::nn::SequentialImpl> model_;
};
TORCH_MODULE(UNet);

// Number of scalar parameters (MONAI's default network: 4,810,074).
int64_t count_parameters(const UNetImpl& unet);

// Floating-point operations of one training sample of `roi` voxels: 3x the forward pass's
// convolutions (the backward pass computes the input and the weight gradients, each about one
// forward), counted as 2 per multiply-add; normalisation and activations are left out. MONAI's
// default network at 128x128x64: 40.0 GFLOP. The forward count equals what PyTorch's
// FlopCounterMode counts for MONAI's UNet (1.6654 GFLOP at 64x64x32); its count of forward +
// backward is 2% lower than 3x (the input needs no gradient).
double unet_training_flop_per_sample(const UNetOptions& options, const std::array<int64_t, 3>& roi);

}  // namespace medseg
