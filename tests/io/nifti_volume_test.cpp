#include "io/nifti_volume.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <nifti1.h>
#include <nifti2.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "test_support.h"
#include "util/error.h"

// Test files are built here byte by byte from nifti1.h / nifti2.h field offsets (not through the
// code under test), so the reader is checked against the format, not against its own writer.

namespace medseg {
namespace {

using testing::TempDir;

// gzip through zlib (the reader decodes with libdeflate), optionally as two concatenated members.
std::vector<uint8_t> gzip(const std::vector<uint8_t>& data, bool two_members = false) {
  std::vector<uint8_t> out;
  const size_t split = two_members ? data.size() / 3 : data.size();
  for (int part = 0; part < (two_members ? 2 : 1); ++part) {
    const uint8_t* begin = data.data() + (part == 0 ? 0 : split);
    const size_t size = part == 0 ? split : data.size() - split;
    z_stream stream{};
    EXPECT_EQ(deflateInit2(&stream, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    std::vector<uint8_t> buffer(deflateBound(&stream, size) + 64);
    stream.next_in = const_cast<Bytef*>(begin);
    stream.avail_in = static_cast<uInt>(size);
    stream.next_out = buffer.data();
    stream.avail_out = static_cast<uInt>(buffer.size());
    EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
    out.insert(out.end(), buffer.begin(), buffer.begin() + stream.total_out);
    deflateEnd(&stream);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// A NIfTI file described field by field.

struct TestImage {
  int version = 1;
  bool big_endian = false;
  std::vector<int64_t> dims{4, 3, 2};  // dim[1..dim[0]]
  int datatype = DT_FLOAT32;
  std::vector<double> values;  // stored values, x fastest; default: 0, 1, 2, ...
  double pixdim[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  double scl_slope = 0;
  double scl_inter = 0;
  int qform_code = 0;
  int sform_code = 0;
  double quatern[3] = {0, 0, 0};
  double qoffset[3] = {0, 0, 0};
  double srow[3][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}};
  const char* magic = nullptr;  // default "n+1" / "n+2"
  int64_t extension_bytes = 0;  // bytes between the header and the data (a multiple of 16)
};

int64_t voxel_count(const TestImage& image) {
  int64_t count = 1;
  for (int64_t d : image.dims) count *= d;
  return count;
}

class ByteWriter {
 public:
  ByteWriter(std::vector<uint8_t>* out, bool big_endian) : out_(out), big_endian_(big_endian) {}
  template <typename T>
  void put(size_t offset, T value) {
    uint8_t bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));
    if (big_endian_) std::reverse(bytes, bytes + sizeof(T));
    if (out_->size() < offset + sizeof(T)) out_->resize(offset + sizeof(T));
    std::memcpy(out_->data() + offset, bytes, sizeof(T));
  }

 private:
  std::vector<uint8_t>* out_;
  bool big_endian_;
};

int bytes_of(int datatype) {
  switch (datatype) {
    case DT_UINT8:
    case DT_INT8:
      return 1;
    case DT_INT16:
    case DT_UINT16:
      return 2;
    case DT_INT32:
    case DT_UINT32:
    case DT_FLOAT32:
      return 4;
    default:
      return 8;
  }
}

void put_value(ByteWriter& writer, size_t offset, int datatype, double value) {
  switch (datatype) {
    case DT_UINT8:
      return writer.put(offset, static_cast<uint8_t>(value));
    case DT_INT8:
      return writer.put(offset, static_cast<int8_t>(value));
    case DT_INT16:
      return writer.put(offset, static_cast<int16_t>(value));
    case DT_UINT16:
      return writer.put(offset, static_cast<uint16_t>(value));
    case DT_INT32:
      return writer.put(offset, static_cast<int32_t>(value));
    case DT_UINT32:
      return writer.put(offset, static_cast<uint32_t>(value));
    case DT_INT64:
      return writer.put(offset, static_cast<int64_t>(value));
    case DT_UINT64:
      return writer.put(offset, static_cast<uint64_t>(value));
    case DT_FLOAT32:
      return writer.put(offset, static_cast<float>(value));
    case DT_FLOAT64:
      return writer.put(offset, value);
    default:
      return writer.put(offset, static_cast<uint32_t>(value));  // unsupported types
  }
}

std::vector<uint8_t> encode(const TestImage& image) {
  std::vector<uint8_t> out;
  ByteWriter w(&out, image.big_endian);
  const int ndim = static_cast<int>(image.dims.size());
  size_t vox_offset;
  if (image.version == 1) {
    using H = nifti_1_header;
    vox_offset = 352 + static_cast<size_t>(image.extension_bytes);
    out.assign(vox_offset, 0);
    w.put<int32_t>(offsetof(H, sizeof_hdr), 348);
    w.put<int16_t>(offsetof(H, dim), static_cast<int16_t>(ndim));
    for (int i = 0; i < 7; ++i) {
      w.put<int16_t>(offsetof(H, dim) + 2 * (i + 1),
                     static_cast<int16_t>(i < ndim ? image.dims[i] : 1));
    }
    for (int i = 0; i < 8; ++i) {
      w.put<float>(offsetof(H, pixdim) + 4 * i, static_cast<float>(image.pixdim[i]));
    }
    w.put<int16_t>(offsetof(H, datatype), static_cast<int16_t>(image.datatype));
    w.put<int16_t>(offsetof(H, bitpix), static_cast<int16_t>(8 * bytes_of(image.datatype)));
    w.put<float>(offsetof(H, vox_offset), static_cast<float>(vox_offset));
    w.put<float>(offsetof(H, scl_slope), static_cast<float>(image.scl_slope));
    w.put<float>(offsetof(H, scl_inter), static_cast<float>(image.scl_inter));
    w.put<int16_t>(offsetof(H, qform_code), static_cast<int16_t>(image.qform_code));
    w.put<int16_t>(offsetof(H, sform_code), static_cast<int16_t>(image.sform_code));
    w.put<float>(offsetof(H, quatern_b), static_cast<float>(image.quatern[0]));
    w.put<float>(offsetof(H, quatern_c), static_cast<float>(image.quatern[1]));
    w.put<float>(offsetof(H, quatern_d), static_cast<float>(image.quatern[2]));
    w.put<float>(offsetof(H, qoffset_x), static_cast<float>(image.qoffset[0]));
    w.put<float>(offsetof(H, qoffset_y), static_cast<float>(image.qoffset[1]));
    w.put<float>(offsetof(H, qoffset_z), static_cast<float>(image.qoffset[2]));
    for (int c = 0; c < 4; ++c) {
      w.put<float>(offsetof(H, srow_x) + 4 * c, static_cast<float>(image.srow[0][c]));
      w.put<float>(offsetof(H, srow_y) + 4 * c, static_cast<float>(image.srow[1][c]));
      w.put<float>(offsetof(H, srow_z) + 4 * c, static_cast<float>(image.srow[2][c]));
    }
    std::memcpy(out.data() + offsetof(H, magic), image.magic ? image.magic : "n+1\0", 4);
  } else {
    using H = nifti_2_header;
    vox_offset = 544 + static_cast<size_t>(image.extension_bytes);
    out.assign(vox_offset, 0);
    w.put<int32_t>(offsetof(H, sizeof_hdr), 540);
    w.put<int64_t>(offsetof(H, dim), ndim);
    for (int i = 0; i < 7; ++i)
      w.put<int64_t>(offsetof(H, dim) + 8 * (i + 1), i < ndim ? image.dims[i] : 1);
    for (int i = 0; i < 8; ++i) w.put<double>(offsetof(H, pixdim) + 8 * i, image.pixdim[i]);
    w.put<int16_t>(offsetof(H, datatype), static_cast<int16_t>(image.datatype));
    w.put<int16_t>(offsetof(H, bitpix), static_cast<int16_t>(8 * bytes_of(image.datatype)));
    w.put<int64_t>(offsetof(H, vox_offset), static_cast<int64_t>(vox_offset));
    w.put<double>(offsetof(H, scl_slope), image.scl_slope);
    w.put<double>(offsetof(H, scl_inter), image.scl_inter);
    w.put<int32_t>(offsetof(H, qform_code), image.qform_code);
    w.put<int32_t>(offsetof(H, sform_code), image.sform_code);
    w.put<double>(offsetof(H, quatern_b), image.quatern[0]);
    w.put<double>(offsetof(H, quatern_c), image.quatern[1]);
    w.put<double>(offsetof(H, quatern_d), image.quatern[2]);
    w.put<double>(offsetof(H, qoffset_x), image.qoffset[0]);
    w.put<double>(offsetof(H, qoffset_y), image.qoffset[1]);
    w.put<double>(offsetof(H, qoffset_z), image.qoffset[2]);
    for (int c = 0; c < 4; ++c) {
      w.put<double>(offsetof(H, srow_x) + 8 * c, image.srow[0][c]);
      w.put<double>(offsetof(H, srow_y) + 8 * c, image.srow[1][c]);
      w.put<double>(offsetof(H, srow_z) + 8 * c, image.srow[2][c]);
    }
    std::memcpy(out.data() + offsetof(H, magic), image.magic ? image.magic : "n+2\0\r\n\032\n", 8);
  }
  const int64_t count = voxel_count(image);
  const int bytes = bytes_of(image.datatype);
  out.resize(vox_offset + static_cast<size_t>(count * bytes));
  for (int64_t i = 0; i < count; ++i) {
    const double value = image.values.empty() ? static_cast<double>(i) : image.values[i];
    put_value(w, vox_offset + static_cast<size_t>(i * bytes), image.datatype, value);
  }
  return out;
}

bool is_gz_name(const std::string& name) {
  return name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0;
}

// Writes `image` as `name` in `dir` (gzip-compressed if the name ends in .gz); returns its path.
std::string write_image(const TempDir& dir, const TestImage& image, const std::string& name) {
  const std::string path = dir.file(name);
  const std::vector<uint8_t> bytes = encode(image);
  testing::write_bytes(path, is_gz_name(name) ? gzip(bytes) : bytes);
  return path;
}

// The same, read back.
NiftiVolume write_and_read(const TempDir& dir, const TestImage& image, const std::string& name) {
  return read_nifti(write_image(dir, image, name));
}

// The ClientError message read_nifti raises for `path`, or "" if it raised none.
std::string client_error_for(const std::string& path, const NiftiReadOptions& options = {}) {
  try {
    read_nifti(path, options);
  } catch (const ClientError& error) {
    return error.what();
  }
  return "";
}

void expect_affine_near(const Affine& actual, const std::vector<std::vector<double>>& expected,
                        double tolerance) {
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) {
      EXPECT_NEAR(actual[r][c], expected[r][c], tolerance) << "affine[" << r << "][" << c << "]";
    }
  }
  EXPECT_EQ(actual[3][0], 0.0);
  EXPECT_EQ(actual[3][1], 0.0);
  EXPECT_EQ(actual[3][2], 0.0);
  EXPECT_EQ(actual[3][3], 1.0);
}

// ---------------------------------------------------------------------------------------------
// Reading: every datatype, both byte orders, both versions, with and without scaling.

struct DatatypeCase {
  int datatype;
  const char* name;
  std::vector<double> stored;  // extremes of the type that float32 still represents exactly
};

const DatatypeCase kDatatypeCases[] = {
    {DT_UINT8, "uint8", {0, 1, 128, 255}},
    {DT_INT8, "int8", {-128, -1, 0, 127}},
    {DT_INT16, "int16", {-32768, -7, 0, 32767}},
    {DT_UINT16, "uint16", {0, 1, 40000, 65535}},
    {DT_INT32, "int32", {-16777216, -5, 0, 16777216}},
    {DT_UINT32, "uint32", {0, 3, 16777216, 4278190080.0}},
    {DT_INT64, "int64", {-1099511627776.0, -2, 0, 1099511627776.0}},
    {DT_UINT64, "uint64", {0, 9, 1099511627776.0, 18446744073709549568.0}},
    {DT_FLOAT32, "float32", {-1.5, 0.0, 3.25, 1e30}},
    {DT_FLOAT64, "float64", {-2.5, 0.0, 0.125, 1e300}},
};

TEST(NiftiReadTest, EveryDatatypeByteOrderAndVersionWithScaling) {
  TempDir dir;
  for (const DatatypeCase& type : kDatatypeCases) {
    for (int version : {1, 2}) {
      for (bool big_endian : {false, true}) {
        for (double slope : {0.0, 0.5}) {
          SCOPED_TRACE(std::string(type.name) + " nifti" + std::to_string(version) +
                       (big_endian ? " big-endian" : " little-endian") + " slope " +
                       std::to_string(slope));
          TestImage image;
          image.version = version;
          image.big_endian = big_endian;
          image.dims = {2, 2, 1};
          image.datatype = type.datatype;
          image.values = type.stored;
          image.scl_slope = slope;
          image.scl_inter = -3.0;  // ignored when the slope is 0
          const NiftiVolume volume = write_and_read(dir, image, "image.nii");
          EXPECT_EQ(volume.header.nifti_version, version);
          EXPECT_EQ(volume.header.datatype, type.datatype);
          ASSERT_EQ(volume.data.size(), 4u);
          for (size_t i = 0; i < 4; ++i) {
            const double expected = slope == 0.0 ? type.stored[i] : type.stored[i] * 0.5 - 3.0;
            EXPECT_EQ(volume.data[i], static_cast<float>(expected)) << "voxel " << i;
          }
        }
      }
    }
  }
}

TEST(NiftiReadTest, ImagesLargerThanOneDecodingBlockKeepEveryVoxel) {
  // 24,000 voxels (more than the reader's conversion block) 40 kB behind the header, for every
  // voxel size, in .nii and .nii.gz (whose data the reader converts in place after the header).
  TempDir dir;
  for (const DatatypeCase& type : kDatatypeCases) {
    for (const char* name : {"large.nii", "large.nii.gz"}) {
      SCOPED_TRACE(std::string(type.name) + " " + name);
      TestImage image;
      image.version = std::string(type.name).find('u') == 0 ? 2 : 1;
      image.dims = {40, 30, 20};
      image.datatype = type.datatype;
      image.extension_bytes = 40000;  // data far behind the header, as with big extensions
      image.scl_slope = 2.0;
      image.scl_inter = 1.0;
      for (int64_t i = 0; i < 24000; ++i) image.values.push_back(static_cast<double>(i % 127));
      const NiftiVolume volume = write_and_read(dir, image, name);
      ASSERT_EQ(volume.data.size(), 24000u);
      for (int64_t i = 0; i < 24000; ++i) {
        ASSERT_EQ(volume.data[i], static_cast<float>((i % 127) * 2 + 1)) << "voxel " << i;
      }
    }
  }
}

TEST(NiftiReadTest, SlopeThatIsZeroOrNotFiniteMeansNoScaling) {
  TempDir dir;
  for (double slope : {0.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE("slope " + std::to_string(slope));
    TestImage image;
    image.datatype = DT_INT16;
    image.scl_slope = slope;
    image.scl_inter = 100.0;
    const NiftiVolume volume = write_and_read(dir, image, "image.nii");
    EXPECT_EQ(volume.data[5], 5.0f);
  }
}

// Integer voxels need no finiteness check unless the scaling could overflow float32; float
// voxels are checked while they are converted (a .nii.gz, a float64 or scaled file), and an
// unconverted float32 .nii is left to the loader's own check (which names the file).
TEST(NiftiReadTest, KnownFiniteOnlyForTameIntegersAndCheckedFloats) {
  TempDir dir;
  const auto known_finite = [&](int datatype, double slope, const char* name, double first = 0.0) {
    TestImage image;
    image.datatype = datatype;
    image.scl_slope = slope;
    image.values.assign(static_cast<size_t>(voxel_count(image)), 1.0);
    image.values[0] = first;
    return write_and_read(dir, image, name).known_finite;
  };
  EXPECT_TRUE(known_finite(DT_INT16, 0.0, "image.nii"));
  EXPECT_TRUE(known_finite(DT_UINT8, 2.5, "image.nii"));
  EXPECT_TRUE(known_finite(DT_INT64, 1.0, "image.nii"));
  EXPECT_FALSE(known_finite(DT_INT16, 1e34, "image.nii"));   // near float32's limit
  EXPECT_FALSE(known_finite(DT_FLOAT32, 0.0, "image.nii"));  // not converted, not checked
  EXPECT_TRUE(known_finite(DT_FLOAT32, 0.0, "image.nii.gz"));
  EXPECT_TRUE(known_finite(DT_FLOAT64, 0.0, "image.nii"));
  EXPECT_FALSE(known_finite(DT_FLOAT32, 0.0, "image.nii.gz", std::nan("")));
  EXPECT_FALSE(known_finite(DT_FLOAT64, 0.0, "image.nii", INFINITY));
  EXPECT_FALSE(known_finite(DT_FLOAT32, 1e30, "image.nii.gz", 1e10));  // scaled to Inf
}

// voxels_in_place: a plain float32 .nii.gz keeps its voxels after the header bytes (no pass over
// them, so not known finite); every other file is converted to floats from data[0] as before.
// The values are the same either way.
TEST(NiftiReadTest, VoxelsInPlaceLeavesPlainFloatsAfterTheHeaderAndConvertsTheRest) {
  TempDir dir;
  struct Kind {
    int datatype;
    bool big_endian;
    double slope;
    int64_t extension_bytes;
    const char* name;
    int64_t first_voxel;  // expected, in voxels of the kept type (floats, or int16)
  } kinds[] = {
      {DT_FLOAT32, false, 0.0, 0, "plain.nii.gz", 352 / 4},
      {DT_FLOAT32, false, 1.0, 32, "extended.nii.gz", (352 + 32) / 4},  // slope 1 is no scaling
      {DT_FLOAT32, true, 0.0, 0, "swapped.nii.gz", 0},
      {DT_FLOAT32, false, 2.0, 0, "scaled.nii.gz", 0},
      {DT_INT16, false, 0.0, 0, "int16.nii.gz", 352 / 2},  // kept as int16
      {DT_INT16, false, 1.0, 16, "int16_extended.nii.gz", (352 + 16) / 2},
      {DT_INT16, true, 0.0, 0, "int16_swapped.nii.gz", 0},
      {DT_INT16, false, 2.0, 0, "int16_scaled.nii.gz", 0},
      {DT_UINT8, false, 0.0, 0, "uint8.nii.gz", 0},
      {DT_FLOAT32, false, 0.0, 0, "plain.nii", 0},  // read straight to data[0]
  };
  NiftiReadOptions in_place;
  in_place.voxels_in_place = true;
  for (const Kind& k : kinds) {
    TestImage image;
    image.datatype = k.datatype;
    image.big_endian = k.big_endian;
    image.scl_slope = k.slope;
    image.extension_bytes = k.extension_bytes;
    const std::string path = write_image(dir, image, k.name);
    const NiftiVolume moved = read_nifti(path);
    const NiftiVolume kept = read_nifti(path, in_place);
    const bool raw = k.datatype == DT_INT16 && k.first_voxel > 0;
    EXPECT_EQ(moved.first_voxel, 0) << k.name;
    EXPECT_FALSE(moved.raw_int16) << k.name;
    EXPECT_EQ(kept.first_voxel, k.first_voxel) << k.name;
    EXPECT_EQ(kept.raw_int16, raw) << k.name;
    const NiftiVolume values = raw ? widen_raw(kept) : NiftiVolume();
    const float* kept_values = raw ? values.voxels() : kept.voxels();
    if (!raw) ASSERT_EQ(kept.data.size() - kept.first_voxel, moved.data.size()) << k.name;
    EXPECT_TRUE(std::equal(moved.data.begin(), moved.data.end(), kept_values)) << k.name;
    if (k.first_voxel > 0) EXPECT_EQ(kept.known_finite, raw) << k.name;  // int16 is finite

    // The header alone says as much, and a decode into a room of exactly the header and the
    // voxels leaves them there.
    const NiftiLayout layout = read_nifti_layout(path, in_place);
    EXPECT_EQ(layout.dim, moved.dim) << k.name;
    EXPECT_EQ(layout.in_place_prefix, k.first_voxel > 0 ? k.first_voxel : -1) << k.name;
    EXPECT_EQ(layout.raw_int16, raw) << k.name;
    if (k.first_voxel == 0) continue;
    const int64_t voxels = static_cast<int64_t>(moved.data.size());
    const int64_t per_float = raw ? 2 : 1;
    const int64_t exact = (k.first_voxel + voxels + per_float - 1) / per_float;
    std::vector<float> room(static_cast<size_t>(exact + 1), -7.0f);
    NiftiVolume into = read_nifti(path, in_place, nullptr, room.data(), exact);
    EXPECT_TRUE(into.data.empty()) << k.name;
    EXPECT_EQ(into.first_voxel, k.first_voxel) << k.name;
    if (raw) {
      const int16_t* decoded = reinterpret_cast<const int16_t*>(room.data()) + k.first_voxel;
      for (int64_t i = 0; i < voxels; ++i) {
        ASSERT_EQ(static_cast<float>(decoded[i]), moved.data[i]) << k.name << ", voxel " << i;
      }
    } else {
      EXPECT_TRUE(std::equal(moved.data.begin(), moved.data.end(), room.data() + k.first_voxel))
          << k.name;
    }
    EXPECT_EQ(room.back(), -7.0f) << k.name << ": written past the room";
  }
}

// bytes_in_place: an unscaled uint8 file, gzipped or not, keeps its bytes as read (labels are
// checked and resampled from them); every other file is converted to floats as before. The
// values are the same either way, and voxels_in_place alone leaves uint8 files converted.
TEST(NiftiReadTest, BytesInPlaceLeavesUint8FilesAsReadAndConvertsTheRest) {
  TempDir dir;
  struct Kind {
    int datatype;
    double slope;
    int64_t extension_bytes;
    const char* name;
    int64_t first_voxel;  // expected, in bytes; -1: converted to floats
  } kinds[] = {
      {DT_UINT8, 0.0, 0, "label.nii.gz", 352},
      {DT_UINT8, 1.0, 16, "label_extended.nii.gz", 352 + 16},  // slope 1 is no scaling
      {DT_UINT8, 0.0, 0, "label.nii", 0},                      // read from its voxels on
      {DT_UINT8, 2.0, 0, "label_scaled.nii.gz", -1},
      {DT_INT16, 0.0, 0, "int16.nii.gz", -1},
      {DT_FLOAT32, 0.0, 0, "float.nii.gz", -1},
  };
  for (const Kind& k : kinds) {
    TestImage image;
    image.datatype = k.datatype;
    image.scl_slope = k.slope;
    image.extension_bytes = k.extension_bytes;
    const std::string path = write_image(dir, image, k.name);
    const NiftiVolume moved = read_nifti(path);
    for (const bool with_voxels_in_place : {false, true}) {
      NiftiReadOptions options;
      options.bytes_in_place = true;
      options.voxels_in_place = with_voxels_in_place;
      const NiftiVolume kept = read_nifti(path, options);
      const bool raw = k.first_voxel >= 0;
      EXPECT_EQ(kept.raw_uint8, raw) << k.name;
      EXPECT_FALSE(moved.raw_uint8) << k.name;
      if (!raw) continue;
      EXPECT_EQ(kept.first_voxel, k.first_voxel) << k.name;
      EXPECT_TRUE(kept.known_finite) << k.name;
      const int64_t voxels = moved.voxel_count();
      ASSERT_GE(static_cast<int64_t>(kept.data.size()) * 4, k.first_voxel + voxels) << k.name;
      for (int64_t i = 0; i < voxels; ++i) {
        ASSERT_EQ(static_cast<float>(kept.uint8_voxels()[i]), moved.data[i]) << k.name << " " << i;
      }
      const NiftiVolume widened = widen_raw(kept);
      EXPECT_FALSE(widened.raw_uint8);
      EXPECT_EQ(widened.data, moved.data) << k.name;
      EXPECT_EQ(widened.affine, moved.affine) << k.name;
    }
    NiftiReadOptions floats_only;
    floats_only.voxels_in_place = true;
    EXPECT_FALSE(read_nifti(path, floats_only).raw_uint8) << k.name;
  }
}

TEST(NiftiReadTest, ValidSlopeWithNonFiniteInterceptIsRejected) {
  TempDir dir;
  TestImage image;
  image.scl_slope = 2.0;
  image.scl_inter = std::nan("");
  testing::write_bytes(dir.file("bad.nii"), encode(image));
  EXPECT_NE(client_error_for(dir.file("bad.nii")).find("scl_inter"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Shapes and layout.

TEST(NiftiReadTest, FourDimensionalModalitiesKeepNiftiOrder) {
  TempDir dir;
  TestImage image;
  image.dims = {3, 4, 5, 2};
  for (int c = 0; c < 2; ++c) {
    for (int z = 0; z < 5; ++z) {
      for (int y = 0; y < 4; ++y) {
        for (int x = 0; x < 3; ++x) image.values.push_back(x + 10 * y + 100 * z + 1000 * c);
      }
    }
  }
  const NiftiVolume volume = write_and_read(dir, image, "four_d.nii.gz");
  EXPECT_EQ(volume.ndim, 4);
  EXPECT_EQ(volume.dim, (std::array<int64_t, 4>{3, 4, 5, 2}));
  EXPECT_EQ(volume.voxel_count(), 120);
  const int64_t nx = 3, ny = 4, nz = 5;
  for (int64_t c = 0; c < 2; ++c) {
    for (int64_t z = 0; z < nz; ++z) {
      for (int64_t y = 0; y < ny; ++y) {
        for (int64_t x = 0; x < nx; ++x) {
          ASSERT_EQ(volume.data[x + nx * (y + ny * (z + nz * c))], x + 10 * y + 100 * z + 1000 * c);
        }
      }
    }
  }
}

TEST(NiftiReadTest, ShapesOfEveryRank) {
  struct Case {
    std::vector<int64_t> dims;
    int ndim;
    std::array<int64_t, 4> dim;
  };
  const Case cases[] = {
      {{7}, 3, {7, 1, 1, 1}},
      {{7, 6}, 3, {7, 6, 1, 1}},
      {{7, 6, 5}, 3, {7, 6, 5, 1}},
      {{7, 6, 5, 1}, 4, {7, 6, 5, 1}},
      {{7, 6, 5, 1, 3}, 4, {7, 6, 5, 3}},  // NIfTI vector layout: modalities in dim[5]
      {{7, 6, 5, 1, 3, 1, 1}, 4, {7, 6, 5, 3}},
  };
  TempDir dir;
  for (const Case& shape : cases) {
    SCOPED_TRACE("dims of rank " + std::to_string(shape.dims.size()));
    TestImage image;
    image.dims = shape.dims;
    const NiftiVolume volume = write_and_read(dir, image, "shape.nii");
    EXPECT_EQ(volume.ndim, shape.ndim);
    EXPECT_EQ(volume.dim, shape.dim);
    EXPECT_EQ(volume.data.back(), static_cast<float>(volume.voxel_count() - 1));
  }
}

TEST(NiftiReadTest, FiveDimensionalImagesOtherThanVectorsAreRejected) {
  TempDir dir;
  TestImage image;
  image.dims = {4, 4, 4, 2, 3};
  testing::write_bytes(dir.file("five_d.nii"), encode(image));
  const std::string message = client_error_for(dir.file("five_d.nii"));
  EXPECT_NE(message.find(dir.file("five_d.nii")), std::string::npos) << message;
  EXPECT_NE(message.find("4x4x4x2x3"), std::string::npos) << message;
}

TEST(NiftiReadTest, CompressedAndUncompressedFilesReadTheSame) {
  TempDir dir;
  TestImage image;
  image.dims = {17, 13, 11, 3};
  image.datatype = DT_INT16;
  image.scl_slope = 0.25;
  image.sform_code = 1;
  image.srow[0][3] = -90;
  const std::vector<uint8_t> bytes = encode(image);
  testing::write_bytes(dir.file("a.nii"), bytes);
  testing::write_bytes(dir.file("a.nii.gz"), gzip(bytes));
  testing::write_bytes(dir.file("two_members.nii.gz"), gzip(bytes, /*two_members=*/true));
  testing::write_bytes(dir.file("gzip_named_nii.nii"),
                       gzip(bytes));  // content decides, not the name
  const NiftiVolume plain = read_nifti(dir.file("a.nii"));
  for (const char* name : {"a.nii.gz", "two_members.nii.gz", "gzip_named_nii.nii"}) {
    SCOPED_TRACE(name);
    const NiftiVolume other = read_nifti(dir.file(name));
    EXPECT_EQ(other.dim, plain.dim);
    EXPECT_EQ(other.data, plain.data);
    EXPECT_EQ(other.affine, plain.affine);
  }
}

// ---------------------------------------------------------------------------------------------
// The affine, chosen as nibabel does.

TEST(NiftiReadTest, SformWinsOverQform) {
  TempDir dir;
  for (int version : {1, 2}) {
    TestImage image;
    image.version = version;
    image.sform_code = 2;
    image.qform_code = 1;
    image.quatern[2] = 1.0;  // a qform that differs: 180 degrees about z
    const double srow[3][4] = {{0.5, 0, 0.1, -20}, {0, -1.5, 0, 30.25}, {0, 0, 2, 7}};
    std::memcpy(image.srow, srow, sizeof(srow));
    const NiftiVolume volume = write_and_read(dir, image, "sform.nii");
    expect_affine_near(volume.affine, {{0.5, 0, 0.1, -20}, {0, -1.5, 0, 30.25}, {0, 0, 2, 7}},
                       1e-6);
    EXPECT_EQ(volume.header.sform_code, 2);
    EXPECT_EQ(volume.header.qform_code, 1);
  }
}

TEST(NiftiReadTest, QformWhenNoSform) {
  struct Case {
    const char* name;
    double quatern[3];
    double qfac;                                // pixdim[0]
    std::vector<std::vector<double>> expected;  // worked out by hand from the NIfTI-1 formulas
  };
  // pixdim (2, 3, 4), qoffset (10, -20, 30).
  const Case cases[] = {
      {"identity", {0, 0, 0}, 1, {{2, 0, 0, 10}, {0, 3, 0, -20}, {0, 0, 4, 30}}},
      // LPS-style storage: 180 degrees about z flips x and y.
      {"180 about z", {0, 0, 1}, 1, {{-2, 0, 0, 10}, {0, -3, 0, -20}, {0, 0, 4, 30}}},
      // qfac -1 flips the third column.
      {"180 about z, qfac -1", {0, 0, 1}, -1, {{-2, 0, 0, 10}, {0, -3, 0, -20}, {0, 0, -4, 30}}},
      // 90 degrees about z: b = c = 0, d = sin(45 deg); x -> y, y -> -x.
      {"90 about z", {0, 0, std::sqrt(0.5)}, 1, {{0, -3, 0, 10}, {2, 0, 0, -20}, {0, 0, 4, 30}}},
      // qfac 0 is read as 1 (nibabel's load-time fix).
      {"qfac 0", {0, 0, 0}, 0, {{2, 0, 0, 10}, {0, 3, 0, -20}, {0, 0, 4, 30}}},
  };
  TempDir dir;
  for (const Case& qform : cases) {
    for (int version : {1, 2}) {
      SCOPED_TRACE(std::string(qform.name) + " nifti" + std::to_string(version));
      TestImage image;
      image.version = version;
      image.qform_code = 1;
      image.srow[0][3] = 99;  // present but sform_code 0: ignored
      std::memcpy(image.quatern, qform.quatern, sizeof(qform.quatern));
      image.qoffset[0] = 10;
      image.qoffset[1] = -20;
      image.qoffset[2] = 30;
      image.pixdim[0] = qform.qfac;
      image.pixdim[1] = 2;
      image.pixdim[2] = 3;
      image.pixdim[3] = 4;
      const NiftiVolume volume = write_and_read(dir, image, "qform.nii");
      expect_affine_near(volume.affine, qform.expected, 1e-6);
      expect_affine_near(volume.header.qform, qform.expected, 1e-6);
      EXPECT_EQ(volume.pixdim, (std::array<double, 3>{2, 3, 4}));
    }
  }
}

TEST(NiftiReadTest, NoCodesGiveNibabelsCentredBaseAffine) {
  // nibabel's shape_zoom_affine((3, 5, 7), (3, 2, 1)) docstring example.
  TempDir dir;
  TestImage image;
  image.dims = {3, 5, 7};
  image.pixdim[1] = 3;
  image.pixdim[2] = -2;  // negative zooms are made positive, as nibabel's load-time fix does
  image.pixdim[3] = 1;
  const NiftiVolume volume = write_and_read(dir, image, "no_codes.nii");
  expect_affine_near(volume.affine, {{-3, 0, 0, 3}, {0, 2, 0, -4}, {0, 0, 1, -3}}, 0);
  EXPECT_EQ(volume.pixdim, (std::array<double, 3>{3, 2, 1}));
}

// ---------------------------------------------------------------------------------------------
// Writing.

NiftiVolume make_volume(std::vector<float> values, std::array<int64_t, 4> dim, int ndim) {
  NiftiVolume volume;
  volume.dim = dim;
  volume.ndim = ndim;
  volume.data = std::move(values);
  return volume;
}

TEST(NiftiWriteTest, EveryDatatypeRoundsAndClampsAsDocumented) {
  struct Case {
    NiftiDataType type;
    const char* name;
    std::vector<float> expected;
  };
  const std::vector<float> input = {-70000.0f, -1.5f, -0.5f,         0.5f, 2.5f,  3.5f,
                                    300.7f,    1e10f, std::nanf(""), 0.0f, 1.25f, 7.0f};
  const Case cases[] = {
      {NiftiDataType::kUint8, "uint8", {0, 0, 0, 0, 2, 4, 255, 255, 0, 0, 1, 7}},
      {NiftiDataType::kInt16, "int16", {-32768, -2, 0, 0, 2, 4, 301, 32767, 0, 0, 1, 7}},
      {NiftiDataType::kInt32, "int32", {-70000, -2, 0, 0, 2, 4, 301, 2147483647.0f, 0, 0, 1, 7}},
      {NiftiDataType::kFloat32, "float32", input},
      {NiftiDataType::kFloat64, "float64", input},
  };
  TempDir dir;
  for (const Case& type : cases) {
    for (const char* name : {"out.nii", "out.nii.gz"}) {
      SCOPED_TRACE(std::string(type.name) + " " + name);
      write_nifti(dir.file(name), make_volume(input, {3, 2, 2, 1}, 3), type.type);
      const NiftiVolume back = read_nifti(dir.file(name));
      EXPECT_EQ(back.header.datatype, static_cast<int>(type.type));
      ASSERT_EQ(back.data.size(), input.size());
      for (size_t i = 0; i < input.size(); ++i) {
        if (std::isnan(type.expected[i])) {
          EXPECT_TRUE(std::isnan(back.data[i])) << "voxel " << i;
        } else {
          EXPECT_EQ(back.data[i], type.expected[i]) << "voxel " << i;
        }
      }
    }
  }
}

TEST(NiftiWriteTest, AffineHeaderAndModalitiesRoundTrip) {
  TempDir dir;
  std::vector<float> values(4 * 3 * 2 * 2);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  NiftiVolume volume = make_volume(values, {4, 3, 2, 2}, 4);
  // LPS-stored 1.5 x 2 x 2.5 mm grid rotated 90 degrees about z.
  volume.affine = {{{0, -2, 0, 12.5}, {-1.5, 0, 0, -7}, {0, 0, 2.5, 3}, {0, 0, 0, 1}}};
  volume.header.sform_code = 4;
  volume.header.description = "medseg test";
  write_nifti(dir.file("out.nii.gz"), volume, NiftiDataType::kFloat32);
  const NiftiVolume back = read_nifti(dir.file("out.nii.gz"));
  EXPECT_EQ(back.ndim, 4);
  EXPECT_EQ(back.dim, volume.dim);
  EXPECT_EQ(back.data, values);
  EXPECT_EQ(back.header.sform_code, 4);
  EXPECT_EQ(back.header.qform_code, 1);
  EXPECT_EQ(back.header.xyz_units, NIFTI_UNITS_MM);
  EXPECT_EQ(back.header.description, "medseg test");
  EXPECT_EQ(back.pixdim, (std::array<double, 3>{1.5, 2, 2.5}));
  const std::vector<std::vector<double>> expected = {
      {0, -2, 0, 12.5}, {-1.5, 0, 0, -7}, {0, 0, 2.5, 3}};
  expect_affine_near(back.affine, expected, 1e-6);
  expect_affine_near(back.header.qform, expected, 1e-5);  // the qform holds the same grid
  // No temporary files are left behind.
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.nii.gz"});
}

TEST(NiftiWriteTest, LargeDimensionsUseNifti2) {
  TempDir dir;
  write_nifti(dir.file("wide.nii"),
              make_volume(std::vector<float>(40000, 1.0f), {40000, 1, 1, 1}, 3),
              NiftiDataType::kUint8);
  const NiftiVolume back = read_nifti(dir.file("wide.nii"));
  EXPECT_EQ(back.header.nifti_version, 2);
  EXPECT_EQ(back.dim[0], 40000);
  EXPECT_EQ(back.data.back(), 1.0f);
}

TEST(NiftiWriteTest, ReplacesAnExistingFile) {
  TempDir dir;
  testing::write_bytes(dir.file("out.nii"), {1, 2, 3});
  write_nifti(dir.file("out.nii"), make_volume({1, 2}, {2, 1, 1, 1}, 3), NiftiDataType::kInt16);
  EXPECT_EQ(read_nifti(dir.file("out.nii")).data, (std::vector<float>{1, 2}));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.nii"});
}

TEST(NiftiWriteTest, UnwritableDirectoryIsAPlatformErrorNamingThePath) {
  TempDir dir;
  const std::string path = dir.file("missing_dir/out.nii.gz");
  try {
    write_nifti(path, make_volume({1}, {1, 1, 1, 1}, 3), NiftiDataType::kFloat32);
    FAIL() << "no error";
  } catch (const PlatformError& error) {
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
  }
}

TEST(NiftiWriteTest, DataThatDoesNotMatchDimsIsAnInternalError) {
  TempDir dir;
  EXPECT_THROW(write_nifti(dir.file("out.nii"), make_volume({1, 2, 3}, {2, 2, 1, 1}, 3),
                           NiftiDataType::kFloat32),
               InternalError);
}

// ---------------------------------------------------------------------------------------------
// Bad input: a ClientError naming the file and what is wrong; never a crash.

TEST(NiftiReadTest, BadFilesAreClientErrorsNamingTheFile) {
  TempDir dir;
  TestImage image;
  image.dims = {32, 32, 16};
  image.datatype = DT_INT16;
  image.values.resize(32 * 32 * 16);
  for (size_t i = 0; i < image.values.size(); ++i) image.values[i] = (i * 7919) % 1000;
  const std::vector<uint8_t> good = encode(image);
  const std::vector<uint8_t> good_gz = gzip(good);

  std::vector<uint8_t> garbage(5000);
  uint32_t state = 12345;
  for (uint8_t& byte : garbage) {
    state = state * 1103515245u + 12345u;
    byte = static_cast<uint8_t>(state >> 24);
  }
  std::vector<uint8_t> corrupt_gz = good_gz;
  for (size_t i = corrupt_gz.size() / 2; i < corrupt_gz.size() / 2 + 64; ++i) corrupt_gz[i] ^= 0x5a;
  std::vector<uint8_t> corrupt_crc = good_gz;
  corrupt_crc[corrupt_crc.size() - 6] ^= 0xff;  // the CRC32 in the gzip trailer

  // A NIfTI-2 header claiming 100000^3 float64 voxels (8 PB), followed by no data.
  std::vector<uint8_t> absurd_bytes;
  {
    TestImage header_only;
    header_only.version = 2;
    header_only.dims = {1, 1, 1};
    header_only.datatype = DT_FLOAT64;
    absurd_bytes = encode(header_only);
    for (int i = 0; i < 3; ++i) {
      const int64_t d = 100000;
      std::memcpy(absurd_bytes.data() + offsetof(nifti_2_header, dim) + 8 * (i + 1), &d, 8);
    }
  }
  // Plausible BraTS-sized header (240x240x155x4 int16) with ~1 kB of gzip behind it.
  std::vector<uint8_t> brats_header;
  {
    TestImage header_only;
    header_only.dims = {1, 1, 1, 1};
    header_only.datatype = DT_INT16;
    brats_header = encode(header_only);
    const int16_t dims[4] = {240, 240, 155, 4};
    for (int i = 0; i < 4; ++i) {
      std::memcpy(brats_header.data() + offsetof(nifti_1_header, dim) + 2 * (i + 1), &dims[i], 2);
    }
  }
  TestImage complex_image = image;
  complex_image.datatype = DT_COMPLEX64;
  TestImage bad_rank = image;
  bad_rank.dims = {4, 4, 4};
  std::vector<uint8_t> bad_rank_bytes = encode(bad_rank);
  const int16_t rank = 9;
  std::memcpy(bad_rank_bytes.data() + offsetof(nifti_1_header, dim), &rank, 2);
  TestImage pair = image;
  pair.magic = "ni1\0";
  TestImage analyze = image;
  analyze.magic = "\0\0\0\0";

  struct Case {
    const char* name;
    std::vector<uint8_t> bytes;
    const char* expected;  // a phrase the message must contain
  };
  const Case cases[] = {
      {"truncated.nii", std::vector<uint8_t>(good.begin(), good.end() - 100), "truncated?"},
      {"truncated.nii.gz",
       std::vector<uint8_t>(good_gz.begin(), good_gz.begin() + good_gz.size() / 2), "truncated?"},
      {"corrupt.nii.gz", corrupt_gz, "corrupt gzip"},
      {"bad_crc.nii.gz", corrupt_crc, "corrupt gzip"},
      {"garbage.nii", garbage, "not a NIfTI file"},
      {"garbage.nii.gz", gzip(garbage), "not a NIfTI file"},
      {"empty.nii.gz", {}, "holds only 0 bytes"},
      {"header_only.nii", std::vector<uint8_t>(good.begin(), good.begin() + 200), "holds only 200"},
      {"absurd.nii", absurd_bytes, "100000x100000x100000 float64 = 8.00 PB"},
      {"brats_header_only.nii.gz", gzip(brats_header), "240x240x155x4 int16 = 71.4 MB"},
      {"complex.nii", encode(complex_image), "datatype 32 (complex64) is not supported"},
      {"bad_rank.nii", bad_rank_bytes, "dim[0]"},
      {"pair.nii", encode(pair), "two-file NIfTI pair"},
      {"analyze.nii", encode(analyze), "magic"},
  };
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.name);
    const std::string path = dir.file(bad.name);
    testing::write_bytes(path, bad.bytes);
    const std::string message = client_error_for(path);
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(bad.expected), std::string::npos) << message;
  }
}

TEST(NiftiReadTest, TruncationMessageSaysHowMuchDataThereIs) {
  TempDir dir;
  TestImage image;
  image.dims = {100, 100, 10};
  image.datatype = DT_INT16;
  std::vector<uint8_t> bytes = encode(image);
  bytes.resize(352 + 50000);
  testing::write_bytes(dir.file("cut.nii"), bytes);
  const std::string message = client_error_for(dir.file("cut.nii"));
  EXPECT_NE(message.find("header says 100x100x10 int16 = 200 kB but the file holds only 50.0 kB of "
                         "data: truncated?"),
            std::string::npos)
      << message;
}

// A .nii.gz whose gzip trailer (CRC-32 and length) is cut off, or whose CRC is wrong, holds all
// the image's bytes and was accepted (issue 14); it is a corrupt file.
TEST(NiftiReadTest, AGzipWithoutItsTrailerOrWithABadCrcIsRefused) {
  TempDir dir;
  TestImage image;
  image.dims = {20, 20, 10};
  const std::vector<uint8_t> whole = gzip(encode(image));
  std::vector<uint8_t> cut(whole.begin(), whole.end() - 8);
  testing::write_bytes(dir.file("no_trailer.nii.gz"), cut);
  const std::string message = client_error_for(dir.file("no_trailer.nii.gz"));
  EXPECT_NE(message.find("before its trailer"), std::string::npos) << message;
  std::vector<uint8_t> bad_crc = whole;
  bad_crc[bad_crc.size() - 8] ^= 0xff;
  testing::write_bytes(dir.file("bad_crc.nii.gz"), bad_crc);
  EXPECT_NE(client_error_for(dir.file("bad_crc.nii.gz")), "") << "a wrong CRC went unnoticed";
  testing::write_bytes(dir.file("whole.nii.gz"), whole);
  EXPECT_EQ(read_nifti(dir.file("whole.nii.gz")).voxel_count(), 4000);
}

TEST(NiftiReadTest, MaxBytesIsEnforcedBeforeReading) {
  TempDir dir;
  TestImage image;
  image.dims = {10, 10, 10};
  testing::write_bytes(dir.file("small.nii"), encode(image));
  NiftiReadOptions options;
  options.max_bytes = 3999;  // the image needs 4000 bytes as float32
  EXPECT_NE(client_error_for(dir.file("small.nii"), options).find("max_bytes"), std::string::npos);
  options.max_bytes = 4000;
  EXPECT_EQ(read_nifti(dir.file("small.nii"), options).voxel_count(), 1000);
}

TEST(NiftiReadTest, MissingFileIsAClientErrorNamingIt) {
  TempDir dir;
  const std::string message = client_error_for(dir.file("nope.nii.gz"));
  EXPECT_NE(message.find(dir.file("nope.nii.gz")), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
}

}  // namespace
}  // namespace medseg
