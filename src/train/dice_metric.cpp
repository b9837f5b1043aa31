#include "train/dice_metric.h"

#include <ATen/ATen.h>

#include <limits>

#include "util/error.h"

namespace medseg {

void DiceAccumulator::add_case(const at::Tensor& prediction, const at::Tensor& target) {
  if (prediction.sizes() != target.sizes() ||
      prediction.size(0) != static_cast<int64_t>(sums_.size())) {
    throw InternalError("dice metric: prediction and target shapes differ");
  }
  const at::Tensor p = prediction.ne(0).flatten(1).to(at::kDouble);
  const at::Tensor g = target.ne(0).flatten(1).to(at::kDouble);
  const at::Tensor intersection = (p * g).sum(1);
  const at::Tensor truth = g.sum(1);
  const at::Tensor predicted = p.sum(1);
  double case_sum = 0.0;
  int64_t case_channels = 0;
  for (int64_t c = 0; c < static_cast<int64_t>(sums_.size()); ++c) {
    const double truth_voxels = truth[c].item<double>();
    if (truth_voxels == 0.0) continue;  // empty ground truth: skipped, as ignore_empty=True
    const double dice =
        2.0 * intersection[c].item<double>() / (truth_voxels + predicted[c].item<double>());
    sums_[c] += dice;
    ++counts_[c];
    case_sum += dice;
    ++case_channels;
  }
  if (case_channels > 0) {
    case_mean_sum_ += case_sum / static_cast<double>(case_channels);
    ++case_count_;
  }
}

std::vector<double> DiceAccumulator::state() const {
  std::vector<double> state(sums_.begin(), sums_.end());
  for (int64_t count : counts_) state.push_back(static_cast<double>(count));
  state.push_back(case_mean_sum_);
  state.push_back(static_cast<double>(case_count_));
  return state;
}

void DiceAccumulator::set_state(const std::vector<double>& state) {
  const size_t channels = sums_.size();
  if (state.size() != 2 * channels + 2) throw InternalError("dice metric: bad state size");
  for (size_t c = 0; c < channels; ++c) {
    sums_[c] = state[c];
    counts_[c] = static_cast<int64_t>(state[channels + c]);
  }
  case_mean_sum_ = state[2 * channels];
  case_count_ = static_cast<int64_t>(state[2 * channels + 1]);
}

void DiceAccumulator::merge(const DiceAccumulator& other) {
  std::vector<double> combined = state();
  const std::vector<double> theirs = other.state();
  for (size_t i = 0; i < combined.size(); ++i) combined[i] += theirs[i];
  set_state(combined);
}

double DiceAccumulator::channel_mean(int64_t channel) const {
  if (counts_[channel] == 0) return std::numeric_limits<double>::quiet_NaN();
  return sums_[channel] / static_cast<double>(counts_[channel]);
}

double DiceAccumulator::mean() const {
  if (case_count_ == 0) return std::numeric_limits<double>::quiet_NaN();
  return case_mean_sum_ / static_cast<double>(case_count_);
}

}  // namespace medseg
