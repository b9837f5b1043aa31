#include "util/buffer_pool.h"

#include <gtest/gtest.h>

#include <vector>

namespace medseg {
namespace {

// Case after case, each role gets back the buffer it had: nothing is reallocated.
TEST(BufferPoolTest, EachSizeGetsBackTheBufferThatFitsBest) {
  BufferPool<float> pool;
  std::vector<float> big = pool.take(1000);
  std::vector<float> small = pool.take(100);
  const float* big_data = big.data();
  const float* small_data = small.data();
  pool.give(std::move(big));
  pool.give(std::move(small));
  EXPECT_TRUE(big.empty());
  EXPECT_EQ(pool.spares(), 2u);

  const std::vector<float> small_again = pool.take(90);
  const std::vector<float> big_again = pool.take(1000);
  EXPECT_EQ(small_again.data(), small_data);
  EXPECT_EQ(small_again.size(), 90u);
  EXPECT_EQ(big_again.data(), big_data);
  EXPECT_EQ(big_again.size(), 1000u);
  EXPECT_EQ(pool.spares(), 0u);
}

TEST(BufferPoolTest, ALargerRequestGrowsTheLargestSpareAndThePoolStaysBounded) {
  BufferPool<uint8_t> pool;
  pool.give(std::vector<uint8_t>(10));
  pool.give(std::vector<uint8_t>(20));
  const std::vector<uint8_t> grown = pool.take(5000);
  EXPECT_EQ(grown.size(), 5000u);
  EXPECT_EQ(pool.spares(), 1u);  // the 10-byte one is left; the 20-byte one grew
  for (size_t i = 1; i <= 2 * BufferPool<uint8_t>::kMaxSpares; ++i)
    pool.give(std::vector<uint8_t>(i));
  EXPECT_EQ(pool.spares(), BufferPool<uint8_t>::kMaxSpares);
  EXPECT_GE(pool.take(1).capacity(), BufferPool<uint8_t>::kMaxSpares + 1);  // the smallest went
}

// A spare that grows gets room to spare: the next cases' files, a little larger again, reuse
// it instead of each costing a fresh allocation. A first allocation is exact.
TEST(BufferPoolTest, AGrownBufferHasRoomForSlightlyLargerFiles) {
  BufferPool<uint8_t> pool;
  std::vector<uint8_t> first = pool.take(1000);
  EXPECT_EQ(first.capacity(), 1000u);
  pool.give(std::move(first));
  std::vector<uint8_t> grown = pool.take(1100);
  EXPECT_GE(grown.capacity(), 1375u);
  const uint8_t* grown_data = grown.data();
  pool.give(std::move(grown));
  for (const size_t size : {1200u, 1300u, 1375u, 900u}) {
    std::vector<uint8_t> again = pool.take(size);
    EXPECT_EQ(again.data(), grown_data) << size;
    EXPECT_EQ(again.size(), size);
    pool.give(std::move(again));
  }
}

}  // namespace
}  // namespace medseg
