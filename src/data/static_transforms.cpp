// The .cpp follows the header's order. Where a computation looks roundabout, it repeats the
// arithmetic of MONAI / torch 2.x / numpy operation by operation (the source is named), so that
// round-off, and with it nearest-neighbour ties, falls the same way.
#include "data/static_transforms.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/linspace.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "data/intensity_kernels.h"
#include "data/reorient_kernels.h"
#include "data/resample_rows.h"
#include "util/buffer_pool.h"
#include "util/error.h"

namespace medseg {
namespace {

// ----------------------------------------------------------------------------- small helpers

using Mat4 = Affine;

// Runs body(begin, end) over [0, count) split into `threads` contiguous chunks.
void parallel_for(int64_t count, int threads, const std::function<void(int64_t, int64_t)>& body) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, count));
  if (workers <= 1) {
    body(0, count);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(workers);
  for (int64_t w = 0; w < workers; ++w) {
    pool.emplace_back(body, count * w / workers, count * (w + 1) / workers);
  }
  for (auto& t : pool) t.join();
}

std::string shape_text(const std::array<int64_t, 3>& shape) {
  return std::to_string(shape[0]) + "x" + std::to_string(shape[1]) + "x" + std::to_string(shape[2]);
}

std::string affine_text(const Mat4& a) {
  std::ostringstream out;
  out.precision(6);
  out << "[";
  for (int r = 0; r < 3; ++r) {
    out << (r ? "; " : "");
    for (int c = 0; c < 4; ++c) out << (c ? " " : "") << a[r][c];
  }
  out << "]";
  return out.str();
}

// Row-major product with each entry summed left to right from 0, as numpy's and torch's small
// matrix products do for the entries that matter here.
Mat4 matmul(const Mat4& a, const Mat4& b) {
  Mat4 out{};
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      double acc = 0.0;
      for (int k = 0; k < 4; ++k) acc += a[i][k] * b[k][j];
      out[i][j] = acc;
    }
  }
  return out;
}

// numpy.linalg.solve(a, b) / numpy.linalg.inv (b = I) for 4x4, as LAPACK getrf + getrs compute
// them in OpenBLAS (Debian's numpy): LU with partial pivoting, columns scaled by the pivot's
// reciprocal, triangular solves that multiply by the reciprocal of the diagonal. MONAI 1.4 uses
// numpy for both X = solve(A_in, A_out) and inv(N_out); torch.linalg.solve factors a^T instead
// and gives different round-off, which moves .5 ties (checked on the half_ties fixture).
// Returns false when `a` is singular.
bool solve4(const Mat4& a, const Mat4& b, Mat4* x) {
  Mat4 lu = a;
  Mat4 rhs = b;
  for (int k = 0; k < 4; ++k) {
    int pivot = k;
    for (int i = k + 1; i < 4; ++i) {
      if (std::fabs(lu[i][k]) > std::fabs(lu[pivot][k])) pivot = i;
    }
    if (lu[pivot][k] == 0.0 || !std::isfinite(lu[pivot][k])) return false;
    std::swap(lu[k], lu[pivot]);
    std::swap(rhs[k], rhs[pivot]);
    const double inverse_pivot = 1.0 / lu[k][k];
    for (int i = k + 1; i < 4; ++i) {
      lu[i][k] *= inverse_pivot;
      for (int j = k + 1; j < 4; ++j) lu[i][j] -= lu[i][k] * lu[k][j];
    }
  }
  for (int col = 0; col < 4; ++col) {
    double v[4] = {rhs[0][col], rhs[1][col], rhs[2][col], rhs[3][col]};
    for (int k = 0; k < 4; ++k) {
      for (int i = k + 1; i < 4; ++i) v[i] -= v[k] * lu[i][k];
    }
    for (int k = 3; k >= 0; --k) {
      v[k] *= 1.0 / lu[k][k];
      for (int i = 0; i < k; ++i) v[i] -= v[k] * lu[i][k];
    }
    for (int i = 0; i < 4; ++i) (*x)[i][col] = v[i];
  }
  return true;
}

// ----------------------------------------------------------------------------- channel-first

// NIfTI order (x fastest) -> C order (z fastest) for one channel. Blocks of 16 z-planes: the
// reads are 16 sequential streams, and each (x, y) writes one run of 16 consecutive floats.
// (Tiling x instead, so that output rows are written whole, was slower: 155 read streams.)
void transpose_to_c_order(const float* in, const std::array<int64_t, 3>& shape, float* out) {
  const int64_t nx = shape[0], ny = shape[1], nz = shape[2], plane = nx * ny;
  constexpr int64_t kBlock = 16;
  for (int64_t z0 = 0; z0 < nz; z0 += kBlock) {
    const int64_t z1 = std::min(nz, z0 + kBlock);
    for (int64_t y = 0; y < ny; ++y) {
      for (int64_t x = 0; x < nx; ++x) {
        const float* src = in + x + nx * y;
        float* dst = out + (x * ny + y) * nz;
        for (int64_t z = z0; z < z1; ++z) dst[z] = src[plane * z];
      }
    }
  }
}

bool affines_agree(const Mat4& a, const Mat4& b, double tolerance) {
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) {
      if (!(std::fabs(a[r][c] - b[r][c]) <= tolerance)) return false;
    }
  }
  return true;
}

// ----------------------------------------------------------------------------- Spacing geometry

std::array<double, 3> column_norms(const Mat4& a) {
  std::array<double, 3> norms{};
  for (int c = 0; c < 3; ++c) {
    norms[c] = std::sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]);
  }
  return norms;
}

// MONAI zoom_affine(affine, scale, diagonal=False) (data/utils.py): R = RZS inv(ZS) with
// ZS = chol(RZS^T RZS)^T, new RZS = R diag(sign(diag ZS) |scale|), translation 0.
bool zoom_affine(const Mat4& affine, const std::array<double, 3>& scale, Mat4* out) {
  double gram[3][3];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      gram[i][j] =
          affine[0][i] * affine[0][j] + affine[1][i] * affine[1][j] + affine[2][i] * affine[2][j];
    }
  }
  // Cholesky gram = L L^T; ZS = L^T (upper).
  double l[3][3] = {};
  for (int j = 0; j < 3; ++j) {
    double d = gram[j][j];
    for (int k = 0; k < j; ++k) d -= l[j][k] * l[j][k];
    if (!(d > 0.0)) return false;
    l[j][j] = std::sqrt(d);
    for (int i = j + 1; i < 3; ++i) {
      double s = gram[i][j];
      for (int k = 0; k < j; ++k) s -= l[i][k] * l[j][k];
      l[i][j] = s / l[j][j];
    }
  }
  Mat4 zs = identity_affine();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) zs[i][j] = l[j][i];
  }
  Mat4 zs_inverse;
  if (!solve4(zs, identity_affine(), &zs_inverse)) return false;
  *out = identity_affine();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      double rotation = 0.0;
      for (int k = 0; k < 3; ++k) rotation += affine[i][k] * zs_inverse[k][j];
      const double s = std::copysign(std::fabs(scale[j]), zs[j][j]);
      (*out)[i][j] = rotation * s;
    }
  }
  return true;
}

struct SpacingGeometry {
  std::array<int64_t, 3> output_shape{};
  Mat4 output_affine{};
  std::array<double, 3> output_spacing{};
  bool resample = true;
};

bool all_close(const Mat4& a, const Mat4& b, double atol) {
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) {
      // numpy.allclose: |a - b| <= atol + rtol |b|, rtol = 1e-5.
      if (!(std::fabs(a[r][c] - b[r][c]) <= atol + 1e-5 * std::fabs(b[r][c]))) return false;
    }
  }
  return true;
}

SpacingGeometry spacing_geometry(const Mat4& affine, const std::array<int64_t, 3>& shape,
                                 const std::array<double, 3>& pixdim, const std::string& case_id) {
  SpacingGeometry g;
  const std::array<double, 3> current = column_norms(affine);
  // An MRI voxel is micrometres to centimetres: a spacing of 1e-30 or 1e30 mm is a broken header,
  // which would resample the case to 1x1x1 or to terabytes.
  for (int a = 0; a < 3; ++a) {
    if (!(current[a] >= kMinSpacingMm && current[a] <= kMaxSpacingMm)) {
      throw ClientError("case '" + case_id + "': voxel spacing " + std::to_string(current[a]) +
                        " mm along axis " + std::to_string(a) + " (from the affine " +
                        affine_text(affine) + "); expected " + std::to_string(kMinSpacingMm) +
                        " to " + std::to_string(kMaxSpacingMm) + " mm");
    }
  }
  for (int a = 0; a < 3; ++a) {
    if (!(pixdim[a] > 0.0) || !std::isfinite(pixdim[a])) {
      throw ClientError("case '" + case_id + "': pixdim must be positive, got " +
                        std::to_string(pixdim[a]) + " for axis " + std::to_string(a));
    }
    g.output_spacing[a] = std::fabs(current[a] - pixdim[a]) <= 1e-3 ? current[a] : pixdim[a];
  }
  Mat4 zoomed;
  if (!zoom_affine(affine, g.output_spacing, &zoomed)) {
    throw ClientError("case '" + case_id + "': the image affine " + affine_text(affine) +
                      " is singular; expected three independent voxel axes");
  }
  // compute_shape_offset (data/utils.py): map the corner voxel centres into the new grid.
  Mat4 to_new;
  if (!solve4(zoomed, affine, &to_new)) {
    throw InternalError("case '" + case_id + "': zoomed affine is singular");
  }
  double corners_out[3][8];
  double corners_world[3][8];
  for (int i = 0; i < 8; ++i) {
    const double corner[4] = {(i & 4) ? static_cast<double>(shape[0] - 1) : 0.0,
                              (i & 2) ? static_cast<double>(shape[1] - 1) : 0.0,
                              (i & 1) ? static_cast<double>(shape[2] - 1) : 0.0, 1.0};
    for (int r = 0; r < 3; ++r) {
      double out = 0.0, world = 0.0;
      for (int k = 0; k < 4; ++k) {
        out += to_new[r][k] * corner[k];
        world += affine[r][k] * corner[k];
      }
      corners_out[r][i] = out;
      corners_world[r][i] = world;
    }
  }
  for (int r = 0; r < 3; ++r) {
    const double lo = *std::min_element(corners_out[r], corners_out[r] + 8);
    const double hi = *std::max_element(corners_out[r], corners_out[r] + 8);
    g.output_shape[r] = static_cast<int64_t>(std::nearbyint(hi - lo + 1.0));  // half to even
    if (g.output_shape[r] < 1) g.output_shape[r] = 1;
  }
  int origin_corner = -1;
  for (int i = 0; i < 8 && origin_corner < 0; ++i) {
    bool minimal = true;
    for (int r = 0; r < 3; ++r) {
      double min_difference = corners_out[r][0] - corners_out[r][i];
      for (int j = 1; j < 8; ++j) {
        min_difference = std::min(min_difference, corners_out[r][j] - corners_out[r][i]);
      }
      if (!(std::fabs(min_difference) <= 1e-8)) minimal = false;
    }
    if (minimal) origin_corner = i;
  }
  g.output_affine = zoomed;
  for (int r = 0; r < 3; ++r) {
    if (origin_corner >= 0) {
      g.output_affine[r][3] = corners_world[r][origin_corner];
    } else {  // sheared grids: centre-align the two grids
      double t = affine[r][3];
      for (int k = 0; k < 3; ++k) {
        t += affine[r][k] * (static_cast<double>(shape[k]) / 2.0) -
             zoomed[r][k] * (static_cast<double>(g.output_shape[k]) / 2.0);
      }
      g.output_affine[r][3] = t;
    }
  }
  // spatial_resample's no-op rule (transforms/spatial/functional.py).
  Mat4 xform;
  const bool same_shape = g.output_shape == shape;
  const bool same_grid =
      all_close(affine, g.output_affine, 1e-3) ||
      (solve4(affine, g.output_affine, &xform) && all_close(xform, identity_affine(), 1e-3));
  if (same_shape && same_grid) {
    g.resample = false;
    g.output_affine = affine;
  }
  return g;
}

// ----------------------------------------------------------------------------- Spacing sampling

// affine_grid's base coordinates (align_corners=False): at::linspace(-1, 1, steps) in float64,
// then * (steps - 1) / steps. Computed by the LibTorch medseg links, the one inside Python's torch:
// its CPU kernel (vector width by CPU capability, FMA order) decides the last bits of each
// coordinate, and with them nearest-neighbour ties, so it is called rather than rewritten.
std::vector<double> torch_base_grid(int64_t steps) {
  if (steps <= 1) return std::vector<double>(1, 0.0);  // linspace_from_neg_one: a single 0
  const at::Tensor range = at::linspace(-1.0, 1.0, steps, at::TensorOptions().dtype(at::kDouble))
                               .mul(at::Scalar(steps - 1))
                               .div(at::Scalar(steps));
  const double* values = range.data_ptr<double>();
  return std::vector<double>(values, values + steps);
}

// MONAI normalize_transform(shape, align_corners=False): [diag(2 / n), 1 / n - 1].
Mat4 normalize_transform(const std::array<int64_t, 3>& shape) {
  Mat4 n = identity_affine();
  for (int a = 0; a < 3; ++a) {
    const double size = static_cast<double>(shape[a] <= 0 ? 2 : shape[a]);
    n[a][a] = 2.0 / size;
    n[a][3] = 1.0 / size - 1.0;
  }
  return n;
}

// The sampling plan of one Spacing call. MONAI builds theta = N_in @ X @ inv(N_out) (normalised
// output -> normalised input, x, y, z order; X = solve(A_in, A_out)), reverses it to torch's
// (W, H, D) = (z, y, x) order and calls affine_grid + grid_sample. affine_grid is a GEMM of the
// base grid rows (bW, bH, bD, 1) with theta^T, which OpenBLAS accumulates with FMAs in that k
// order; grid_sample then unnormalises ((g + 1) n - 1) / 2 and clamps to [0, n - 1] (border).
struct SamplingPlan {
  std::array<int64_t, 3> in_shape{};
  std::array<int64_t, 3> out_shape{};
  Mat4 theta{};
  std::array<std::vector<double>, 3> base;  // torch_base_grid of each output axis
  // partial[a][y * Z + z] = fma(bH[y], theta[a][1], bW[z] * theta[a][2]): the first two GEMM
  // steps, shared by every x.
  std::array<std::vector<double>, 3> partial;
  // theta's off-diagonal terms are 0 or round-off (< 1e-10): each coordinate is then, up to
  // ~1e-15, a function of its own output index, and per-axis tables serve the interpolation.
  bool axis_aligned = false;

  // Input voxel coordinate along axis `a` of output voxel (x, y, z), exactly as torch computes it.
  double source(int a, int64_t x, int64_t y, int64_t z) const {
    const double g =
        std::fma(base[0][x], theta[a][0], partial[a][y * out_shape[2] + z]) + theta[a][3];
    const double size = static_cast<double>(in_shape[a]);
    const double coord = ((g + 1.0) * size - 1.0) / 2.0;
    return std::min(size - 1.0, std::max(coord, 0.0));
  }
};

// theta @ b with each entry accumulated by FMAs from 0 (OpenBLAS dgemm).
Mat4 matmul_fma(const Mat4& a, const Mat4& b) {
  Mat4 out{};
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      double acc = 0.0;
      for (int k = 0; k < 4; ++k) acc = std::fma(a[i][k], b[k][j], acc);
      out[i][j] = acc;
    }
  }
  return out;
}

SamplingPlan make_plan(const Mat4& in_affine, const Mat4& out_affine,
                       const std::array<int64_t, 3>& in_shape,
                       const std::array<int64_t, 3>& out_shape, const std::string& case_id) {
  SamplingPlan plan;
  plan.in_shape = in_shape;
  plan.out_shape = out_shape;
  Mat4 xform;  // output voxel -> input voxel
  if (!solve4(in_affine, out_affine, &xform)) {
    throw ClientError("case '" + case_id + "': the image affine " + affine_text(in_affine) +
                      " is singular; expected three independent voxel axes");
  }
  Mat4 dst_inverse;
  solve4(normalize_transform(out_shape), identity_affine(), &dst_inverse);
  // to_norm_affine: (src_xform @ xform) @ inverse(dst_xform); the first product is torch's
  // naive small-bmm loop, the second a BLAS GEMM.
  plan.theta = matmul_fma(matmul(normalize_transform(in_shape), xform), dst_inverse);
  for (int a = 0; a < 3; ++a) plan.base[a] = torch_base_grid(out_shape[a]);
  const int64_t ny = out_shape[1], nz = out_shape[2];
  for (int a = 0; a < 3; ++a) {
    plan.partial[a].resize(ny * nz);
    for (int64_t y = 0; y < ny; ++y) {
      for (int64_t z = 0; z < nz; ++z) {
        plan.partial[a][y * nz + z] =
            std::fma(plan.base[1][y], plan.theta[a][1], plan.base[2][z] * plan.theta[a][2]);
      }
    }
  }
  plan.axis_aligned = true;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) {
      if (r != c && !(std::fabs(plan.theta[r][c]) < 1e-10)) plan.axis_aligned = false;
    }
  }
  return plan;
}

// Linear interpolation taps of one axis (torch grid_sampler_3d, bilinear): floor, floor + 1
// (clamped: its weight is 0 there), weights (i0 + 1 - c, c - i0); and the nearest index, which
// torch 2.x's 3-D grid_sampler takes with nearbyint (half to even; torch 1.13 rounded half away
// from zero). Checked against MONAI on the .5 ties of the half_ties fixture.
struct Taps {
  int64_t i0, i1;
  double w0, w1;
  int64_t nearest;
  bool near_tie;  // within 1e-6 of a .5: the exact coordinate decides (axis-aligned tables)
};

Taps taps_for(double coord, int64_t size) {
  Taps t;
  const double floor_coord = std::floor(coord);
  t.i0 = static_cast<int64_t>(floor_coord);
  t.i1 = std::min(t.i0 + 1, size - 1);
  t.w0 = (floor_coord + 1.0) - coord;
  t.w1 = coord - floor_coord;
  t.nearest = static_cast<int64_t>(std::nearbyint(coord));
  t.near_tie = std::fabs(t.w1 - 0.5) < 1e-6;
  return t;
}

// One output voxel of grid_sample(bilinear) on a float32 channel whose x, y, z strides are sx,
// sy, sz (C order: sz = 1; NIfTI order: sx = 1), accumulated in float64 in torch's corner order
// (x is torch's D, z its W); weights (wz * wy) * wx.
template <typename T>
inline double trilinear(const T* in, int64_t sx, int64_t sy, int64_t sz, const Taps& tx,
                        const Taps& ty, const Taps& tz) {
  const T* p00 = in + tx.i0 * sx + ty.i0 * sy;
  const T* p01 = in + tx.i0 * sx + ty.i1 * sy;
  const T* p10 = in + tx.i1 * sx + ty.i0 * sy;
  const T* p11 = in + tx.i1 * sx + ty.i1 * sy;
  const int64_t z0 = tz.i0 * sz, z1 = tz.i1 * sz;
  double out = 0.0;
  out += static_cast<double>(p00[z0]) * (tz.w0 * ty.w0 * tx.w0);
  out += static_cast<double>(p00[z1]) * (tz.w1 * ty.w0 * tx.w0);
  out += static_cast<double>(p01[z0]) * (tz.w0 * ty.w1 * tx.w0);
  out += static_cast<double>(p01[z1]) * (tz.w1 * ty.w1 * tx.w0);
  out += static_cast<double>(p10[z0]) * (tz.w0 * ty.w0 * tx.w1);
  out += static_cast<double>(p10[z1]) * (tz.w1 * ty.w0 * tx.w1);
  out += static_cast<double>(p11[z0]) * (tz.w0 * ty.w1 * tx.w1);
  out += static_cast<double>(p11[z1]) * (tz.w1 * ty.w1 * tx.w1);
  return out;
}

// Per-axis tap tables of an axis-aligned plan (empty otherwise): the coordinates along the first
// row of each axis.
std::array<std::vector<Taps>, 3> axis_tables(const SamplingPlan& plan) {
  std::array<std::vector<Taps>, 3> table;
  if (!plan.axis_aligned) return table;
  for (int a = 0; a < 3; ++a) {
    table[a].resize(plan.out_shape[a]);
    for (int64_t j = 0; j < plan.out_shape[a]; ++j) {
      const double coord = plan.source(a, a == 0 ? j : 0, a == 1 ? j : 0, a == 2 ? j : 0);
      table[a][j] = taps_for(coord, plan.in_shape[a]);
    }
  }
  return table;
}

// The nearest input voxel of output voxel (x, y, z) from its taps; on an axis-aligned plan a tap
// within 1e-6 of a .5 tie is decided by the voxel's exact coordinate.
inline int64_t nearest_offset(const SamplingPlan& plan, const Taps& px, const Taps& py,
                              const Taps& pz, int64_t x, int64_t y, int64_t z, int64_t sx,
                              int64_t sy, int64_t sz) {
  int64_t ix = px.nearest, iy = py.nearest, iz = pz.nearest;
  if (plan.axis_aligned) {
    if (px.near_tie) ix = static_cast<int64_t>(std::nearbyint(plan.source(0, x, y, z)));
    if (py.near_tie) iy = static_cast<int64_t>(std::nearbyint(plan.source(1, x, y, z)));
    if (pz.near_tie) iz = static_cast<int64_t>(std::nearbyint(plan.source(2, x, y, z)));
  }
  return ix * sx + iy * sy + iz * sz;
}

void resample(const SamplingPlan& plan, int64_t image_channels, const std::vector<float>& image,
              int64_t label_channels, const std::vector<uint8_t>& label,
              std::vector<float>* image_out, std::vector<uint8_t>* label_out, int threads) {
  const auto& in = plan.in_shape;
  const auto& out = plan.out_shape;
  const int64_t in_voxels = in[0] * in[1] * in[2];
  const int64_t out_voxels = out[0] * out[1] * out[2];
  const int64_t sx = in[1] * in[2], sy = in[2];
  image_out->resize(image_channels * out_voxels);
  label_out->resize(label_channels * out_voxels);
  const std::array<std::vector<Taps>, 3> table = axis_tables(plan);
  parallel_for(out[0], threads, [&](int64_t x_begin, int64_t x_end) {
    std::vector<Taps> row_x(out[2]), row_y(out[2]), row_z(out[2]);
    std::vector<int64_t> nearest(out[2]);
    for (int64_t x = x_begin; x < x_end; ++x) {
      for (int64_t y = 0; y < out[1]; ++y) {
        const Taps* tx;
        const Taps* ty;
        const Taps* tz;
        int64_t step_xy = 0;  // 0: the x and y taps are the same for the whole row
        if (plan.axis_aligned) {
          tx = &table[0][x];
          ty = &table[1][y];
          tz = table[2].data();
        } else {
          for (int64_t z = 0; z < out[2]; ++z) {
            row_x[z] = taps_for(plan.source(0, x, y, z), in[0]);
            row_y[z] = taps_for(plan.source(1, x, y, z), in[1]);
            row_z[z] = taps_for(plan.source(2, x, y, z), in[2]);
          }
          tx = row_x.data();
          ty = row_y.data();
          tz = row_z.data();
          step_xy = 1;
        }
        const int64_t out_row = (x * out[1] + y) * out[2];
        for (int64_t c = 0; c < image_channels; ++c) {
          const float* src = image.data() + c * in_voxels;
          float* dst = image_out->data() + c * out_voxels + out_row;
          for (int64_t z = 0; z < out[2]; ++z) {
            dst[z] = static_cast<float>(
                trilinear(src, sx, sy, 1, tx[z * step_xy], ty[z * step_xy], tz[z]));
          }
        }
        if (label_channels == 0) continue;
        for (int64_t z = 0; z < out[2]; ++z) {
          nearest[z] =
              nearest_offset(plan, tx[z * step_xy], ty[z * step_xy], tz[z], x, y, z, sx, sy, 1);
        }
        for (int64_t c = 0; c < label_channels; ++c) {
          const uint8_t* src = label.data() + c * in_voxels;
          uint8_t* dst = label_out->data() + c * out_voxels + out_row;
          for (int64_t z = 0; z < out[2]; ++z) dst[z] = src[nearest[z]];
        }
      }
    }
  });
}

// An axis-aligned or general plan's per-axis taps, prepared once for every row
// resample_planes computes.
struct NiftiOrderRows {
  std::array<std::vector<Taps>, 3> table;
  RowTaps row_taps;  // an axis-aligned plan's x taps, the same for every row
  // An axis-aligned plan's nearest x voxels serve every row whose taps have no .5 tie to decide,
  // and every row when theta's off-diagonal terms are exactly 0: each coordinate is then exactly
  // the one its table was made from, ties included.
  std::vector<int64_t> nearest_x;
  bool x_ties = false;
  bool exact_axes = false;
};

NiftiOrderRows prepare_nifti_order_rows(const SamplingPlan& plan) {
  const auto& in = plan.in_shape;
  const auto& out = plan.out_shape;
  NiftiOrderRows rows;
  rows.table = axis_tables(plan);
  if (plan.axis_aligned) {
    std::vector<int64_t> x0, x1;
    std::vector<double> w0, w1;
    for (const Taps& t : rows.table[0]) {
      x0.push_back(t.i0);
      x1.push_back(t.i1);
      w0.push_back(t.w0);
      w1.push_back(t.w1);
    }
    rows.row_taps = make_row_taps(x0.data(), x1.data(), w0.data(), w1.data(), out[0], in[0]);
  }
  for (const Taps& t : rows.table[0]) {
    rows.nearest_x.push_back(t.nearest);
    rows.x_ties |= t.near_tie;
  }
  rows.exact_axes = plan.axis_aligned;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) rows.exact_axes &= r == c || plan.theta[r][c] == 0.0;
  }
  return rows;
}

// Output rows (y, z), y in [y_begin, y_end) and z in [z_begin, z_end), of the resampling from and
// to NIfTI order: image channel c's row (y, z) goes to image_out + c * image_out_stride +
// ((z - z_begin) * (y_end - y_begin) + y - y_begin) * X, and the labels' rows to their place in
// the whole output volume. T: float, or int16 (an unscaled int16 image's voxels as decoded,
// which give the same values).
template <typename T>
void resample_planes(const SamplingPlan& plan, const NiftiOrderRows& rows, int64_t image_channels,
                     const T* image, int64_t label_channels, const uint8_t* label, int64_t y_begin,
                     int64_t y_end, int64_t z_begin, int64_t z_end, float* image_out,
                     int64_t image_out_stride, uint8_t* label_out) {
  const auto& in = plan.in_shape;
  const auto& out = plan.out_shape;
  const int64_t in_voxels = in[0] * in[1] * in[2];
  const int64_t out_voxels = out[0] * out[1] * out[2];
  const int64_t sx = 1, sy = in[0], sz = in[0] * in[1];
  const auto& table = rows.table;
  const RowTaps& row_taps = rows.row_taps;
  const std::vector<int64_t>& nearest_x = rows.nearest_x;
  const bool x_ties = rows.x_ties, exact_axes = rows.exact_axes;
  // The four input rows output row (y, z) of an axis-aligned plan interpolates between.
  const auto corners_of = [&](int64_t y, int64_t z) {
    const Taps& ty = table[1][y];
    const Taps& tz = table[2][z];
    return RowCorners{ty.i0 * sy + tz.i0 * sz,
                      ty.i0 * sy + tz.i1 * sz,
                      ty.i1 * sy + tz.i0 * sz,
                      ty.i1 * sy + tz.i1 * sz,
                      ty.w0,
                      ty.w1,
                      tz.w0,
                      tz.w1};
  };
  // Rows ahead whose input is prefetched: the work of a few rows covers memory's latency.
  constexpr int64_t kPrefetchRows = 4;
  std::vector<Taps> row_x(out[0]), row_y(out[0]), row_z(out[0]);
  std::vector<int64_t> nearest(out[0]);
  const int64_t rows_per_plane = y_end - y_begin, row_count = (z_end - z_begin) * rows_per_plane;
  for (int64_t z = z_begin; z < z_end; ++z) {
    for (int64_t y = y_begin; y < y_end; ++y) {
      const Taps* tx;
      const Taps* ty;
      const Taps* tz;
      int64_t step_yz = 0;  // 0: the y and z taps are the same for the whole row
      if (plan.axis_aligned) {
        tx = table[0].data();
        ty = &table[1][y];
        tz = &table[2][z];
      } else {
        for (int64_t x = 0; x < out[0]; ++x) {
          row_x[x] = taps_for(plan.source(0, x, y, z), in[0]);
          row_y[x] = taps_for(plan.source(1, x, y, z), in[1]);
          row_z[x] = taps_for(plan.source(2, x, y, z), in[2]);
        }
        tx = row_x.data();
        ty = row_y.data();
        tz = row_z.data();
        step_yz = 1;
      }
      const int64_t out_row = (z * out[1] + y) * out[0];
      const int64_t row_index = (z - z_begin) * rows_per_plane + y - y_begin;
      const int64_t image_row = row_index * out[0];
      if (image_channels > 0 && plan.axis_aligned) {
        const int64_t ahead = row_index + kPrefetchRows;  // in this call's rows
        if (ahead < row_count) {
          prefetch_rows(
              image, in_voxels, image_channels,
              corners_of(y_begin + ahead % rows_per_plane, z_begin + ahead / rows_per_plane),
              in[0]);
        }
        trilinear_rows(image, in_voxels, image_channels, corners_of(y, z), row_taps,
                       image_out + image_row, image_out_stride);
      } else {  // a general plan's rows, voxel by voxel (none when only labels are resampled)
        for (int64_t c = 0; c < image_channels; ++c) {
          const T* src = image + c * in_voxels;
          float* dst = image_out + c * image_out_stride + image_row;
          for (int64_t x = 0; x < out[0]; ++x) {
            dst[x] = static_cast<float>(
                trilinear(src, sx, sy, sz, tx[x], ty[x * step_yz], tz[x * step_yz]));
          }
        }
      }
      if (label_channels == 0) continue;
      if (exact_axes || (plan.axis_aligned && !x_ties && !ty->near_tie && !tz->near_tie)) {
        // nearest_offset with no tie to decide: one input row, the table's x voxels.
        const int64_t row = ty->nearest * sy + tz->nearest * sz;
        for (int64_t c = 0; c < label_channels; ++c) {
          const uint8_t* src = label + c * in_voxels + row;
          uint8_t* dst = label_out + c * out_voxels + out_row;
          for (int64_t x = 0; x < out[0]; ++x) dst[x] = src[nearest_x[x]];
        }
        continue;
      }
      for (int64_t x = 0; x < out[0]; ++x) {
        nearest[x] =
            nearest_offset(plan, tx[x], ty[x * step_yz], tz[x * step_yz], x, y, z, sx, sy, sz);
      }
      for (int64_t c = 0; c < label_channels; ++c) {
        const uint8_t* src = label + c * in_voxels;
        uint8_t* dst = label_out + c * out_voxels + out_row;
        for (int64_t x = 0; x < out[0]; ++x) dst[x] = src[nearest[x]];
      }
    }
  }
}

// The same resampling from and to NIfTI order (x fastest: in[(z * Y + y) * X + x], and so the
// output), so that the input needs no transpose first: rows run along x, which both the reads
// and the writes follow. Every voxel is computed as resample() computes it (bit-identical).
void resample_nifti_order(const SamplingPlan& plan, int64_t image_channels, const float* image,
                          int64_t label_channels, const uint8_t* label, float* image_out,
                          uint8_t* label_out, int threads) {
  const NiftiOrderRows rows = prepare_nifti_order_rows(plan);
  const auto& out = plan.out_shape;
  const int64_t out_voxels = out[0] * out[1] * out[2];
  parallel_for(out[2], threads, [&](int64_t z_begin, int64_t z_end) {
    resample_planes<float>(plan, rows, image_channels, image, label_channels, label, 0, out[1],
                           z_begin, z_end, image_out + z_begin * out[0] * out[1], out_voxels,
                           label_out);
  });
}

// ----------------------------------------------------------------------------- Orientation

// nibabel io_orientation: for each voxel axis, [world axis, +1 / -1].
std::array<std::array<int, 2>, 3> io_orientation(const Mat4& affine) {
  // RS = RZS / column norms; R = polar factor of RS (closest orthogonal matrix), here by Newton's
  // iteration R <- (R + R^-T) / 2, which converges to the same matrix as nibabel's SVD.
  const std::array<double, 3> zooms = column_norms(affine);
  Mat4 r = identity_affine();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) r[i][j] = affine[i][j] / (zooms[j] == 0.0 ? 1.0 : zooms[j]);
  }
  for (int iteration = 0; iteration < 100; ++iteration) {
    Mat4 inverse;
    if (!solve4(r, identity_affine(), &inverse)) break;
    double change = 0.0;
    Mat4 next = r;
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        next[i][j] = 0.5 * (r[i][j] + inverse[j][i]);
        change = std::max(change, std::fabs(next[i][j] - r[i][j]));
      }
    }
    r = next;
    if (change < 1e-15) break;
  }
  std::array<std::array<int, 2>, 3> ornt{};
  for (int in_axis = 0; in_axis < 3; ++in_axis) {
    int out_axis = 0;
    for (int i = 1; i < 3; ++i) {
      if (std::fabs(r[i][in_axis]) > std::fabs(r[out_axis][in_axis])) out_axis = i;
    }
    ornt[in_axis] = {out_axis, r[out_axis][in_axis] < 0 ? -1 : 1};
    for (int j = 0; j < 3; ++j) r[out_axis][j] = 0.0;
  }
  return ornt;
}

// out[c][j0][j1][j2] = in[c][i0][i1][i2], with input axis a = output axis ornt[a][0], flipped when
// ornt[a][1] < 0.
// `in_stride`: of the input's axes (C order by default; NIfTI order is {1, X, X * Y}).
template <typename T>
void flip_transpose(const std::vector<T>& in, int64_t channels,
                    const std::array<int64_t, 3>& in_shape,
                    const std::array<std::array<int, 2>, 3>& ornt,
                    const std::array<int64_t, 3>& out_shape, std::vector<T>* out, int threads,
                    std::array<int64_t, 3> in_stride = {0, 0, 0}) {
  if (in_stride == std::array<int64_t, 3>{0, 0, 0}) {
    in_stride = {in_shape[1] * in_shape[2], in_shape[2], 1};
  }
  std::array<int64_t, 3> out_step{};  // input offset change per output index step, per out axis
  int64_t origin = 0;                 // input offset of output voxel (0, 0, 0)
  for (int a = 0; a < 3; ++a) {
    const int k = ornt[a][0];
    if (ornt[a][1] < 0) {
      out_step[k] = -in_stride[a];
      origin += (in_shape[a] - 1) * in_stride[a];
    } else {
      out_step[k] = in_stride[a];
    }
  }
  const int64_t voxels = in_shape[0] * in_shape[1] * in_shape[2];
  out->resize(in.size());
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, uint8_t>) {
    // A volume resampled in NIfTI order whose x stays the first axis: 8x8 register transposes.
    if (out_step[0] == 1 || out_step[0] == -1) {
      std::atomic<bool> done{true};
      parallel_for(channels, threads, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          if (!transpose_x_rows_to_z_runs(in.data() + c * voxels + origin, out_shape, out_step,
                                          out->data() + c * voxels)) {
            done = false;
          }
        }
      });
      if (done) return;
    }
  }
  // In cubes of kTile^3 voxels: whichever output axis the input's contiguous axis becomes, a
  // cube's reads touch kTile^2 short runs of cache lines and its writes kTile^2 short rows, all
  // in cache, instead of one cache line per voxel read when the axes are transposed.
  constexpr int64_t kTile = 16;
  const int64_t tiles0 = (out_shape[0] + kTile - 1) / kTile;
  const int64_t row = out_shape[2], plane = out_shape[1] * out_shape[2];
  parallel_for(channels * tiles0, threads, [&](int64_t begin, int64_t end) {
    for (int64_t ct = begin; ct < end; ++ct) {
      const int64_t c = ct / tiles0, t0 = (ct % tiles0) * kTile;
      const T* src_channel = in.data() + c * voxels + origin;
      T* dst_channel = out->data() + c * voxels;
      const int64_t e0 = std::min(out_shape[0], t0 + kTile);
      for (int64_t t1 = 0; t1 < out_shape[1]; t1 += kTile) {
        const int64_t e1 = std::min(out_shape[1], t1 + kTile);
        for (int64_t t2 = 0; t2 < out_shape[2]; t2 += kTile) {
          const int64_t e2 = std::min(out_shape[2], t2 + kTile);
          for (int64_t j0 = t0; j0 < e0; ++j0) {
            for (int64_t j1 = t1; j1 < e1; ++j1) {
              const T* src = src_channel + j0 * out_step[0] + j1 * out_step[1];
              T* dst = dst_channel + j0 * plane + j1 * row;
              for (int64_t j2 = t2; j2 < e2; ++j2) dst[j2] = src[j2 * out_step[2]];
            }
          }
        }
      }
    }
  });
}

// A buffer of `size` elements from the thread's pool when there is one, else a fresh one. Its
// contents are unspecified: every caller overwrites them.
template <typename T>
std::vector<T> take_buffer(CaseBuffers* buffers, size_t size) {
  if (buffers == nullptr) return std::vector<T>(size);
  if constexpr (std::is_same_v<T, float>) {
    return buffers->floats.take(size);
  } else {
    return buffers->bytes.take(size);
  }
}

template <typename T>
void give_buffer(CaseBuffers* buffers, std::vector<T>&& buffer) {
  if (buffers == nullptr) return;
  if constexpr (std::is_same_v<T, float>) {
    buffers->floats.give(std::move(buffer));
  } else {
    buffers->bytes.give(std::move(buffer));
  }
}

}  // namespace

// ----------------------------------------------------------------------------- public API

namespace {

// Refuses a channel of `voxels` values that are all zero.
[[noreturn]] void throw_empty_channel(int64_t c, const std::string& case_id) {
  throw ClientError("case '" + case_id + "': image channel " + std::to_string(c) +
                    " is zero everywhere; expected a modality with content (a missing or broken "
                    "modality file?)");
}

void check_channels_have_content(const float* values, int64_t voxels, int64_t channels,
                                 const std::string& case_id) {
  for (int64_t c = 0; c < channels; ++c) {
    if (all_zero(values + c * voxels, voxels)) throw_empty_channel(c, case_id);
  }
}

// EnsureChannelFirst's checks of a case as loaded: the modality count, the data size, no all-zero
// channel (unless allowed), and a label on the image's grid. Channel c of the NIfTI data is the
// contiguous block [c * voxels, (c + 1) * voxels) in either voxel order. With
// check_empty_channels false the caller checks the channels it computes instead.
void check_loaded_case(const NiftiVolume& image, const NiftiVolume* label,
                       const StaticTransformOptions& options, const std::string& case_id,
                       bool check_empty_channels = true) {
  const std::array<int64_t, 3> shape{image.dim[0], image.dim[1], image.dim[2]};
  const int64_t channels = image.ndim >= 4 ? image.dim[3] : 1;
  if (options.expected_channels > 0 && channels != options.expected_channels) {
    throw ClientError("case '" + case_id + "': the image has " + std::to_string(channels) +
                      " modalities (shape " + shape_text(shape) + "x" + std::to_string(channels) +
                      "), expected " + std::to_string(options.expected_channels) +
                      " in the 4th axis (a missing modality?)");
  }
  const int64_t voxels = shape[0] * shape[1] * shape[2];
  // Voxels held after first_voxel; raw int16 ones two per float (the last float maybe half).
  const int64_t held =
      static_cast<int64_t>(image.data.size()) * (image.raw_int16 ? 2 : 1) - image.first_voxel;
  if (held - voxels * channels < 0 || held - voxels * channels > (image.raw_int16 ? 1 : 0) ||
      voxels <= 0) {
    throw InternalError("case '" + case_id + "': image data size " + std::to_string(held) +
                        " does not match its header");
  }
  if (check_empty_channels && !options.allow_empty_channels) {
    check_channels_have_content(image.voxels(), voxels, channels, case_id);
  }
  if (label == nullptr) return;
  const std::array<int64_t, 3> label_shape{label->dim[0], label->dim[1], label->dim[2]};
  const int64_t label_frames = label->ndim >= 4 ? label->dim[3] : 1;
  if (label_shape != shape || label_frames != 1) {
    throw ClientError("case '" + case_id + "': the label's shape " + shape_text(label_shape) +
                      (label_frames != 1 ? "x" + std::to_string(label_frames) : "") +
                      " differs from the image's spatial shape " + shape_text(shape) +
                      "; expected one 3-D label on the image's grid");
  }
  if (!affines_agree(label->affine, image.affine, 1e-3)) {
    throw ClientError("case '" + case_id + "': the label's affine " + affine_text(label->affine) +
                      " differs from the image's " + affine_text(image.affine) +
                      " (by more than 1e-3); expected the label on the image's grid");
  }
}

// The refusal of a resampled case larger than max_output_bytes (data.max_case_mb).
void check_resampled_size(const SpacingGeometry& g, const std::array<int64_t, 3>& shape,
                          const std::array<double, 3>& pixdim, int64_t image_channels,
                          int64_t label_channels, int64_t max_output_bytes,
                          const std::string& case_id) {
  const double output_bytes = static_cast<double>(g.output_shape[0]) * g.output_shape[1] *
                              g.output_shape[2] * (4.0 * image_channels + label_channels);
  if (output_bytes > static_cast<double>(max_output_bytes)) {
    throw ClientError("case '" + case_id + "': resampling " + shape_text(shape) +
                      " voxels to pixdim (" + std::to_string(pixdim[0]) + ", " +
                      std::to_string(pixdim[1]) + ", " + std::to_string(pixdim[2]) + ") gives " +
                      shape_text(g.output_shape) + ", " +
                      std::to_string(static_cast<int64_t>(output_bytes / (1 << 20))) +
                      " MiB, more than data.max_case_mb allows");
  }
}

}  // namespace

CaseData to_channel_first(const NiftiVolume& image, const NiftiVolume* label,
                          const StaticTransformOptions& options, const std::string& case_id,
                          CaseBuffers* buffers) {
  check_loaded_case(image, label, options, case_id);
  const std::array<int64_t, 3> shape{image.dim[0], image.dim[1], image.dim[2]};
  const int64_t channels = image.ndim >= 4 ? image.dim[3] : 1;
  const int64_t voxels = shape[0] * shape[1] * shape[2];
  CaseData data;
  data.case_id = case_id;
  data.spatial_shape = shape;
  data.image_channels = channels;
  data.affine = image.affine;
  data.original.spatial_shape = shape;
  data.original.affine = image.affine;
  data.image = take_buffer<float>(buffers, voxels * channels);
  parallel_for(channels, options.threads, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      transpose_to_c_order(image.voxels() + c * voxels, shape, data.image.data() + c * voxels);
    }
  });
  if (label == nullptr) return data;
  std::vector<float> values = take_buffer<float>(buffers, voxels);
  transpose_to_c_order(label->voxels(), shape, values.data());
  data.label_channels = 3;
  data.label = take_buffer<uint8_t>(buffers, 3 * voxels);
  labels_to_channels(values.data(), voxels, options.label_scheme, case_id, data.label.data());
  give_buffer(buffers, std::move(values));
  return data;
}

SpacingResult spacing(CaseData& data, const std::array<double, 3>& pixdim, int threads,
                      int64_t max_output_bytes, CaseBuffers* buffers) {
  const SpacingGeometry g = spacing_geometry(data.affine, data.spatial_shape, pixdim, data.case_id);
  check_resampled_size(g, data.spatial_shape, pixdim, data.image_channels, data.label_channels,
                       max_output_bytes, data.case_id);
  SpacingResult result;
  result.output_spacing = g.output_spacing;
  result.resampled = g.resample;
  if (!g.resample) return result;
  const SamplingPlan plan =
      make_plan(data.affine, g.output_affine, data.spatial_shape, g.output_shape, data.case_id);
  const int64_t out_voxels = g.output_shape[0] * g.output_shape[1] * g.output_shape[2];
  std::vector<float> image = take_buffer<float>(buffers, data.image_channels * out_voxels);
  std::vector<uint8_t> label = take_buffer<uint8_t>(buffers, data.label_channels * out_voxels);
  resample(plan, data.image_channels, data.image, data.label_channels, data.label, &image, &label,
           threads);
  give_buffer(buffers, std::exchange(data.image, std::move(image)));
  give_buffer(buffers, std::exchange(data.label, std::move(label)));
  data.spatial_shape = g.output_shape;
  data.affine = g.output_affine;
  return result;
}

namespace {

// Orientation("RAS") of a grid: the voxel axis permutation and flips, the oriented shape and the
// voxel map from the oriented grid back to the input one (new affine = affine @ to_input).
struct Reorientation {
  std::array<std::array<int, 2>, 3> ornt{};
  bool identity = true;
  std::array<int64_t, 3> out_shape{};
  Mat4 to_input{};
};

Reorientation reorientation(const Mat4& affine, const std::array<int64_t, 3>& shape) {
  Reorientation r;
  r.ornt = io_orientation(affine);
  for (int a = 0; a < 3; ++a) {
    r.out_shape[r.ornt[a][0]] = shape[a];
    if (r.ornt[a][0] != a || r.ornt[a][1] < 0) r.identity = false;
  }
  r.to_input[3][3] = 1.0;
  for (int a = 0; a < 3; ++a) {
    const int k = r.ornt[a][0];
    r.to_input[a][k] = r.ornt[a][1] < 0 ? -1.0 : 1.0;
    r.to_input[a][3] = r.ornt[a][1] < 0 ? static_cast<double>(shape[a] - 1) : 0.0;
  }
  return r;
}

// Output rows along y per slab of resample_and_orient_in_slabs: one channel's slab (160x8x78
// floats for BraTS, 0.4 MB) stays in a core's L2 cache between its resampling and its
// transpose.
constexpr int64_t kSlabRows = 8;

// Whether resample_and_orient_in_slabs serves a plan: axis-aligned, with an orientation that
// keeps every axis in place (flips allowed: RAS from LPS, the usual case), on a CPU with the
// blocked transpose.
bool slabs_apply(const SamplingPlan& plan, const Reorientation& r) {
  if (!plan.axis_aligned || !have_blocked_transpose()) return false;
  for (int a = 0; a < 3; ++a) {
    if (r.ornt[a][0] != a) return false;
  }
  return true;
}

// Spacing's resampling of the image and Orientation's transpose of the result into C order, one
// slab of kSlabRows output rows along y (all of z) of one channel at a time: each slab is
// transposed while it is still in cache, instead of the whole resampled image being written to
// memory and read back, and it makes whole runs along z of the C-order output (adjacent ones for
// adjacent y), so that no cache line of the output is written in parts at different times.
// The same values as resample_nifti_order then flip_transpose. Channel by channel: each one's
// `done` runs as soon as it is complete, while it is still in the last-level cache. Returns
// false, having written nothing, where slabs_apply says no. T: float, or the int16 voxels of an
// unscaled int16 image.
template <typename T>
bool resample_and_orient_in_slabs(const SamplingPlan& plan, const Reorientation& r,
                                  int64_t channels, const T* image, float* out, int threads,
                                  const std::function<void(int64_t)>& done) {
  if (!slabs_apply(plan, r)) return false;
  const NiftiOrderRows rows = prepare_nifti_order_rows(plan);
  const auto& n = plan.out_shape;  // the resampled grid, NIfTI order; also the oriented one
  const int64_t in_voxels = plan.in_shape[0] * plan.in_shape[1] * plan.in_shape[2];
  const int64_t voxels = n[0] * n[1] * n[2];
  const bool flip_x = r.ornt[0][1] < 0, flip_y = r.ornt[1][1] < 0, flip_z = r.ornt[2][1] < 0;
  const int64_t slabs = (n[1] + kSlabRows - 1) / kSlabRows;
  for (int64_t c = 0; c < channels; ++c) {
    parallel_for(slabs, threads, [&](int64_t begin, int64_t end) {
      // Each thread's slab, kept from call to call (0.4 MB).
      thread_local std::vector<float> slab;
      slab.resize(static_cast<size_t>(kSlabRows * n[2] * n[0]));
      for (int64_t i = begin; i < end; ++i) {
        const int64_t y0 = i * kSlabRows;
        const int64_t y1 = std::min(n[1], y0 + kSlabRows), ys = y1 - y0;
        // The slab's rows: (y, z) at ((z * ys) + y - y0) * n[0].
        resample_planes(plan, rows, 1, image + c * in_voxels, 0, nullptr, y0, y1, 0, n[2],
                        slab.data(), 0, nullptr);
        // The slab as a volume of its own (x, y - y0, z), oriented like the whole one; its output
        // rows start at y0, or at n[1] - y1 when y is flipped.
        const std::array<int64_t, 3> step{flip_x ? -1 : 1, flip_y ? -n[0] : n[0],
                                          flip_z ? -ys * n[0] : ys * n[0]};
        const int64_t origin = (flip_x ? n[0] - 1 : 0) + (flip_y ? (ys - 1) * n[0] : 0) +
                               (flip_z ? (n[2] - 1) * ys * n[0] : 0);
        const int64_t first = flip_y ? n[1] - y1 : y0;
        transpose_x_rows_to_z_runs(slab.data() + origin, {n[0], ys, n[2]}, step,
                                   out + c * voxels + first * n[2], n[2], n[1] * n[2]);
      }
    });
    done(c);
  }
  return true;
}

}  // namespace

void orient_ras(CaseData& data, int threads, CaseBuffers* buffers) {
  const Reorientation r = reorientation(data.affine, data.spatial_shape);
  if (r.identity) return;
  std::vector<float> image = take_buffer<float>(buffers, data.image.size());
  flip_transpose(data.image, data.image_channels, data.spatial_shape, r.ornt, r.out_shape, &image,
                 threads);
  std::vector<uint8_t> label = take_buffer<uint8_t>(buffers, data.label.size());
  flip_transpose(data.label, data.label_channels, data.spatial_shape, r.ornt, r.out_shape, &label,
                 threads);
  give_buffer(buffers, std::exchange(data.image, std::move(image)));
  give_buffer(buffers, std::exchange(data.label, std::move(label)));
  data.affine = matmul(data.affine, r.to_input);
  data.spatial_shape = r.out_shape;
}

namespace {

// NormalizeIntensity of channel `v` whose nonzero sum is `nonzero`.
void normalize_channel(float* v, int64_t voxels, const NonzeroSum& nonzero) {
  // torch.mean (float32 sum / count) and torch.std(unbiased=False) (float64 sum of squared
  // deviations from the float32 mean), both returned as float32. The sums run in 8 float64
  // partial sums (intensity_kernels.h): exact, hence equal to one running sum, while the total
  // fits 53 bits (integer intensities, as MRI scanners write); else a few float64 ulps from it,
  // far below the float32 rounding of the result.
  if (nonzero.count == 0) return;
  const float mean = static_cast<float>(nonzero.sum) / static_cast<float>(nonzero.count);
  const double squares = nonzero_squared_deviations(v, voxels, static_cast<double>(mean));
  float std_dev = static_cast<float>(std::sqrt(squares / static_cast<double>(nonzero.count)));
  if (std_dev == 0.0f) std_dev = 1.0f;
  normalize_nonzero(v, voxels, mean, std_dev);
}

}  // namespace

void normalize_intensity_nonzero(CaseData& data) {
  const int64_t voxels = data.voxels_per_channel();
  for (int64_t c = 0; c < data.image_channels; ++c) {
    float* v = data.image.data() + c * voxels;
    normalize_channel(v, voxels, nonzero_sum(v, voxels));
  }
}

namespace {

int64_t channels_of(const NiftiVolume& image) { return image.ndim >= 4 ? image.dim[3] : 1; }

}  // namespace

// Refuses channel c of `values` (one channel of `voxels` values) if it holds NaN or Inf.
void check_finite_channel(const float* values, int64_t voxels, int64_t c,
                          const std::string& case_id) {
  const int64_t at = first_non_finite(values, voxels);
  if (at < 0) return;
  throw NonFiniteImageError("case " + case_id + " has a non-finite voxel value (" +
                                std::to_string(values[at]) + ") in volume " + std::to_string(c) +
                                "; expected finite intensities",
                            c);
}

void check_finite_channels(const float* values, int64_t voxels, int64_t channels,
                           const std::string& case_id) {
  for (int64_t c = 0; c < channels; ++c) {
    check_finite_channel(values + c * voxels, voxels, c, case_id);
  }
}

CaseData preprocess_case(const NiftiVolume& image, const NiftiVolume* label,
                         const StaticTransformOptions& options, const std::string& case_id,
                         CaseBuffers* buffers) {
  const std::array<int64_t, 3> shape{image.dim[0], image.dim[1], image.dim[2]};
  // A resampled image's channels are checked for content after the resampling (a pass over the
  // smaller image; an all-zero input channel resamples to all zeros).
  check_loaded_case(image, label, options, case_id, false);
  const SpacingGeometry g = spacing_geometry(image.affine, shape, options.pixdim, case_id);
  // Raw int16 voxels are read as they are by the slab-wise resampling only, and a raw uint8
  // label's bytes by the resampling; every other path widens them to floats first (the same
  // values) and runs on those.
  const bool raw_label = label != nullptr && label->raw_uint8;
  const auto preprocess_widened = [&] {
    NiftiVolume floats = image.raw_int16 ? widen_raw(image, buffers) : NiftiVolume();
    NiftiVolume label_floats = raw_label ? widen_raw(*label, buffers) : NiftiVolume();
    CaseData data = preprocess_case(image.raw_int16 ? floats : image,
                                    raw_label ? &label_floats : label, options, case_id, buffers);
    give_buffer(buffers, std::move(floats.data));
    give_buffer(buffers, std::move(label_floats.data));
    return data;
  };
  if (!g.resample) {  // the grid already matches: channel-first, then Orientation
    if (image.raw_int16 || raw_label) return preprocess_widened();
    CaseData data = to_channel_first(image, label, options, case_id, buffers);
    if (!image.known_finite) {
      check_finite_channels(data.image.data(), data.voxels_per_channel(), channels_of(image),
                            case_id);
    }
    orient_ras(data, options.threads, buffers);
    if (options.normalize) normalize_intensity_nonzero(data);
    return data;
  }
  // Resampled: the same chain, computed from the NIfTI voxel order, so that only the smaller
  // resampled volume is transposed, by Orientation, straight into C order, slab by slab where
  // the orientation allows (bit-identical to to_channel_first -> spacing -> orient_ras).
  const int64_t channels = channels_of(image);
  const int64_t voxels = shape[0] * shape[1] * shape[2];
  const int64_t label_channels = label != nullptr ? 3 : 0;
  check_resampled_size(g, shape, options.pixdim, channels, label_channels, options.max_output_bytes,
                       case_id);
  // The label is resampled as one channel of its values' bytes and mapped to channels after; a
  // uint8 label's bytes are those already.
  std::vector<uint8_t> label_bytes_in =
      take_buffer<uint8_t>(buffers, label != nullptr && !raw_label ? voxels : 0);
  const uint8_t* label_values = raw_label ? label->uint8_voxels() : label_bytes_in.data();
  if (raw_label) {
    check_label_bytes(label_values, voxels, options.label_scheme, case_id);
  } else if (label != nullptr) {
    check_label_values(label->voxels(), voxels, options.label_scheme, case_id,
                       label_bytes_in.data());
  }
  const SamplingPlan plan =
      make_plan(image.affine, g.output_affine, shape, g.output_shape, case_id);
  const int64_t out_voxels = g.output_shape[0] * g.output_shape[1] * g.output_shape[2];
  const Reorientation r = reorientation(g.output_affine, g.output_shape);
  if (image.raw_int16 && !slabs_apply(plan, r)) {
    give_buffer(buffers, std::move(label_bytes_in));
    return preprocess_widened();
  }
  CaseData data;
  data.case_id = case_id;
  data.image_channels = channels;
  data.label_channels = label_channels;
  data.original.spatial_shape = shape;
  data.original.affine = image.affine;
  data.image = take_buffer<float>(buffers, channels * out_voxels);
  const std::array<int64_t, 3> nifti_strides{1, g.output_shape[0],
                                             g.output_shape[0] * g.output_shape[1]};
  // Each channel's nonzero sum, and NormalizeIntensity, as soon as the channel is complete
  // (while it is still in the last-level cache). The sums also make the checks below; a channel
  // whose sum is not finite is left as computed, for the check to name what it holds.
  std::vector<NonzeroSum> sums(static_cast<size_t>(channels));
  const auto channel_done = [&](int64_t c) {
    float* values = data.image.data() + c * out_voxels;
    sums[c] = nonzero_sum(values, out_voxels);
    if (options.normalize && (image.known_finite || std::isfinite(sums[c].sum))) {
      normalize_channel(values, out_voxels, sums[c]);
    }
  };
  const bool in_slabs =
      image.raw_int16
          ? resample_and_orient_in_slabs(plan, r, channels, image.int16_voxels(), data.image.data(),
                                         options.threads, channel_done)
          : resample_and_orient_in_slabs(plan, r, channels, image.voxels(), data.image.data(),
                                         options.threads, channel_done);
  if (!in_slabs) {
    std::vector<float> image_resampled = take_buffer<float>(buffers, channels * out_voxels);
    resample_nifti_order(plan, channels, image.voxels(), 0, nullptr, image_resampled.data(),
                         nullptr, options.threads);
    flip_transpose(image_resampled, channels, g.output_shape, r.ornt, r.out_shape, &data.image,
                   options.threads, nifti_strides);
    give_buffer(buffers, std::move(image_resampled));
    for (int64_t c = 0; c < channels; ++c) channel_done(c);
  }
  // The checks of what the resampling computed (the same values in either order), from the
  // channels' nonzero sums: a float64 sum of float32 values cannot overflow, and NaN counts as
  // nonzero, so the sum is finite exactly when every value is; a channel is zero everywhere
  // exactly when none is nonzero. Every channel is checked for NaN and Inf before any for
  // content, as on the other paths; the element-wise check runs only to name the value.
  for (int64_t c = 0; c < channels && !image.known_finite; ++c) {
    if (!std::isfinite(sums[c].sum)) {
      check_finite_channel(data.image.data() + c * out_voxels, out_voxels, c, case_id);
    }
  }
  for (int64_t c = 0; c < channels && !options.allow_empty_channels; ++c) {
    if (sums[c].count == 0) throw_empty_channel(c, case_id);
  }
  std::vector<uint8_t> label_bytes =
      take_buffer<uint8_t>(buffers, label != nullptr ? out_voxels : 0);
  if (label != nullptr) {
    resample_nifti_order(plan, 0, nullptr, 1, label_values, nullptr, label_bytes.data(),
                         options.threads);
  }
  give_buffer(buffers, std::move(label_bytes_in));
  // The label's bytes are reoriented, then mapped to channels.
  std::vector<uint8_t> label_oriented = take_buffer<uint8_t>(buffers, label_bytes.size());
  flip_transpose(label_bytes, label != nullptr ? 1 : 0, g.output_shape, r.ornt, r.out_shape,
                 &label_oriented, options.threads, nifti_strides);
  data.label = take_buffer<uint8_t>(buffers, label_channels * out_voxels);
  if (label != nullptr) {
    label_bytes_to_channels(label_oriented.data(), out_voxels, options.label_scheme,
                            data.label.data());
  }
  give_buffer(buffers, std::move(label_bytes));
  give_buffer(buffers, std::move(label_oriented));
  data.spatial_shape = r.out_shape;
  data.affine = r.identity ? g.output_affine : matmul(g.output_affine, r.to_input);
  return data;
}

}  // namespace medseg
