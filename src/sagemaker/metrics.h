// The metrics medseg prints for SageMaker: one `name=value` line on stdout per value, which the
// job's MetricDefinitions regexes read from the instance's log (console graphs, CloudWatch, and
// hyperparameter tuning's objective). The list below is the one place a metric is named:
// `medseg metric-definitions` prints it for `metric_definitions=`, and log_metric() refuses a
// name that is not in it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace medseg {

struct MetricInfo {
  const char* name;
  const char* description;
};

const std::vector<MetricInfo>& metric_catalog();

// A value as the metric line prints it: fixed-point (never an exponent, which the regexes would
// cut short: "1.2e-05" read as 1.2), 6 significant digits, trailing zeros dropped; "nan", "inf"
// and "-inf" for non-finite values (which match no regex, so SageMaker records nothing).
std::string format_metric_value(double value);

// The regex that captures a metric's value from its line.
std::string metric_regex(const std::string& name);

// [{"Name": ..., "Regex": ...}, ...] for every metric, as `metric_definitions=` and
// MetricDefinitions take them (SageMaker allows at most 40).
nlohmann::json metric_definitions();

}  // namespace medseg
