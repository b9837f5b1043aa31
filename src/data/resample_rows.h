// The inner loop of Spacing's trilinear resampling on an axis-aligned grid: one output row along
// x, for every channel. Each voxel is grid_sample's 8-corner sum in float64 in torch's corner
// order, as static_transforms' trilinear() computes it, bit for bit. On CPUs with AVX-512 eight
// voxels at a time (their 8 x taps read from 16 consecutive floats of each input row, picked into
// place by a permutation), with AVX2 four at a time (from 8 floats), else one at a time.
#pragma once

#include <cstdint>
#include <vector>

namespace medseg {

// The instruction sets trilinear_rows can use. Every kernel gives the same bits.
enum class RowKernel { kPortable, kAvx2, kAvx512 };

// The fastest kernel this CPU runs.
RowKernel best_row_kernel();

// Whether this CPU runs `kernel`.
bool cpu_runs(RowKernel kernel);

// Groups of `width` voxels (x = width * g .. width * g + width - 1) whose taps lie within the
// `span` input floats from base[g] inside the row, and each voxel's lanes there (pick0, pick1 per
// voxel). fits[g] is 0 for a group one load cannot serve; it is computed one voxel at a time.
struct VectorGroups {
  std::vector<uint8_t> fits;
  std::vector<int32_t> base, pick0, pick1;
};

// The x taps of an output row (the same for every row of an axis-aligned plan): voxel x reads
// input x0[x] with weight w0[x] and x1[x] with weight w1[x].
struct RowTaps {
  std::vector<int32_t> x0, x1;
  std::vector<double> w0, w1;
  VectorGroups avx2;    // 4 voxels from 8 floats
  VectorGroups avx512;  // 8 voxels from 16 floats
};

// `count` voxels' taps; `row_length` is the input's x size (reads stay inside each row).
RowTaps make_row_taps(const int64_t* x0, const int64_t* x1, const double* w0, const double* w1,
                      int64_t count, int64_t row_length);

// The four input rows a row of output voxels interpolates between, and their weights in y and z.
struct RowCorners {
  int64_t y0z0, y0z1, y1z0, y1z1;  // offsets of the input rows in a channel
  double wy0, wy1, wz0, wz1;
};

// Asks the CPU to start loading the four input rows of `corners` (`row_length` floats each) in
// every channel, so that a later trilinear_rows finds them in cache. A row's reads move through
// its planes 1-2 rows at a time and jump to a new 4 KiB page every few rows, which the hardware
// prefetchers do not follow: without this, half of the resampling waited for memory.
void prefetch_rows(const float* src, int64_t src_channel_stride, int64_t channels,
                   const RowCorners& corners, int64_t row_length);
void prefetch_rows(const int16_t* src, int64_t src_channel_stride, int64_t channels,
                   const RowCorners& corners, int64_t row_length);

// dst[c * dst_channel_stride + x] for every channel c < channels and voxel x of `taps`, from
// src + c * src_channel_stride, with `kernel` (which this CPU must run: cpu_runs).
void trilinear_rows(const float* src, int64_t src_channel_stride, int64_t channels,
                    const RowCorners& corners, const RowTaps& taps, float* dst,
                    int64_t dst_channel_stride, RowKernel kernel = best_row_kernel());

// The same from int16 voxels (an unscaled int16 image, read without widening it to floats
// first): every int16 is exactly a float and a double, so the result has the same bits as
// trilinear_rows of the same values as floats.
void trilinear_rows(const int16_t* src, int64_t src_channel_stride, int64_t channels,
                    const RowCorners& corners, const RowTaps& taps, float* dst,
                    int64_t dst_channel_stride, RowKernel kernel = best_row_kernel());

}  // namespace medseg
