// Counter-based random numbers: a stream is a pure function of its key (seed, epoch, sample),
// so every sample is reproducible whatever the thread that makes it or the order samples are
// made in, and a resumed job redraws exactly what an uninterrupted one would have.
#pragma once

#include <cstdint>

namespace medseg {

// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class RandomStream {
 public:
  // One stream per (seed, a, b): e.g. (seed, epoch, sample index).
  RandomStream(uint64_t seed, uint64_t a, uint64_t b)
      : key_(mix64(mix64(mix64(seed) ^ a) ^ (b * 0xd1b54a32d192ed03ULL))) {}

  uint64_t next_u64() { return mix64(key_ + 0x632be59bd9b4e019ULL * ++counter_); }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  // Uniform in [low, high).
  double uniform(double low, double high) { return low + (high - low) * uniform(); }

  // Uniform integer in [low, high] (inclusive); high >= low.
  int64_t uniform_int(int64_t low, int64_t high) {
    const uint64_t span = static_cast<uint64_t>(high - low) + 1;
    // Lemire's multiply-shift; the bias for spans far below 2^64 is negligible.
    const unsigned __int128 product = static_cast<unsigned __int128>(next_u64()) * span;
    return low + static_cast<int64_t>(product >> 64);
  }

  bool bernoulli(double probability) { return uniform() < probability; }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

}  // namespace medseg
