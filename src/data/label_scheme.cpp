#include "data/label_scheme.h"

#include <cmath>
#include <map>
#include <sstream>

#include "util/error.h"

namespace medseg {
namespace {

// Membership of each label value 0..4 in TC, WT, ET; a value a scheme does not allow has none and
// allowed = false.
struct ValueMapping {
  bool allowed;
  uint8_t tc, wt, et;
};

constexpr int kMaxLabelValue = 4;

const ValueMapping* mapping_for(LabelScheme scheme) {
  static const ValueMapping kMsd[kMaxLabelValue + 1] = {
      {true, 0, 0, 0}, {true, 0, 1, 0}, {true, 1, 1, 0}, {true, 1, 1, 1}, {false, 0, 0, 0}};
  static const ValueMapping kBrats[kMaxLabelValue + 1] = {
      {true, 0, 0, 0}, {true, 1, 1, 0}, {true, 0, 1, 0}, {false, 0, 0, 0}, {true, 1, 1, 1}};
  static const ValueMapping kMonaiTutorial[kMaxLabelValue + 1] = {
      {true, 0, 0, 0}, {true, 0, 1, 0}, {true, 1, 1, 1}, {true, 1, 1, 0}, {false, 0, 0, 0}};
  switch (scheme) {
    case LabelScheme::kMsd:
      return kMsd;
    case LabelScheme::kBrats:
      return kBrats;
    case LabelScheme::kMonaiTutorial:
      return kMonaiTutorial;
  }
  throw InternalError("unknown LabelScheme value " + std::to_string(static_cast<int>(scheme)));
}

std::string allowed_values_text(LabelScheme scheme) {
  const ValueMapping* mapping = mapping_for(scheme);
  std::string text;
  for (int value = 0; value <= kMaxLabelValue; ++value) {
    if (!mapping[value].allowed) continue;
    if (!text.empty()) text += ", ";
    text += std::to_string(value);
  }
  return text;
}

// The index of label value `v` in `mapping`, or -1 when the scheme does not allow it (an integer
// test without a float -> int conversion of out-of-range values; NaN fails v >= 0).
inline int allowed_index(float v, const ValueMapping* mapping) {
  if (!(v >= 0.0f && v <= static_cast<float>(kMaxLabelValue))) return -1;
  const int index = static_cast<int>(v);
  return static_cast<float>(index) == v && mapping[index].allowed ? index : -1;
}

// Collects the offending values (a second pass, only taken when the fast pass found one) so the
// message can list each with its voxel count.
[[noreturn]] void throw_bad_values(const float* values, int64_t count, LabelScheme scheme,
                                   const std::string& case_id) {
  const ValueMapping* mapping = mapping_for(scheme);
  std::map<std::string, int64_t> bad;  // printed value -> voxels
  int64_t nan_count = 0;
  for (int64_t i = 0; i < count; ++i) {
    const float v = values[i];
    if (std::isnan(v)) {
      ++nan_count;
      continue;
    }
    if (allowed_index(v, mapping) >= 0) continue;
    std::ostringstream printed;
    printed << v;
    ++bad[printed.str()];
  }
  std::ostringstream message;
  message << "case '" << case_id << "': label ";
  bool first = true;
  int listed = 0;
  for (const auto& [value, voxels] : bad) {
    if (listed++ == 8) {
      message << ", ... (" << bad.size() << " distinct values)";
      break;
    }
    message << (first ? "" : ", ") << "value " << value << " at " << voxels << " voxels";
    first = false;
  }
  if (nan_count > 0) message << (first ? "" : ", ") << "NaN at " << nan_count << " voxels";
  message << "; the " << label_scheme_name(scheme) << " scheme allows "
          << allowed_values_text(scheme)
          << " (choose the label scheme that matches the dataset, or fix the label file)";
  throw ClientError(message.str());
}

}  // namespace

LabelScheme parse_label_scheme(const std::string& name) {
  if (name == "msd") return LabelScheme::kMsd;
  if (name == "brats") return LabelScheme::kBrats;
  if (name == "monai_tutorial") return LabelScheme::kMonaiTutorial;
  throw ClientError("unknown label scheme '" + name +
                    "'; expected one of msd, brats, monai_tutorial");
}

const char* label_scheme_name(LabelScheme scheme) {
  switch (scheme) {
    case LabelScheme::kMsd:
      return "msd";
    case LabelScheme::kBrats:
      return "brats";
    case LabelScheme::kMonaiTutorial:
      return "monai_tutorial";
  }
  return "unknown";
}

void labels_to_channels(const float* values, int64_t count, LabelScheme scheme,
                        const std::string& case_id, uint8_t* channels) {
  const ValueMapping* mapping = mapping_for(scheme);
  uint8_t* tc = channels;
  uint8_t* wt = channels + count;
  uint8_t* et = channels + 2 * count;
  for (int64_t i = 0; i < count; ++i) {
    const int index = allowed_index(values[i], mapping);
    if (index < 0) throw_bad_values(values, count, scheme, case_id);
    const ValueMapping& m = mapping[index];
    tc[i] = m.tc;
    wt[i] = m.wt;
    et[i] = m.et;
  }
}

void check_label_values(const float* values, int64_t count, LabelScheme scheme,
                        const std::string& case_id, uint8_t* bytes) {
  const ValueMapping* mapping = mapping_for(scheme);
  bool all_allowed = true;  // checked once at the end: the loop has no early exit
  for (int64_t i = 0; i < count; ++i) {
    const int index = allowed_index(values[i], mapping);
    all_allowed &= index >= 0;
    bytes[i] = static_cast<uint8_t>(index < 0 ? 0 : index);
  }
  if (!all_allowed) throw_bad_values(values, count, scheme, case_id);
}

void label_bytes_to_channels(const uint8_t* bytes, int64_t count, LabelScheme scheme,
                             uint8_t* channels) {
  const ValueMapping* mapping = mapping_for(scheme);
  uint8_t* tc = channels;
  uint8_t* wt = channels + count;
  uint8_t* et = channels + 2 * count;
  for (int64_t i = 0; i < count; ++i) {
    const ValueMapping& m = mapping[bytes[i] <= kMaxLabelValue ? bytes[i] : 0];
    tc[i] = m.tc;
    wt[i] = m.wt;
    et[i] = m.et;
  }
}

}  // namespace medseg
