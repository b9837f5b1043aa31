// The configuration a job is given, over arbitrary bytes. The first byte picks the road:
//   0  hyperparameters.json (read_hyperparameters: JSON, SageMaker's stringified values, Python
//      literals), applied to the default configuration and validated, then written back as YAML
//   1  a YAML configuration file (apply_yaml_text), validated, written back as YAML
//   2  one hyperparameter value as SageMaker passes it (decode_hyperparameter_value)
// Every input configures a job or is refused with a ClientError naming what is wrong.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "config/config_loader.h"
#include "fuzz_support.h"
#include "sagemaker/hyperparameters.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int road = data[0] % 3;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  medseg::fuzz::expect_clean([&] {
    medseg::ResolvedConfig resolved;
    if (road == 0) {
      const std::string path = medseg::fuzz::scratch_file(
          "hyperparameters.json", reinterpret_cast<const uint8_t*>(text.data()), text.size());
      medseg::apply_hyperparameters(resolved, medseg::read_hyperparameters(path), path);
    } else if (road == 1) {
      medseg::apply_yaml_text(resolved, text, "fuzz.yaml");
    } else {
      medseg::decode_hyperparameter_value(text);
      return;
    }
    medseg::validate_config(resolved.config);
    medseg::config_to_yaml(resolved);
  });
  return 0;
}
