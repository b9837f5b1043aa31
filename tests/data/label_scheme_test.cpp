// Label values -> [TC, WT, ET] for each scheme, and the errors for values a scheme does not have.
#include "data/label_scheme.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "util/error.h"

namespace medseg {
namespace {

struct SchemeCase {
  LabelScheme scheme;
  std::vector<float> values;
  std::vector<uint8_t> tc, wt, et;
};

class LabelSchemeTable : public ::testing::TestWithParam<SchemeCase> {};

TEST_P(LabelSchemeTable, MapsValuesToChannels) {
  const SchemeCase& c = GetParam();
  const int64_t n = static_cast<int64_t>(c.values.size());
  std::vector<uint8_t> channels(3 * n, 9);
  labels_to_channels(c.values.data(), n, c.scheme, "case", channels.data());
  EXPECT_EQ(std::vector<uint8_t>(channels.begin(), channels.begin() + n), c.tc);
  EXPECT_EQ(std::vector<uint8_t>(channels.begin() + n, channels.begin() + 2 * n), c.wt);
  EXPECT_EQ(std::vector<uint8_t>(channels.begin() + 2 * n, channels.end()), c.et);

  // Through one byte per voxel (what the resampled path moves): the same channels.
  std::vector<uint8_t> bytes(n, 9), from_bytes(3 * n, 9);
  check_label_values(c.values.data(), n, c.scheme, "case", bytes.data());
  label_bytes_to_channels(bytes.data(), n, c.scheme, from_bytes.data());
  EXPECT_EQ(from_bytes, channels);
}

INSTANTIATE_TEST_SUITE_P(
    Schemes, LabelSchemeTable,
    ::testing::Values(
        // msd: 1 edema, 2 non-enhancing, 3 enhancing: TC = 2|3, WT = 1|2|3, ET = 3.
        SchemeCase{LabelScheme::kMsd, {0, 1, 2, 3}, {0, 0, 1, 1}, {0, 1, 1, 1}, {0, 0, 0, 1}},
        // brats: 1 necrotic, 2 edema, 4 enhancing: TC = 1|4, WT = 1|2|4, ET = 4.
        SchemeCase{LabelScheme::kBrats, {0, 1, 2, 4}, {0, 1, 0, 1}, {0, 1, 1, 1}, {0, 0, 0, 1}},
        // MONAI tutorial on Task01: TC = 2|3, WT = 1|2|3, ET = 2.
        SchemeCase{
            LabelScheme::kMonaiTutorial, {0, 1, 2, 3}, {0, 0, 1, 1}, {0, 1, 1, 1}, {0, 0, 1, 0}}));

TEST(LabelScheme, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(parse_label_scheme("msd"), LabelScheme::kMsd);
  EXPECT_EQ(parse_label_scheme("brats"), LabelScheme::kBrats);
  EXPECT_EQ(parse_label_scheme("monai_tutorial"), LabelScheme::kMonaiTutorial);
  for (LabelScheme s : {LabelScheme::kMsd, LabelScheme::kBrats, LabelScheme::kMonaiTutorial}) {
    EXPECT_EQ(parse_label_scheme(label_scheme_name(s)), s);
  }
  try {
    parse_label_scheme("brats2023");
    FAIL() << "expected ClientError";
  } catch (const ClientError& e) {
    EXPECT_NE(std::string(e.what()).find("brats2023"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("monai_tutorial"), std::string::npos) << e.what();
  }
}

// The message of labels_to_channels, after checking that check_label_values says the same.
std::string error_for(std::vector<float> values, LabelScheme scheme) {
  std::vector<uint8_t> channels(3 * values.size());
  std::string message, from_check;
  try {
    labels_to_channels(values.data(), values.size(), scheme, "BRATS_042", channels.data());
  } catch (const ClientError& e) {
    message = e.what();
  }
  try {
    check_label_values(values.data(), values.size(), scheme, "BRATS_042", channels.data());
  } catch (const ClientError& e) {
    from_check = e.what();
  }
  EXPECT_EQ(from_check, message);
  return message;
}

TEST(LabelScheme, ValueOutsideSchemeNamesCaseValueCountAndAllowedValues) {
  const std::string message = error_for({0, 5, 5, 1, 5}, LabelScheme::kMsd);
  EXPECT_NE(message.find("BRATS_042"), std::string::npos) << message;
  EXPECT_NE(message.find("label value 5 at 3 voxels"), std::string::npos) << message;
  EXPECT_NE(message.find("the msd scheme allows 0, 1, 2, 3"), std::string::npos) << message;
}

TEST(LabelScheme, BratsValuesAreNotMsdValuesAndViceVersa) {
  EXPECT_NE(error_for({0, 4}, LabelScheme::kMsd).find("value 4 at 1 voxels"), std::string::npos);
  const std::string message = error_for({0, 3, 3}, LabelScheme::kBrats);
  EXPECT_NE(message.find("value 3 at 2 voxels"), std::string::npos) << message;
  EXPECT_NE(message.find("allows 0, 1, 2, 4"), std::string::npos) << message;
}

TEST(LabelScheme, NonIntegerNegativeAndNanValuesAreRejected) {
  EXPECT_NE(error_for({1.5f}, LabelScheme::kMsd).find("value 1.5 at 1 voxels"), std::string::npos);
  EXPECT_NE(error_for({-1.0f}, LabelScheme::kMsd).find("value -1 at 1"), std::string::npos);
  EXPECT_NE(error_for({std::nanf("")}, LabelScheme::kMsd).find("NaN at 1 voxels"),
            std::string::npos);
}

// Whole label volumes (the vectorised body and its tail): every allowed value comes out as its
// byte, and one refused value anywhere, of any kind, is found and named.
TEST(LabelScheme, EveryValueOfALongVolumeIsCheckedWhereverItSits) {
  const std::vector<float> refused = {5.0f,     4.0f,      -1.0f, 0.5f,  2.0001f, std::nanf(""),
                                      INFINITY, -INFINITY, 3e9f,  -3e9f, 1e-45f,  256.0f};
  for (const int64_t n : {31, 32, 33, 100, 1027}) {
    std::vector<float> values(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>((i * 7 + i / 5) % 4);
    values[0] = -0.0f;  // zero, as the scalar comparison treats it
    std::vector<uint8_t> bytes(static_cast<size_t>(n), 9);
    check_label_values(values.data(), n, LabelScheme::kMsd, "case", bytes.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bytes[i], static_cast<uint8_t>(values[i])) << i;

    for (const int64_t at : {int64_t{0}, int64_t{13}, n / 2, n - 1}) {
      for (const float bad : refused) {
        std::vector<float> with_bad = values;
        with_bad[static_cast<size_t>(at)] = bad;
        EXPECT_THROW(
            check_label_values(with_bad.data(), n, LabelScheme::kMsd, "case", bytes.data()),
            ClientError)
            << "value " << bad << " at " << at << " of " << n;
      }
    }
  }
}

// A uint8 label file's bytes are checked as they are (check_label_bytes): the same values pass
// and fail as their floats do, with the same message, wherever a refused byte sits.
TEST(LabelScheme, BytesOfAUint8LabelAreCheckedAsTheirFloatsAre) {
  for (const LabelScheme scheme :
       {LabelScheme::kMsd, LabelScheme::kBrats, LabelScheme::kMonaiTutorial}) {
    for (const int64_t n : {1, 31, 32, 33, 100, 1027}) {
      std::vector<uint8_t> bytes(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t allowed[] = {0, 1, 2,
                                   scheme == LabelScheme::kBrats ? uint8_t{4} : uint8_t{3}};
        bytes[i] = allowed[(i * 7 + i / 5) % 4];
      }
      EXPECT_NO_THROW(check_label_bytes(bytes.data(), n, scheme, "case"));
      for (const int64_t at : {int64_t{0}, n / 2, n - 1}) {
        for (const int bad : {3, 4, 5, 15, 16, 17, 128, 255}) {
          std::vector<uint8_t> with_bad = bytes;
          with_bad[static_cast<size_t>(at)] = static_cast<uint8_t>(bad);
          const std::vector<float> floats(with_bad.begin(), with_bad.end());
          std::vector<uint8_t> scratch(static_cast<size_t>(n));
          std::string from_floats, from_bytes;
          try {
            check_label_values(floats.data(), n, scheme, "BRATS_042", scratch.data());
          } catch (const ClientError& e) {
            from_floats = e.what();
          }
          try {
            check_label_bytes(with_bad.data(), n, scheme, "BRATS_042");
          } catch (const ClientError& e) {
            from_bytes = e.what();
          }
          EXPECT_EQ(from_bytes, from_floats) << "byte " << bad << " at " << at << " of " << n;
          if (!from_bytes.empty()) {
            EXPECT_NE(from_bytes.find("label value " + std::to_string(bad) + " at 1 voxels"),
                      std::string::npos)
                << from_bytes;
          }
        }
      }
    }
  }
}

// The channels of long volumes (the vectorised body and its tail) equal those of one value at
// a time, for every scheme and every byte check_label_values writes.
TEST(LabelScheme, ChannelsOfLongVolumesEqualThoseOfEachValue) {
  for (const LabelScheme scheme :
       {LabelScheme::kMsd, LabelScheme::kBrats, LabelScheme::kMonaiTutorial}) {
    for (const int64_t n : {33, 64, 1027}) {
      std::vector<uint8_t> bytes(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>((i * 5 + i / 7) % 5);
      std::vector<uint8_t> channels(static_cast<size_t>(3 * n), 9);
      label_bytes_to_channels(bytes.data(), n, scheme, channels.data());
      for (int64_t i = 0; i < n; ++i) {
        uint8_t one[3] = {9, 9, 9};
        label_bytes_to_channels(bytes.data() + i, 1, scheme, one);
        for (int k = 0; k < 3; ++k) {
          ASSERT_EQ(channels[k * n + i], one[k]) << "value " << int{bytes[i]} << " channel " << k;
        }
      }
    }
  }
}

}  // namespace
}  // namespace medseg
