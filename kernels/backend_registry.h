// Backends by name. Everything that needs a backend — the launcher's session builder, the
// benchmarks — makes it here and never names a concrete backend class, so a backend is added
// by building it, not by editing its callers.
//
// The CPU backend (the reference) is always registered. Any other backend registers itself
// when it is built, with a BackendRegistrar at namespace scope in its own sources (CUDA:
// kernels/cuda/cuda_registration.cpp); its library is linked whole (kernels/CMakeLists.txt) so
// the registrar is not dropped by the linker. Names are listed in registration order, cpu
// first.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace parafuse {

struct BackendOptions {
  std::string dtype = "auto";  // compute dtype; "auto" is the backend's first (native) dtype
  int threads = 1;             // host threads for the backend's CPU work (cpu: BLAS threads)
  int device = 0;              // device index on this node (device backends; cpu ignores it)
  // Weights in their file's format where the backend multiplies by it (Backend::supports_weight);
  // false: every weight converted to the backend's weight_dtype() (the reference path).
  bool native_weights = true;
};

struct BackendInfo {
  std::string name;                 // "cpu", "cuda": what --backend and `backend:` accept
  std::string summary;              // one line for --help and errors
  std::vector<std::string> dtypes;  // compute dtypes it runs; the first is what "auto" picks
  // Devices this node has for it (the cpu backend: 1, the host); 0 with `why` set when none.
  std::function<int(std::string* why)> device_count;
  std::function<std::unique_ptr<Backend>(const BackendOptions&)> make;
};

// Adds a backend; a second backend of the same name is an Error.
void register_backend(BackendInfo info);

// The registered names, cpu first ("cpu", then "cuda" in CUDA builds).
std::vector<std::string> backend_names();

// The entry for `name`; an unknown name is an Error that lists the built backends.
const BackendInfo& backend_info(const std::string& name);

// Every dtype some backend runs, plus "auto": what `dtype:` and --dtype accept.
std::vector<std::string> backend_dtypes();

// A backend, after checking the dtype against the backend and the device against the node:
// "dtype 'bf16' is not supported by the cpu backend (it runs f32; use --dtype auto)".
std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& options = {});

// Registers a backend during static initialization: `static const BackendRegistrar r{info};`.
struct BackendRegistrar {
  explicit BackendRegistrar(BackendInfo info) { register_backend(std::move(info)); }
};

}  // namespace parafuse
