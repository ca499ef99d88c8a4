// Registers the CUDA backend under the name "cuda" (kernels/backend_registry.h). This file is
// what makes `--backend cuda` exist: pf_cuda is linked whole, so this registrar runs in every
// program built with CUDA.
#include "kernels/backend_registry.h"
#include "kernels/cuda/cuda_backend.h"

namespace parafuse {
namespace {

const BackendRegistrar registrar{{
    .name = "cuda",
    .summary = "NVIDIA GPUs (sm_90a): bf16 weights and activations, cuBLASLt, CUDA graphs",
    .dtypes = {"bf16"},
    .device_count = [](std::string* why) { return cuda_device_count(why); },
    .make = [](const BackendOptions& o) { return make_cuda_backend({.device = o.device}); },
}};

}  // namespace
}  // namespace parafuse
