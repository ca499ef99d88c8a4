// The counter-based random numbers every backend shares.
//
// A sampled token must not depend on which backend, how many ranks or which thread drew it, so
// there is no RNG state: the uniform for one draw is a pure function of (seed, counter), where
// the counter is usually the position of the token being sampled. The hash is splitmix64
// applied twice (once to the seed, once to the seed hash mixed with the counter); the top 53
// bits make a double in [0, 1). Plain inline integer code, so a CUDA backend can include this
// header from device code (wrap in __host__ __device__ there) and draw the very same numbers.
#pragma once

#include <cstdint>

// nvcc compiles these for the device too (kernels/cuda/sample.cu); plain inline C++ elsewhere.
#if defined(__CUDACC__)
#define PF_HOST_DEVICE __host__ __device__
#else
#define PF_HOST_DEVICE
#endif

namespace parafuse {

// Steele, Lea & Flood's splitmix64 finalizer with its golden-gamma increment.
PF_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// 64 well-mixed bits for draw `counter` of stream `seed`.
PF_HOST_DEVICE inline uint64_t counter_hash(uint64_t seed, uint64_t counter) {
  return splitmix64(splitmix64(seed) ^ counter);
}

// Uniform double in [0, 1): the top 53 bits of counter_hash times 2^-53.
PF_HOST_DEVICE inline double counter_uniform(uint64_t seed, uint64_t counter) {
  return double(counter_hash(seed, counter) >> 11) * 0x1.0p-53;
}

}  // namespace parafuse
