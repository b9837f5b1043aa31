#include "util/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <cstdio>

#include "sagemaker/metrics.h"
#include "util/error.h"

namespace medseg {
namespace {

// Written by init_logging, before any worker thread starts.
int g_local_rank = 0;

}  // namespace

void init_logging(const LogOptions& options) {
  g_local_rank = options.local_rank;
  auto logger =
      std::make_shared<spdlog::logger>("medseg", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  const std::string rank_tag =
      options.world_size > 1 ? " [rank " + std::to_string(options.rank) + "]" : "";
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$" + rank_tag + " %v");
  const spdlog::level::level_enum level = spdlog::level::from_str(options.level);
  if (level == spdlog::level::off && options.level != "off") {
    throw ClientError("log.level: unknown level '" + options.level +
                      "' (expected trace, debug, info, warn or error)");
  }
  logger->set_level(options.rank == 0 ? level : std::max(level, spdlog::level::warn));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void log_metric(const std::string& name, double value) {
  const auto& catalog = metric_catalog();
  if (std::none_of(catalog.begin(), catalog.end(),
                   [&](const MetricInfo& metric) { return name == metric.name; })) {
    throw InternalError("metric " + name + " is not in the metric catalogue");
  }
  if (g_local_rank != 0) return;
  std::printf("%s=%s\n", name.c_str(), format_metric_value(value).c_str());
  std::fflush(stdout);
}

}  // namespace medseg
