// The AVX2 + FMA + F16C kernel set (cpu_kernels.h); compiled with those -m flags alone
// (kernels/CMakeLists.txt) and used only where the CPU has them (cpu_kernels.cpp).
#define PF_SIMD_NS avx2
#define PF_SIMD_VNNI 0
#define PF_SIMD_AVX512 0
#include "kernels/cpu/cpu_gemv_x86.inc"

namespace parafuse::cpu_kernels {
KernelSet avx2_kernels() {
  return avx2::make_set("avx2");
}
}  // namespace parafuse::cpu_kernels
