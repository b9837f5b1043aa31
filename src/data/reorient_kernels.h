// The transpose Orientation makes of a volume resampled in NIfTI order (x fastest) into medseg's
// C order (z fastest), in 8x8 blocks: eight rows along x are loaded, transposed in registers
// (AVX2; bytes for labels) and stored as eight runs along z. Exact (a copy); it handles the
// flips RAS needs.
#pragma once

#include <array>
#include <cstdint>

namespace medseg {

// dst[j0 * dst_plane + j1 * dst_row + j2] = src[j0 * step[0] + j1 * step[1] + j2 * step[2]] for
// every j < n, where step[0] is +1 or -1 (x stays the first axis, maybe flipped). `src` points at
// the element of j = (0, 0, 0). dst_row (>= n[2]; 0 means n[2]) is the length of dst's runs along
// z and dst_plane (0 means n[1] * dst_row) the distance between its j0 planes, so that a slab
// of z-planes or of y-rows can be written into a larger volume. Returns false, writing nothing,
// when step[0] is neither or the CPU has no AVX2: the caller then copies element by element.
bool transpose_x_rows_to_z_runs(const float* src, const std::array<int64_t, 3>& n,
                                const std::array<int64_t, 3>& step, float* dst, int64_t dst_row = 0,
                                int64_t dst_plane = 0);

// The same for bytes (label volumes).
bool transpose_x_rows_to_z_runs(const uint8_t* src, const std::array<int64_t, 3>& n,
                                const std::array<int64_t, 3>& step, uint8_t* dst,
                                int64_t dst_row = 0, int64_t dst_plane = 0);

// Whether transpose_x_rows_to_z_runs runs on this CPU (for a step[0] of +1 or -1).
bool have_blocked_transpose();

}  // namespace medseg
