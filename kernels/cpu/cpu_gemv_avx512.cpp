// The AVX-512 kernel set (cpu_kernels.h): AVX2's loops with VNNI int16 dot products (vpdpwssd)
// and 512-bit float dots; compiled with -mavx512f/bw/vl/vnni (kernels/CMakeLists.txt) and used
// only where the CPU has them (cpu_kernels.cpp).
#define PF_SIMD_NS avx512
#define PF_SIMD_VNNI 1
#define PF_SIMD_AVX512 1
#include "kernels/cpu/cpu_gemv_x86.inc"

namespace parafuse::cpu_kernels {
KernelSet avx512_kernels() {
  return avx512::make_set("avx512-vnni");
}
}  // namespace parafuse::cpu_kernels
