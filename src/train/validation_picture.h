// The picture a job shows in TensorBoard at each validation: one axial slice of one fixed
// validation case (the slice with the most true whole tumour, so that the tumour is in the
// picture wherever it lies; the middle slice when the case has none), twice side by side, with the
// true masks (left) and the predicted masks (right) drawn as coloured outlines over the first
// modality (grey, windowed to the slice's 1st-99th percentile): WT green, TC yellow, ET red.
// Radiological convention (the patient's right on the left, anterior up); small slices are enlarged
// by an integer factor to at least 240 pixels.
#pragma once

#include <cstdint>

#include "io/case_data.h"
#include "io/png_image.h"

namespace medseg {

// `prediction`: 0/1 masks in the case's layout [label_channels, X, Y, Z] (TC, WT, ET).
// REQUIRES: the case has labels and at least one image channel.
RgbImage validation_picture(const CaseData& data, const uint8_t* prediction);

}  // namespace medseg
