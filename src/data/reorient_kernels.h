// The transpose Orientation makes of a volume resampled in NIfTI order (x fastest) into medseg's
// C order (z fastest), in 8x8 blocks: eight rows along x are loaded, transposed in registers
// (AVX2) and stored as eight runs along z. Exact (a copy); it handles the flips RAS needs.
#pragma once

#include <array>
#include <cstdint>

namespace medseg {

// dst[(j0 * n[1] + j1) * n[2] + j2] = src[j0 * step[0] + j1 * step[1] + j2 * step[2]] for every
// j < n, where step[0] is +1 or -1 (x stays the first axis, maybe flipped). `src` points at the
// element of j = (0, 0, 0). Returns false, writing nothing, when step[0] is neither or the CPU
// has no AVX2: the caller then copies element by element.
bool transpose_x_rows_to_z_runs(const float* src, const std::array<int64_t, 3>& n,
                                const std::array<int64_t, 3>& step, float* dst);

}  // namespace medseg
