#include "sagemaker/metrics.h"

#include <cmath>
#include <cstdio>

namespace medseg {

const std::vector<MetricInfo>& metric_catalog() {
  static const std::vector<MetricInfo> catalog = {
      {"train_loss", "training loss of the global batch, every log_interval steps"},
      {"learning_rate", "learning rate of the last step, every log_interval steps"},
      {"samples_per_second", "training throughput of all workers together"},
      {"gradient_sync_seconds_per_step", "gradient sync not hidden by the backward pass"},
      {"epoch", "epochs completed"},
      {"val_mean_dice", "validation mean Dice over TC, WT and ET (the tuning objective)"},
      {"val_dice_tc", "validation Dice of the tumour core"},
      {"val_dice_wt", "validation Dice of the whole tumour"},
      {"val_dice_et", "validation Dice of the enhancing tumour"},
      {"infer_seconds_per_case", "inference time per case (infer)"},
  };
  return catalog;
}

std::string format_metric_value(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0.0) return "0";
  constexpr int kSignificantDigits = 6;
  const int magnitude = static_cast<int>(std::floor(std::log10(std::fabs(value))));
  // At most 20 decimals: values below 1e-15 print as 0.
  const int decimals = std::min(20, std::max(0, kSignificantDigits - 1 - magnitude));
  char text[512];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  std::string printed = text;
  if (printed.find('.') != std::string::npos) {
    printed.erase(printed.find_last_not_of('0') + 1);
    if (printed.back() == '.') printed.pop_back();
  }
  if (printed == "-0") printed = "0";
  return printed;
}

std::string metric_regex(const std::string& name) { return "\\b" + name + "=(-?[0-9.]+)"; }

nlohmann::json metric_definitions() {
  nlohmann::json definitions = nlohmann::json::array();
  for (const MetricInfo& metric : metric_catalog()) {
    definitions.push_back({{"Name", metric.name}, {"Regex", metric_regex(metric.name)}});
  }
  return definitions;
}

}  // namespace medseg
