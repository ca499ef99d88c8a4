// The backend registry (see backend_registry.h). The table is a function-local static, so a
// registrar in another library's static initializers finds it constructed whatever the
// initialization order of the libraries is.
#include "kernels/backend_registry.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include "kernels/core/error.h"
#include "kernels/core/suggest.h"
#include "kernels/cpu/cpu_backend.h"

namespace parafuse {
namespace {

std::vector<BackendInfo>& registry() {
  static std::vector<BackendInfo> backends = {{
      .name = "cpu",
      .summary = "the reference backend: f32 on the host, weights f32 or as stored "
                 "(q8_0, q4_0, q4_1, f16, bf16), SIMD GEMV, OpenBLAS GEMM",
      .dtypes = {"f32"},
      .device_count = [](std::string*) { return 1; },
      .make =
          [](const BackendOptions& o) {
            return make_cpu_backend(CpuBackendOptions{o.threads, o.native_weights, "best"});
          },
  }};
  return backends;
}

}  // namespace

void register_backend(BackendInfo info) {
  PF_CHECK(!info.name.empty() && info.make && info.device_count && !info.dtypes.empty(),
           "register_backend: backend '{}' needs a name, a factory, a device count and dtypes",
           info.name);
  for (const BackendInfo& b : registry())
    PF_CHECK(b.name != info.name, "register_backend: backend '{}' is registered twice", info.name);
  registry().push_back(std::move(info));
}

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
  for (const BackendInfo& b : registry()) names.push_back(b.name);
  return names;
}

const BackendInfo& backend_info(const std::string& name) {
  for (const BackendInfo& b : registry())
    if (b.name == name) return b;
  const std::vector<std::string> names = backend_names();
  PF_THROW(
      "unknown backend '{}'{}; this build has {}{}", name, did_you_mean(name, names),
      fmt::join(names, ", "),
      name == "cuda" ? " (the cuda backend is built when CMake finds nvcc: PARAFUSE_CUDA=ON)" : "");
}

std::vector<std::string> backend_dtypes() {
  std::vector<std::string> dtypes = {"auto"};
  for (const BackendInfo& b : registry())
    for (const std::string& d : b.dtypes)
      if (std::find(dtypes.begin(), dtypes.end(), d) == dtypes.end()) dtypes.push_back(d);
  return dtypes;
}

std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& options) {
  const BackendInfo& info = backend_info(name);
  const auto& dtypes = info.dtypes;
  PF_CHECK(options.dtype == "auto" ||
               std::find(dtypes.begin(), dtypes.end(), options.dtype) != dtypes.end(),
           "dtype '{}' is not supported by the {} backend (it runs {}; use --dtype auto)",
           options.dtype, name, fmt::join(dtypes, ", "));
  PF_CHECK(options.threads >= 1, "backend '{}': threads must be at least 1, got {}", name,
           options.threads);
  std::string why;
  const int devices = info.device_count(&why);
  PF_CHECK(devices > 0, "backend '{}': no device on this node: {}", name, why);
  PF_CHECK(options.device >= 0 && options.device < devices,
           "backend '{}': device {} does not exist (this node has {})", name, options.device,
           devices);
  return info.make(options);
}

}  // namespace parafuse
