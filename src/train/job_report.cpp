#include "train/job_report.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <vector>

#include "io/tensorboard_events.h"
#include "util/error.h"

namespace medseg {

namespace {

// Every number of `value` as (tag, number), nested objects joined with '/'.
void collect_numbers(const std::string& tag, const nlohmann::json& value,
                     std::vector<std::pair<std::string, double>>& out) {
  if (value.is_number()) {
    out.emplace_back(tag, value.get<double>());
  } else if (value.is_object()) {
    for (const auto& [key, member] : value.items()) collect_numbers(tag + "/" + key, member, out);
  }
}

}  // namespace

JobReport::JobReport(JobReportOptions options, nlohmann::json history)
    : options_(std::move(options)), history_(std::move(history)) {
  if (!options_.writer) return;
  // metrics.jsonl starts from the checkpoint's history: a resumed job's output folder is new.
  metrics_log_ = std::make_unique<std::ofstream>(options_.metrics_path, std::ios::trunc);
  for (const nlohmann::json& entry : history_) *metrics_log_ << entry.dump() << '\n';
  metrics_log_->flush();
  if (options_.tensorboard_dir.empty()) return;
  write_events([&] {
    tensorboard_ = std::make_unique<TensorBoardWriter>(options_.tensorboard_dir);
    if (options_.resumed_at_step >= 0)
      tensorboard_->add_session_start(options_.resumed_at_step + 1);
    tensorboard_->flush();
    spdlog::info("TensorBoard event file {}", tensorboard_->path());
  });
}

JobReport::~JobReport() = default;

template <typename Write>
void JobReport::write_events(Write&& write) {
  try {
    write();
  } catch (const Error& error) {
    spdlog::warn("TensorBoard event files are off for the rest of the job: {}", error.what());
    tensorboard_.reset();
  }
}

void JobReport::record(nlohmann::json entry) {
  if (metrics_log_) {
    *metrics_log_ << entry.dump() << '\n';
    metrics_log_->flush();
  }
  if (tensorboard_) {
    const std::string type = entry.value("type", std::string("metrics"));
    const int64_t step = entry.value("step", int64_t{0});
    std::vector<std::pair<std::string, double>> numbers;
    for (const auto& [key, value] : entry.items()) {
      if (key != "epoch" && key != "step") collect_numbers(type + "/" + key, value, numbers);
    }
    write_events([&] {
      for (const auto& [tag, number] : numbers) tensorboard_->add_scalar(tag, step, number);
      tensorboard_->flush();
    });
  }
  history_.push_back(std::move(entry));
}

void JobReport::add_picture(const std::string& tag, int64_t step, const RgbImage& picture) {
  if (!tensorboard_) return;
  write_events([&] {
    tensorboard_->add_image(tag, step, encode_png(picture), picture.width, picture.height, 3);
    tensorboard_->flush();
  });
}

std::string summary_table(const nlohmann::json& summary) {
  std::vector<std::pair<std::string, double>> rows;
  collect_numbers("", summary, rows);
  size_t width = 0;
  for (auto& row : rows) {
    row.first.erase(0, 1);  // the leading '/'
    width = std::max(width, row.first.size());
  }
  std::string table;
  for (const auto& [name, value] : rows) {
    const bool whole = value == static_cast<double>(static_cast<int64_t>(value));
    table += fmt::format(
        "  {:<{}}  {}\n", name, width,
        whole ? fmt::format("{}", static_cast<int64_t>(value)) : fmt::format("{:.4f}", value));
  }
  return table;
}

}  // namespace medseg
