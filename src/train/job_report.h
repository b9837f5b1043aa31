// What a training job leaves for the people watching it, besides its log lines: metrics.jsonl
// (one JSON line per progress report and per validation), the same numbers as TensorBoard scalars
// plus the validation picture (io/tensorboard_events.h), and the end-of-job summary.
//
// TensorBoard tags follow the metrics.jsonl entries: "<type>/<key>" for every number of an entry
// ("train/train_loss", "validation/val_dice_et"), "<type>/<key>/<name>" for the numbers of a
// nested object ("train/step_time_share/forward"); the step is the entry's global step. The event
// files are optional: a folder that cannot be written costs a warning, not the job.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "io/png_image.h"

namespace medseg {

class TensorBoardWriter;

struct JobReportOptions {
  bool writer = false;           // this worker writes the files (rank 0)
  std::string metrics_path;      // metrics.jsonl
  std::string tensorboard_dir;   // empty: no event files
  int64_t resumed_at_step = -1;  // a resumed job's checkpoint step: TensorBoard forgets the rest
};

class JobReport {
 public:
  // `history`: the entries of a resumed job's checkpoint (written to metrics.jsonl first).
  JobReport(JobReportOptions options, nlohmann::json history);
  ~JobReport();
  JobReport(const JobReport&) = delete;
  JobReport& operator=(const JobReport&) = delete;

  // An entry with "type" and "step": a metrics.jsonl line and its TensorBoard scalars.
  void record(nlohmann::json entry);
  void add_picture(const std::string& tag, int64_t step, const RgbImage& picture);

  const nlohmann::json& history() const { return history_; }
  bool writes_pictures() const { return tensorboard_ != nullptr; }

 private:
  // Runs a write to the event file; the first failure turns the event files off with a warning.
  template <typename Write>
  void write_events(Write&& write);

  JobReportOptions options_;
  nlohmann::json history_;
  std::unique_ptr<std::ofstream> metrics_log_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

// The end-of-job summary as aligned "name  value" lines for the log, from the "summary" object
// of metrics.json.
std::string summary_table(const nlohmann::json& summary);

}  // namespace medseg
