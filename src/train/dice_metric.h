// The validation metric: Dice per channel (TC, WT, ET) of thresholded sigmoid predictions,
// MONAI's DiceMetric(include_background=True, ignore_empty=True). A (case, channel) whose ground
// truth is empty is skipped. channel_mean() is MONAI's reduction="mean_batch" (per channel, the
// mean over cases); mean() is reduction="mean" (per case the mean of its non-skipped channels, then
// the mean over cases that had any).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace medseg {

class DiceAccumulator {
 public:
  explicit DiceAccumulator(int64_t channels) : sums_(channels, 0.0), counts_(channels, 0) {}

  // `prediction` and `target`: binary [C, x, y, z] (any dtype; non-zero = foreground).
  void add_case(const at::Tensor& prediction, const at::Tensor& target);

  // The accumulator as numbers that add up across ranks (sum-reduce them, then restore).
  std::vector<double> state() const;
  void set_state(const std::vector<double>& state);
  void merge(const DiceAccumulator& other);

  // Mean Dice of channel c over the cases where it was not skipped; NaN if always skipped.
  double channel_mean(int64_t channel) const;
  // Mean over cases of each case's mean over its non-skipped channels; NaN if none.
  double mean() const;

  const std::vector<double>& sums() const { return sums_; }
  const std::vector<int64_t>& counts() const { return counts_; }

 private:
  std::vector<double> sums_;     // per channel: sum of Dice over non-skipped cases
  std::vector<int64_t> counts_;  // per channel: non-skipped cases
  double case_mean_sum_ = 0.0;   // sum over cases of the case's channel mean
  int64_t case_count_ = 0;       // cases with at least one non-skipped channel
};

}  // namespace medseg
