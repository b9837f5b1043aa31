// model.pth: the trained UNet's weights in the file format Python's torch.load reads.
//
// The file is a flat dict of MONAI state-dict name -> CPU tensor ("model.0.conv.unit0.conv.weight"
// -> float32 [16, 4, 3, 3, 3], ...), written by torch::pickle_save, i.e. PyTorch's zip format. In
// Python:
//   state = torch.load("model.pth")      # PyTorch >= 2.6: torch.load(..., weights_only=False)
//   monai.networks.nets.UNet(spatial_dims=3, ...same options...).load_state_dict(state)  # strict
// PyTorch >= 2.6 defaults to weights_only=True, which rejects the dict's type tag
// (torch.jit._pickle.restore_type_tag): pass weights_only=False, or allow-list that function with
// torch.serialization.add_safe_globals.
//
// The resolved configuration does not go into the dict (MONAI's strict load would reject the
// extra key); it is written as YAML beside the weights (model_config_path).
#pragma once

#include <string>

#include "model/unet.h"

namespace medseg {

// The YAML file saved beside `model_path`: "<dir of model_path>/medseg_config.yaml".
std::string model_config_path(const std::string& model_path);

// Writes `unet`'s parameters and buffers (moved to CPU) to `model_path` and, when `config_yaml`
// is not empty, `config_yaml` to model_config_path(model_path) first. Each file is replaced
// atomically (temporary file, fsync, rename), so a reader never sees a partial model.pth.
// PlatformError when a file cannot be written.
void save_model_pth(const std::string& model_path, const UNetImpl& unet,
                    const std::string& config_yaml = "");

// Loads a model.pth (ours, or a Python torch.save of a MONAI UNet state dict) into `unet`,
// strictly: a missing, unexpected or mis-shaped key is a ClientError naming the key (and both
// shapes), as is a file that is not a torch-saved dict of tensors. Values are copied into the
// existing parameters (keeping their device and dtype); nothing is modified unless every key
// matches.
void load_model_pth(const std::string& model_path, UNetImpl& unet);

}  // namespace medseg
