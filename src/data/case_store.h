// Loads a data set's cases into memory with the static transforms applied once per case
// (data/static_transforms.h), in parallel over cases. This is the "cache" of the training input
// pipeline: random crops are then cut from these buffers every step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/case_data.h"
#include "data/case_discovery.h"
#include "data/static_transforms.h"

namespace medseg {

struct CaseLoadOptions {
  StaticTransformOptions transforms;
  NiftiReadOptions read;
  int threads = 1;  // cases loaded at once
};

// Every case of `index`, in index order. Errors name the case's files.
std::vector<CaseData> load_cases(const DatasetIndex& index, const CaseLoadOptions& options);

// Loads and preprocesses one NIfTI case.
CaseData load_case(const CaseSource& source, const CaseLoadOptions& options);

// Bytes held by the cases' buffers.
int64_t case_bytes(const std::vector<CaseData>& cases);

}  // namespace medseg
