#include "data/training_set.h"

#include "data/case_store.h"
#include "io/medseg_record.h"
#include "util/error.h"

namespace medseg {

TrainingSet::TrainingSet(std::vector<CaseData> cases) : in_memory_(std::move(cases)) {
  for (const CaseData& data : in_memory_) {
    if (data.image.size() != static_cast<size_t>(data.image_channels * data.voxels_per_channel()) ||
        data.label.size() != static_cast<size_t>(data.label_channels * data.voxels_per_channel())) {
      throw InternalError("case " + data.case_id +
                          ": image or label buffer does not match its shape");
    }
  }
}

TrainingSet::TrainingSet(std::shared_ptr<const MappedRecordReader> reader,
                         std::vector<size_t> records)
    : reader_(std::move(reader)), records_(std::move(records)) {}

CaseView TrainingSet::view(size_t index) const {
  if (index >= size()) throw InternalError("TrainingSet::view: index out of range");
  if (reader_ == nullptr) return view_of(in_memory_[index]);
  const size_t record = records_[index];
  const RecordHeader& header = reader_->header(record);
  const RecordView payload = reader_->view(record);
  CaseView view;
  view.case_id = &header.case_id;
  view.spatial_shape = header.spatial_shape;
  view.image_channels = header.image_channels;
  view.label_channels = header.label_channels;
  view.image_float32 = payload.image_float32;
  view.image_float16 = payload.image_float16;
  view.label = payload.label;
  return view;
}

const std::string& TrainingSet::case_id(size_t index) const {
  if (index >= size()) throw InternalError("TrainingSet::case_id: index out of range");
  return reader_ == nullptr ? in_memory_[index].case_id : reader_->header(records_[index]).case_id;
}

int64_t TrainingSet::private_bytes() const { return case_bytes(in_memory_); }

int64_t TrainingSet::mapped_bytes() const {
  int64_t bytes = 0;
  for (const size_t record : records_) {
    const RecordHeader& header = reader_->header(record);
    const int64_t value_bytes = header.image_dtype == ImageDType::kFloat16 ? 2 : 4;
    bytes +=
        header.image_values() * value_bytes + header.label_channels * header.voxels_per_channel();
  }
  return bytes;
}

}  // namespace medseg
