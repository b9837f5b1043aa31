#include "util/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdio>

#include "util/error.h"

namespace medseg {
namespace {

int g_rank = 0;  // written once per process by init_logging, before any worker thread starts

}  // namespace

void init_logging(const LogOptions& options) {
  g_rank = options.rank;
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
  if (g_rank != 0) return;
  std::printf("%s=%.6g\n", name.c_str(), value);
  std::fflush(stdout);
}

}  // namespace medseg
