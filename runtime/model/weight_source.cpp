// What every weight source shares: the tensor list, lookups, slice checks, whole reads.
#include "runtime/model/weight_source.h"

#include "kernels/core/error.h"

namespace parafuse {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Slice resolve_slice(const TensorInfo& info, Range rows, Range cols, const std::string& origin) {
  PF_CHECK(info.shape.size() <= 2,
           "{}: tensor '{}' has shape {}; only 1-D and 2-D tensors can be read", origin, info.name,
           shape_string(info.shape));
  Slice s;
  const auto axis = [&](const char* name, Range r, int64_t extent, int64_t& begin, int64_t& end) {
    begin = r.begin;
    end = r.end == -1 ? extent : r.end;
    PF_CHECK(begin >= 0 && begin <= end && end <= extent,
             "{}: read of tensor '{}' {} [{}, {}) is out of range for shape {}", origin, info.name,
             name, r.begin, r.end, shape_string(info.shape));
  };
  axis("rows", rows, info.rows(), s.row_begin, s.row_end);
  axis("cols", cols, info.cols(), s.col_begin, s.col_end);
  return s;
}

std::vector<std::string> WeightSource::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, _] : tensors_) out.push_back(name);
  return out;
}

const TensorInfo& WeightSource::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  PF_CHECK(it != tensors_.end(), "tensor '{}' not found in {}", name, description());
  return it->second;
}

std::vector<float> WeightSource::read_all(const std::string& name) const {
  const TensorInfo& t = info(name);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  read_f32(name, Range{}, Range{}, out.data());
  return out;
}

bool WeightSource::reads_native(const std::string& name) const {
  return info(name).dtype == DType::F32;
}

void WeightSource::read_native(const std::string& name, Range rows, Range cols, void* out) const {
  const TensorInfo& t = info(name);
  PF_CHECK(t.dtype == DType::F32,
           "{}: tensor '{}' is stored as {}, which this source reads only "
           "as F32",
           description(), name, dtype_name(t.dtype));
  read_f32(name, rows, cols, static_cast<float*>(out));
}

void WeightSource::read_row_scales(const std::string& name, Range rows, float* out) const {
  (void)rows, (void)out;
  PF_THROW("{}: tensor '{}' ({}) has no FP8 row scales", description(), name,
           dtype_name(info(name).dtype));
}

float WeightSource::input_scale(const std::string& name) const {
  info(name);  // the missing-tensor error
  return 0.0f;
}

bool WeightSource::native_cols_ok(const std::string& name, Range cols) const {
  const TensorInfo& t = info(name);
  const int64_t block = dtype_block_elements(t.dtype);
  const int64_t end = cols.end == -1 ? t.cols() : cols.end;
  return cols.begin % block == 0 && end % block == 0;
}

}  // namespace parafuse
