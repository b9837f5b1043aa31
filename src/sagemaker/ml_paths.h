// The SageMaker container's directory layout under the ML root (/opt/ml in a real job; a
// temporary directory laid out the same way in tests and local runs).
#pragma once

#include <string>

namespace medseg {

// The ML root: `flag` when non-empty, else $MEDSEG_ML_ROOT, else /opt/ml.
std::string resolve_ml_root(const std::string& flag);

struct MlPaths {
  std::string root;

  std::string config_dir() const { return root + "/input/config"; }
  std::string hyperparameters_file() const { return config_dir() + "/hyperparameters.json"; }
  std::string input_data_config_file() const { return config_dir() + "/inputdataconfig.json"; }
  std::string resource_config_file() const { return config_dir() + "/resourceconfig.json"; }
  std::string checkpoint_config_file() const { return config_dir() + "/checkpointconfig.json"; }
  // Written when the job has a TensorBoardOutputConfig.
  std::string tensorboard_config_file() const {
    return config_dir() + "/tensorboardoutputconfig.json";
  }
  std::string data_dir() const { return root + "/input/data"; }
  // File/FastFile mode: the channel's folder. Pipe mode: FIFOs <channel>_<epoch> beside it.
  std::string channel_dir(const std::string& channel) const { return data_dir() + "/" + channel; }
  std::string model_dir() const { return root + "/model"; }
  std::string output_dir() const { return root + "/output"; }
  std::string output_data_dir() const { return output_dir() + "/data"; }
  std::string failure_file() const { return output_dir() + "/failure"; }
  std::string default_checkpoint_dir() const { return root + "/checkpoints"; }
  std::string default_tensorboard_dir() const { return output_dir() + "/tensorboard"; }
};

}  // namespace medseg
