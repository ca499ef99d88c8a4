// The machinery of the table-driven backend op test (the test-backend-ops pattern of ggml).
//
// A case owns host inputs made from a seeded RNG, a `run` that executes the op on any Backend
// and downloads its outputs, and a `reference` computing the same outputs with the naive loops
// of backend_op_reference.h. check_op_case() compares them by normalized mean squared error
// (NMSE = sum((a-b)^2) / sum(b^2)) against a per-op tolerance, demands that NaN and Inf appear
// in the same places, and checks guard memory: every tensor lives in its own buffer with
// kGuardElements canary elements before and after it, and row padding of strided views holds
// canaries too; after the op, everything outside the output views must be bit-identical.
// Canaries are quiet NaNs, so an op that reads outside its input views also shows up as NaN.
// Written for F32-activation backends (the CPU reference and a CUDA F32 build); KV cache
// tensors may also be F16 (Backend::supports_kv_cache), whose canaries are compared as NaNs.
#pragma once

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/backend.h"
#include "kernels/core/error.h"

namespace parafuse::op_test {

// NMSE tolerance per op; 0 demands bit-identical outputs.
struct Tolerances {
  std::array<double, 10> nmse{};  // indexed by Op
  double operator()(Op op) const { return nmse[size_t(op)]; }
  Tolerances& set(Op op, double value) {
    nmse[size_t(op)] = value;
    return *this;
  }
};

constexpr int64_t kGuardElements = 64;
constexpr uint32_t kCanaryBitsF32 = 0x7fc5a5a5u;  // a quiet NaN with a recognizable payload
constexpr int32_t kCanaryI32 = -777777;           // exact in float, never a valid id

inline float canary_f32() {
  float f;
  std::memcpy(&f, &kCanaryBitsF32, 4);
  return f;
}

inline bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, 4) == 0;
}

// Tensors of one case on one backend, each in its own guarded buffer.
class GuardedTensors {
 public:
  explicit GuardedTensors(Backend& backend) : backend_(backend) {}

  // A (rows, cols) view of `dtype` — F32, or F16 (a KV cache tensor: `values` should then be
  // exact halves, round_to_f16, so that the image the op must leave alone is what the tensor
  // holds) — with `row_stride` (default cols) holding `values` (rows*cols, row-major). Outputs
  // may be changed by the op inside the view; inputs may not change at all.
  Tensor floats(DType dtype, const std::vector<float>& values, int64_t rows, int64_t cols,
                int64_t row_stride = -1, bool output = false) {
    PF_CHECK(dtype == DType::F32 || dtype == DType::F16, "test float tensors are F32 or F16");
    Entry& e = add(dtype, rows, cols, row_stride, output);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        e.image[size_t(kGuardElements + r * e.view.row_stride + c)] =
            values.at(size_t(r * cols + c));
      }
    }
    backend_.upload_f32(e.image.data(), e.flat);
    return e.view;
  }
  Tensor f32(const std::vector<float>& values, int64_t rows, int64_t cols, int64_t row_stride = -1,
             bool output = false) {
    return floats(DType::F32, values, rows, cols, row_stride, output);
  }

  Tensor i32(const std::vector<int32_t>& values, int64_t rows, int64_t cols,
             int64_t row_stride = -1, bool output = false) {
    Entry& e = add(DType::I32, rows, cols, row_stride, output);
    std::vector<int32_t> ints(e.image.size(), kCanaryI32);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const size_t at = size_t(kGuardElements + r * e.view.row_stride + c);
        ints[at] = values.at(size_t(r * cols + c));
        e.image[at] = float(ints[at]);
      }
    }
    backend_.upload_i32(ints.data(), e.flat);
    return e.view;
  }

  // The view's current contents (rows*cols, row-major), I32 converted to float.
  std::vector<float> read(const Tensor& view) {
    const Entry& e = find(view);
    const std::vector<float> flat = download(e);
    std::vector<float> out(size_t(view.numel()));
    for (int64_t r = 0; r < view.rows; ++r) {
      for (int64_t c = 0; c < view.cols; ++c) {
        out[size_t(r * view.cols + c)] = flat[size_t(kGuardElements + r * view.row_stride + c)];
      }
    }
    return out;
  }

  // One line per tensor whose memory outside its output view (or anywhere, for an input) changed.
  std::vector<std::string> memory_errors() {
    std::vector<std::string> errors;
    for (const auto& e : entries_) {
      const std::vector<float> now = download(*e);
      int64_t changed = 0, first = -1;
      for (int64_t i = 0; i < int64_t(now.size()); ++i) {
        if (e->output && in_view(*e, i)) continue;
        const float a = now[size_t(i)], b = e->image[size_t(i)];
        // (an F16 canary comes back as some NaN: the conversions may not keep its payload)
        const bool nan_pair = e->view.dtype == DType::F16 && std::isnan(a) && std::isnan(b);
        if (!same_bits(a, b) && !nan_pair) {
          ++changed;
          if (first < 0) first = i;
        }
      }
      if (changed > 0) {
        errors.push_back(fmt::format(
            "{} tensor ({}, {}) stride {}: {} element(s) outside the output view changed, first "
            "at flat index {} ({} guard elements precede the view)",
            e->output ? "output" : "input", e->view.rows, e->view.cols, e->view.row_stride, changed,
            first, kGuardElements));
      }
    }
    return errors;
  }

 private:
  struct Entry {
    Buffer buffer;
    Tensor flat;  // (1, guard + rows*row_stride + guard)
    Tensor view;
    std::vector<float> image;  // what the whole flat buffer must hold outside an output view
    bool output = false;
  };

  Entry& add(DType dtype, int64_t rows, int64_t cols, int64_t row_stride, bool output) {
    if (row_stride < 0) row_stride = cols;
    PF_CHECK(row_stride >= cols, "test tensor stride {} < cols {}", row_stride, cols);
    auto e = std::make_unique<Entry>();
    const int64_t total = 2 * kGuardElements + rows * row_stride;
    e->flat = backend_.alloc_tensor(e->buffer, dtype, 1, total);
    e->view = Tensor{static_cast<char*>(e->flat.data) + kGuardElements * dtype_size(dtype), dtype,
                     rows, cols, row_stride};
    e->image.assign(size_t(total), dtype == DType::I32 ? float(kCanaryI32) : canary_f32());
    e->output = output;
    entries_.push_back(std::move(e));
    return *entries_.back();
  }

  const Entry& find(const Tensor& view) const {
    for (const auto& e : entries_) {
      if (e->view.data == view.data) return *e;
    }
    PF_THROW("test tensor not made by this GuardedTensors");
  }

  std::vector<float> download(const Entry& e) {
    std::vector<float> flat(static_cast<size_t>(e.flat.cols));
    backend_.synchronize();
    backend_.download_f32(e.flat, flat.data());
    return flat;
  }

  static bool in_view(const Entry& e, int64_t flat_index) {
    const int64_t i = flat_index - kGuardElements;
    if (i < 0 || e.view.row_stride == 0) return false;
    const int64_t r = i / e.view.row_stride, c = i % e.view.row_stride;
    return r < e.view.rows && c < e.view.cols;
  }

  Backend& backend_;
  std::vector<std::unique_ptr<Entry>> entries_;
};

using Outputs = std::vector<std::vector<float>>;  // one row-major host vector per output

struct CaseOutput {
  Outputs outputs;
  std::vector<std::string> memory_errors;
};

struct OpCase {
  std::string name;  // [A-Za-z0-9_] only: it names a GoogleTest parameter
  Op op = Op::Gemm;
  std::function<CaseOutput(Backend&)> run;
  std::function<Outputs()> reference;
};

struct Comparison {
  bool ok = true;
  double nmse = 0.0;
  std::string detail;
};

// NMSE of `got` against `want` over the finite elements; NaN and +-Inf must coincide exactly.
inline Comparison compare_nmse(const std::vector<float>& got, const std::vector<float>& want,
                               double tolerance) {
  Comparison cmp;
  if (got.size() != want.size()) {
    cmp.ok = false;
    cmp.detail = fmt::format("size {} != expected {}", got.size(), want.size());
    return cmp;
  }
  double err = 0.0, norm = 0.0, worst = -1.0;
  size_t worst_at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float a = got[i], b = want[i];
    if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b)) {
      const bool match = (std::isnan(a) && std::isnan(b)) || a == b;
      if (!match && cmp.ok) {
        cmp.ok = false;
        cmp.detail = fmt::format("non-finite mismatch at {}: got {} expected {}", i, a, b);
      }
      continue;
    }
    const double d = double(a) - double(b);
    err += d * d;
    norm += double(b) * double(b);
    if (std::fabs(d) > worst) {
      worst = std::fabs(d);
      worst_at = i;
    }
  }
  cmp.nmse = norm > 0.0 ? err / norm : err;
  if (cmp.ok && !(cmp.nmse <= tolerance)) {
    cmp.ok = false;
    cmp.detail = fmt::format("NMSE {:.3g} > tolerance {:.3g}; worst element {}: got {} expected {}",
                             cmp.nmse, tolerance, worst_at, got[worst_at], want[worst_at]);
  }
  return cmp;
}

struct CaseResult {
  bool ok = true;
  double worst_nmse = 0.0;  // over the case's outputs
  std::string message;
};

// Runs `c` on `backend` and compares with the naive reference, or, when `baseline` is given,
// with the same case run on that backend (e.g. CUDA against the CPU backend).
inline CaseResult check_op_case(const OpCase& c, Backend& backend, const Tolerances& tolerances,
                                Backend* baseline = nullptr) {
  CaseResult result;
  CaseOutput got;
  Outputs want;
  try {
    got = c.run(backend);
    want = baseline ? c.run(*baseline).outputs : c.reference();
  } catch (const std::exception& e) {
    result.ok = false;
    result.message = fmt::format("{}: threw: {}", c.name, e.what());
    return result;
  }
  for (const std::string& e : got.memory_errors) {
    result.ok = false;
    result.message += fmt::format("{}: out-of-bounds write: {}\n", c.name, e);
  }
  if (got.outputs.size() != want.size()) {
    result.ok = false;
    result.message +=
        fmt::format("{}: {} outputs, expected {}\n", c.name, got.outputs.size(), want.size());
    return result;
  }
  for (size_t i = 0; i < want.size(); ++i) {
    const Comparison cmp = compare_nmse(got.outputs[i], want[i], tolerances(c.op));
    result.worst_nmse = std::max(result.worst_nmse, cmp.nmse);
    if (!cmp.ok) {
      result.ok = false;
      result.message +=
          fmt::format("{} ({}): output {}: {}\n", c.name, op_name(c.op), i, cmp.detail);
    }
  }
  return result;
}

}  // namespace parafuse::op_test
