// The module tree mirrors MONAI 1.4's monai/networks/nets/unet.py (UNet._create_block and the
// _get_*_layer helpers) and monai/networks/blocks/convolutions.py (Convolution, ResidualUnit),
// including registration order and names, so that state-dict keys match character for character.
#include "model/unet.h"

#include <torch/nn/functional/instancenorm.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/instancenorm.h>

#include <algorithm>
#include <string>
#include <utility>

#include "util/error.h"

namespace medseg {
namespace {

using torch::nn::AnyModule;

// nn::Sequential with a concrete forward, so it can nest inside another Sequential or an
// AnyModule (LibTorch's own Sequential::forward is a template, which AnyModule cannot store).
class SequentialImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  torch::Tensor forward(const torch::Tensor& input) {
    return torch::nn::SequentialImpl::forward(input);
  }
};
TORCH_MODULE(Sequential);

std::string join(const std::vector<int64_t>& values) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(values[i]);
  }
  return text + "]";
}

// MONAI's Convolution (an nn.Sequential): "conv" = Conv3d or ConvTranspose3d (kernel 3, "same"
// padding, bias), then unless `conv_only` "adn" = Sequential(N: InstanceNorm3d without affine or
// running statistics, D: Dropout, A: PReLU with one weight initialised to 0.25).
Sequential make_convolution(int64_t in_channels, int64_t out_channels, int64_t stride,
                            bool transposed, bool conv_only, double dropout) {
  Sequential block;
  if (transposed) {
    // output_padding = stride - 1 makes the output exactly `stride` times the input size.
    block->push_back("conv", torch::nn::ConvTranspose3d(
                                 torch::nn::ConvTranspose3dOptions(in_channels, out_channels,
                                                                   /*kernel_size=*/3)
                                     .stride(stride)
                                     .padding(1)
                                     .output_padding(stride - 1)));
  } else {
    block->push_back("conv", torch::nn::Conv3d(torch::nn::Conv3dOptions(in_channels, out_channels,
                                                                        /*kernel_size=*/3)
                                                   .stride(stride)
                                                   .padding(1)));
  }
  if (!conv_only) {
    Sequential adn;
    adn->push_back("N", torch::nn::InstanceNorm3d(torch::nn::InstanceNorm3dOptions(out_channels)
                                                      .affine(false)
                                                      .track_running_stats(false)));
    adn->push_back("D", torch::nn::Dropout(torch::nn::DropoutOptions(dropout)));
    adn->push_back("A", torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(1).init(0.25)));
    block->push_back("adn", adn);
  }
  return block;
}

// MONAI's ResidualUnit: "conv" = Sequential(unit0, unit1, ...) of Convolutions, the first carrying
// the stride; "residual" = Conv3d matching the conv path's shape (kernel 3 and the stride when
// the size changes, kernel 1 when only the channels do), absent (identity) when nothing changes.
// Output = conv path + residual, with no activation after the sum.
class ResidualUnitImpl : public torch::nn::Module {
 public:
  ResidualUnitImpl(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t subunits,
                   bool last_conv_only, double dropout) {
    conv_ = register_module("conv", Sequential());
    subunits = std::max<int64_t>(1, subunits);
    int64_t unit_in = in_channels;
    int64_t unit_stride = stride;
    for (int64_t unit = 0; unit < subunits; ++unit) {
      const bool conv_only = last_conv_only && unit == subunits - 1;
      conv_->push_back("unit" + std::to_string(unit),
                       make_convolution(unit_in, out_channels, unit_stride,
                                        /*transposed=*/false, conv_only, dropout));
      unit_in = out_channels;
      unit_stride = 1;
    }
    if (stride != 1 || in_channels != out_channels) {
      const bool strided = stride != 1;
      residual_ = register_module(
          "residual", torch::nn::Conv3d(torch::nn::Conv3dOptions(in_channels, out_channels,
                                                                 /*kernel_size=*/strided ? 3 : 1)
                                            .stride(stride)
                                            .padding(strided ? 1 : 0)));
    }
  }

  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor residual = residual_ ? residual_->forward(input) : input;
    return conv_->forward(input) + residual;
  }

 private:
  Sequential conv_{nullptr};
  torch::nn::Conv3d residual_{nullptr};
};
TORCH_MODULE(ResidualUnit);

// MONAI's SkipConnection in "cat" mode: output = cat([input, submodule(input)], channels).
class SkipConnectionImpl : public torch::nn::Module {
 public:
  explicit SkipConnectionImpl(AnyModule submodule) : submodule_(std::move(submodule)) {
    register_module("submodule", submodule_.ptr());
  }

  torch::Tensor forward(const torch::Tensor& input) {
    return torch::cat({input, submodule_.forward(input)}, /*dim=*/1);
  }

 private:
  AnyModule submodule_;
};
TORCH_MODULE(SkipConnection);

// UNet._get_down_layer (also the bottom layer, with stride 1).
AnyModule make_down_layer(const UNetOptions& options, int64_t in_channels, int64_t out_channels,
                          int64_t stride) {
  if (options.num_res_units > 0) {
    return AnyModule(ResidualUnit(in_channels, out_channels, stride, options.num_res_units,
                                  /*last_conv_only=*/false, options.dropout));
  }
  return AnyModule(make_convolution(in_channels, out_channels, stride, /*transposed=*/false,
                                    /*conv_only=*/false, options.dropout));
}

// UNet._get_up_layer: a transposed Convolution, followed (with residual units) by a one-unit
// ResidualUnit. At the top the last convolution is bare so the network ends in raw logits.
AnyModule make_up_layer(const UNetOptions& options, int64_t in_channels, int64_t out_channels,
                        int64_t stride, bool is_top) {
  const bool has_res_units = options.num_res_units > 0;
  Sequential up_conv = make_convolution(in_channels, out_channels, stride, /*transposed=*/true,
                                        /*conv_only=*/is_top && !has_res_units, options.dropout);
  if (!has_res_units) {
    return AnyModule(up_conv);
  }
  Sequential up;
  up->push_back(up_conv);
  up->push_back(ResidualUnit(out_channels, out_channels, /*stride=*/1, /*subunits=*/1,
                             /*last_conv_only=*/is_top, options.dropout));
  return AnyModule(up);
}

// UNet._create_block: Sequential(0: down, 1: SkipConnection(next level or bottom), 2: up).
// `level` indexes options.channels/strides.
Sequential make_level(const UNetOptions& options, int64_t in_channels, int64_t out_channels,
                      size_t level) {
  const int64_t channels = options.channels[level];
  const int64_t stride = options.strides[level];
  const bool is_top = level == 0;
  AnyModule below;
  int64_t up_in_channels = 0;
  if (options.channels.size() - level > 2) {
    below = AnyModule(make_level(options, channels, channels, level + 1));
    up_in_channels = 2 * channels;
  } else {
    const int64_t bottom_channels = options.channels[level + 1];
    below = make_down_layer(options, channels, bottom_channels, /*stride=*/1);
    up_in_channels = channels + bottom_channels;
  }
  Sequential block;
  block->push_back(make_down_layer(options, in_channels, channels, stride));
  block->push_back(SkipConnection(std::move(below)));
  block->push_back(make_up_layer(options, up_in_channels, out_channels, stride, is_top));
  return block;
}

}  // namespace

void validate_unet_options(const UNetOptions& options) {
  auto fail = [](const std::string& field, const std::string& value, const std::string& hint) {
    throw ClientError("model." + field + " = " + value + " is invalid: " + hint);
  };
  if (options.in_channels < 1) {
    fail("in_channels", std::to_string(options.in_channels), "must be >= 1");
  }
  if (options.out_channels < 1) {
    fail("out_channels", std::to_string(options.out_channels), "must be >= 1");
  }
  if (options.channels.size() < 2) {
    fail("channels", join(options.channels), "needs at least two levels, e.g. [16, 32]");
  }
  for (int64_t channels : options.channels) {
    if (channels < 1) fail("channels", join(options.channels), "every entry must be >= 1");
  }
  if (options.strides.size() != options.channels.size() - 1) {
    fail("strides", join(options.strides),
         "needs exactly len(channels) - 1 = " + std::to_string(options.channels.size() - 1) +
             " entries");
  }
  for (int64_t stride : options.strides) {
    if (stride < 1) fail("strides", join(options.strides), "every entry must be >= 1");
  }
  if (options.num_res_units < 0) {
    fail("num_res_units", std::to_string(options.num_res_units), "must be >= 0");
  }
  if (!(options.dropout >= 0.0 && options.dropout < 1.0)) {
    fail("dropout", std::to_string(options.dropout), "must be in [0, 1)");
  }
}

UNetImpl::UNetImpl(const UNetOptions& options) : options_(options) {
  validate_unet_options(options_);
  model_ = register_module(
      "model", make_level(options_, options_.in_channels, options_.out_channels, 0).ptr());
}

torch::Tensor UNetImpl::forward(const torch::Tensor& input) { return model_->forward(input); }

int64_t count_parameters(const UNetImpl& unet) {
  int64_t total = 0;
  for (const auto& parameter : unet.parameters()) total += parameter.numel();
  return total;
}

namespace {

// The forward FLOP of the network's pieces, following the construction above.
struct FlopCounter {
  const UNetOptions& options;

  using Grid = std::array<int64_t, 3>;
  static int64_t voxels(const Grid& grid) { return grid[0] * grid[1] * grid[2]; }
  static Grid downsampled(const Grid& grid, int64_t stride) {  // kernel 3, padding 1
    return {(grid[0] + stride - 1) / stride, (grid[1] + stride - 1) / stride,
            (grid[2] + stride - 1) / stride};
  }
  static double convolution(int64_t in, int64_t out, int64_t kernel, int64_t output_voxels) {
    return 2.0 * static_cast<double>(in * out * kernel * kernel * kernel * output_voxels);
  }
  // A ResidualUnit (or a plain convolution block when num_res_units is 0) at `grid` input.
  double unit(int64_t in, int64_t out, int64_t stride, int64_t convolutions,
              const Grid& grid) const {
    const int64_t n = voxels(downsampled(grid, stride));
    double flop = convolution(in, out, 3, n);
    flop +=
        static_cast<double>(std::max<int64_t>(0, convolutions - 1)) * convolution(out, out, 3, n);
    if (options.num_res_units > 0 && (stride != 1 || in != out)) {
      flop += convolution(in, out, stride != 1 ? 3 : 1, n);
    }
    return flop;
  }
  double level(int64_t in, int64_t out, size_t index, const Grid& grid) const {
    const int64_t channels = options.channels[index];
    const int64_t stride = options.strides[index];
    const int64_t convolutions = std::max<int64_t>(1, options.num_res_units);
    const Grid below = downsampled(grid, stride);
    double flop = unit(in, channels, stride, convolutions, grid);
    int64_t up_in = 0;
    if (index + 2 < options.channels.size()) {
      flop += level(channels, channels, index + 1, below);
      up_in = 2 * channels;
    } else {  // the bottom
      const int64_t bottom = options.channels[index + 1];
      flop += unit(channels, bottom, 1, convolutions, below);
      up_in = channels + bottom;
    }
    // The transposed convolution scatters every input voxel through the 3x3x3 kernel.
    flop += convolution(up_in, out, 3, voxels(below));
    if (options.num_res_units > 0) flop += unit(out, out, 1, 1, grid);
    return flop;
  }
};

}  // namespace

double unet_training_flop_per_sample(const UNetOptions& options,
                                     const std::array<int64_t, 3>& roi) {
  validate_unet_options(options);
  const FlopCounter counter{options};
  return 3.0 * counter.level(options.in_channels, options.out_channels, 0, roi);
}

}  // namespace medseg
