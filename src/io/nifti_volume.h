// NIfTI-1 / NIfTI-2 images (.nii, .nii.gz) in memory.
//
// Contract:
//  - read_nifti returns voxel values as float32 with scl_slope/scl_inter applied (a slope of 0 or a
//    non-finite slope means "no scaling", as in nibabel), in NIfTI's own order (x fastest, then y,
//    z, t). 4-D images keep their 4th axis (modalities) in dim[3]; a 5-D header of shape
//    (x, y, z, 1, c) (the NIfTI convention for vector data) is read as 4-D with c modalities.
//    Datatypes: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64, either
//    byte order. Whether a file is gzip-compressed is decided by its first bytes, not its name.
//  - The affine maps voxel indices (i, j, k, 1) to world millimetres and is chosen as nibabel's
//    Nifti1Header.get_best_affine does: the sform if sform_code != 0, else the qform if
//    qform_code != 0, else nibabel's "base affine" diag(-zx, zy, zz) with the image centre at the
//    origin (translation -(dim - 1) / 2 * zooms; see read_nifti).
//  - Header dimensions are checked against the file size and NiftiReadOptions::max_bytes before
//    anything is allocated; corrupt, truncated, non-NIfTI or absurd files raise ClientError naming
//    the file and what is wrong. A missing file is a ClientError too; other I/O failures are
//    PlatformError.
//  - write_nifti writes a single-file image (.nii, or gzip if the name ends in .gz) whose sform and
//    qform both hold `affine` (codes from `header` when nonzero, else scanner/aligned = 1),
//    atomically (temporary file in the same directory, then rename).
//  - nifticlib (libnifti2) is used for the quaternion maths of the qform; the file format itself is
//    read and written here so that bounds checks, error reporting and decompression (libdeflate)
//    stay under medseg's control. Thread-safe: no global state.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace medseg {

struct CaseBuffers;

// Row-major 4x4: world = affine * (i, j, k, 1).
using Affine = std::array<std::array<double, 4>, 4>;

Affine identity_affine();

// On-disk voxel types medseg writes (NIfTI datatype codes).
enum class NiftiDataType : int {
  kUint8 = 2,
  kInt16 = 4,
  kInt32 = 8,
  kFloat32 = 16,
  kFloat64 = 64,
};

// Header facts kept from a file so an output can be written in the same grid with the same header.
struct NiftiHeaderInfo {
  int nifti_version = 1;  // 1 or 2
  int datatype = 16;      // NIfTI datatype code of the file
  int qform_code = 0;
  int sform_code = 0;
  Affine qform = identity_affine();  // the quaternion decoded as nibabel does (even if code 0)
  Affine sform = identity_affine();  // srow_x/y/z (even if code 0)
  int xyz_units = 2;                 // NIFTI_UNITS_MM; xyzt_units & 0x07
  int time_units = 0;                // xyzt_units & 0x38
  std::string description;
};

struct NiftiVolume {
  std::array<int64_t, 4> dim{1, 1, 1, 1};  // nx, ny, nz, nt (nt = 1 for 3-D images)
  int ndim = 3;                            // 3 or 4
  // dim product values, x fastest, from data[first_voxel] (0 unless read with
  // NiftiReadOptions::voxels_in_place); voxels() points at the first.
  std::vector<float> data;
  int64_t first_voxel = 0;
  Affine affine = identity_affine();  // voxel -> world (mm), picked like nibabel
  // Header zooms pixdim[1..3] after nibabel's load-time fixes (negative -> abs, 0 -> 1).
  std::array<double, 3> pixdim{1.0, 1.0, 1.0};
  NiftiHeaderInfo header;
  // True when every value is known to be finite: integer voxels with a scaling that cannot
  // overflow float32, or float voxels checked while they were converted (a .nii.gz, a scaled or
  // byte-swapped file). False: they may hold NaN or Inf.
  bool known_finite = false;

  // Read with NiftiReadOptions::voxels_in_place from an unscaled int16 .nii.gz in native byte
  // order: the data holds the int16 voxels as decompressed, from int16 index first_voxel
  // (int16_voxels()), and voxels() must not be used (widen_raw makes floats of them).
  bool raw_int16 = false;
  // Read with NiftiReadOptions::bytes_in_place from an unscaled uint8 file (a label, usually):
  // the data holds the bytes as read or decompressed, from byte index first_voxel
  // (uint8_voxels()), and voxels() must not be used (widen_raw makes floats of them).
  bool raw_uint8 = false;

  int64_t voxel_count() const { return dim[0] * dim[1] * dim[2] * dim[3]; }
  const float* voxels() const { return data.data() + first_voxel; }
  float* voxels() { return data.data() + first_voxel; }
  const int16_t* int16_voxels() const {
    return reinterpret_cast<const int16_t*>(data.data()) + first_voxel;
  }
  const uint8_t* uint8_voxels() const {
    return reinterpret_cast<const uint8_t*>(data.data()) + first_voxel;
  }
};

struct NiftiReadOptions {
  // Refuse images whose decoded float32 data would exceed this many bytes.
  int64_t max_bytes = int64_t{8} << 30;
  // A plain float32 .nii.gz (native byte order, no scaling, vox_offset a multiple of 4) keeps
  // its voxels where the decompression wrote them, after the header's bytes (first_voxel > 0):
  // no pass moves or checks them, so known_finite stays false. For callers that check the
  // values they compute from the voxels instead (preprocess_case). An unscaled int16 .nii.gz in
  // native byte order keeps its int16 voxels the same way (NiftiVolume::raw_int16; they are
  // finite).
  bool voxels_in_place = false;
  // An unscaled uint8 file (.nii or .nii.gz; labels, usually) keeps its bytes where they were
  // read or decompressed (NiftiVolume::raw_uint8): no pass widens them to floats, for callers
  // that read the bytes as they are (preprocess_case's labels).
  bool bytes_in_place = false;
};

// Reads a .nii or .nii.gz file. Throws ClientError for missing, non-NIfTI, unsupported, corrupt,
// truncated or too-large files (the message names `path`), PlatformError for other I/O failures.
// With `buffers`, the voxels and the compressed bytes are read into buffers of that thread's
// pools (give the volume's data back when done with it).
//
// With `into` (room for `into_floats` values), the voxels are decoded there instead and
// volume.data stays empty: a stack of modalities is filled without a copy. The room must hold
// the voxels (twice for 8-byte types) plus, for a .nii.gz, the header bytes the decompression
// writes first (kNiftiDecodeSlackFloats covers every header); with less, the voxels go to
// volume.data as without `into`, nothing is written to `into`, and `into` stays untouched.
// The voxels start at into[0], or with voxels_in_place at into[first_voxel] (the in-place
// prefix of NiftiLayout).
NiftiVolume read_nifti(const std::string& path, const NiftiReadOptions& options = {},
                       CaseBuffers* buffers = nullptr, float* into = nullptr,
                       int64_t into_floats = 0);

// What read_nifti would decode, from the header alone (no voxel is read; the same checks and
// errors as read_nifti's for the header).
struct NiftiLayout {
  std::array<int64_t, 4> dim{1, 1, 1, 1};
  int ndim = 3;
  // With voxels_in_place: how many voxels' room (floats, or int16 for raw_int16) of header the
  // decompression writes before the voxels, which then stay where they are; -1 when read_nifti
  // moves or converts them (not a plain float32 or unscaled int16 .nii.gz).
  int64_t in_place_prefix = -1;
  bool raw_int16 = false;  // the voxels stay int16
};

NiftiLayout read_nifti_layout(const std::string& path, const NiftiReadOptions& options = {});

// The float32 voxels of a raw_int16 or raw_uint8 volume (each value exactly): `volume` with its
// data widened into a buffer of `buffers` (when given), first_voxel 0 and neither raw flag set.
NiftiVolume widen_raw(const NiftiVolume& volume, CaseBuffers* buffers = nullptr);

// Room beyond the voxels that read_nifti's `into` needs: the decompressed header comes first.
inline constexpr int64_t kNiftiDecodeSlackFloats = 16 * 1024;

// Writes `volume` as `type` (integer types: values rounded half-to-even and clamped to the type's
// range, NaN -> 0). NIfTI-1 when every dimension fits in int16, else NIfTI-2. No scaling is stored
// (scl_slope 1, scl_inter 0); pixdim[1..3] are the column norms of the affine; xyz units mm.
// REQUIRES: volume.data.size() == volume.voxel_count() and positive dims (else InternalError).
// Throws PlatformError naming `path` if the file cannot be written; an existing file at `path` is
// replaced only once the new one is complete.
void write_nifti(const std::string& path, const NiftiVolume& volume, NiftiDataType type);

}  // namespace medseg
