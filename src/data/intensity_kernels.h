// The loops of NormalizeIntensity(nonzero=True) over one channel: the sum and count of the
// nonzero voxels, the sum of their squared deviations from the mean, and (v - mean) / std applied
// to them; and the finiteness check that comes before. The sums run in 8 float64 partial sums,
// voxel i adding to sum i % 8, added up in the order 0..7 at the end; on CPUs with AVX2 eight
// voxels at a time, else one at a time, with the same operations in the same order, so that both
// give the same bits.
#pragma once

#include <cstdint>

namespace medseg {

struct NonzeroSum {
  double sum = 0.0;   // of the nonzero voxels, as float64
  int64_t count = 0;  // how many voxels are nonzero
};

NonzeroSum nonzero_sum(const float* v, int64_t n);

// sum over the nonzero voxels of (double(v) - mean)^2.
double nonzero_squared_deviations(const float* v, int64_t n, double mean);

// v = (v - mean) / std_dev in float32 for the nonzero voxels; zeros stay as they are.
void normalize_nonzero(float* v, int64_t n, float mean, float std_dev);

// The index of the first NaN or infinity among v[0, n), or -1 when every value is finite.
int64_t first_non_finite(const float* v, int64_t n);

// Whether every one of v[0, n) is 0 (or -0); stops at the first that is not.
bool all_zero(const float* v, int64_t n);

// The same five, one voxel at a time whatever the CPU (what runs without AVX2).
int64_t first_non_finite_portable(const float* v, int64_t n);
bool all_zero_portable(const float* v, int64_t n);
NonzeroSum nonzero_sum_portable(const float* v, int64_t n);
double nonzero_squared_deviations_portable(const float* v, int64_t n, double mean);
void normalize_nonzero_portable(float* v, int64_t n, float mean, float std_dev);

}  // namespace medseg
