// HF safetensors reader and writer, hand-written: no library exists here.
//
// Layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {...}}, then the data. The header is parsed with
// nlohmann-json; every entry is validated (known dtype, shape product * dtype size == end-begin
// without overflow, offsets inside the file, no overlaps, no gaps, no duplicate names) so that
// a malformed file is an Error naming the file, the tensor and the problem.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/model/weight_source.h"

namespace parafuse {

class MappedFile;

struct SafetensorsEntry {
  TensorInfo info;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  SafetensorsFile(const uint8_t* data, size_t size, std::string origin);  // fuzzing, tests
  ~SafetensorsFile();
  const std::string& origin() const { return origin_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const uint8_t* data_of(const SafetensorsEntry& e) const { return data_section_ + e.begin; }
  // rows x cols slice of a 1-D or 2-D entry as F32 (WeightSource::read_f32 semantics); touches
  // only the slice's bytes. Throws naming the file and tensor on a bad range or rank > 2.
  void read_f32(const SafetensorsEntry& e, Range rows, Range cols, float* out) const;
  // The same slice in the entry's own storage bytes (plain dtypes), row-major, contiguous.
  void read_raw(const SafetensorsEntry& e, Range rows, Range cols, void* out) const;

 private:
  void parse(const uint8_t* data, size_t size);
  std::string origin_;
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  const uint8_t* data_section_ = nullptr;
};

// A directory of one model.safetensors or of shards listed by model.safetensors.index.json.
//
// FP8 checkpoints: an F8_E4M3 weight `P.weight` is dequantized on read with its `P.weight_scale`
// (value = code * scale): one scale per tensor (ModelOpt: a scalar or [1]) or one per output
// channel (compressed-tensors "channel": [rows] or [rows, 1]). The scales, the static
// activation scales (`P.input_scale`, one value) and the FP8 KV-cache scales (`k_scale`,
// `v_scale`) are not listed among tensors(): they belong to their weight. The checkpoint's
// quantization config (hf_quant_config.json, or config.json's quantization_config) must name a
// scheme read here (FP8 per tensor or per channel); block-wise FP8 and integer schemes are
// refused by name. A missing scale, a scale of the wrong shape or dtype, is one Error naming
// the tensor.
class SafetensorsWeightSource : public WeightSource {
 public:
  explicit SafetensorsWeightSource(const std::string& dir);
  // One file already open (fuzzing, tests): no quantization config, FP8 scales still bound.
  explicit SafetensorsWeightSource(std::unique_ptr<SafetensorsFile> file);
  std::string description() const override;
  void read_f32(const std::string& name, Range rows, Range cols, float* out) const override;
  // 2-D F32, BF16, F16 and F8_E4M3 tensors read natively (their bytes as stored); FP8 weights
  // with their row scales and static input_scale.
  bool reads_native(const std::string& name) const override;
  void read_native(const std::string& name, Range rows, Range cols, void* out) const override;
  void read_row_scales(const std::string& name, Range rows, float* out) const override;
  float input_scale(const std::string& name) const override;
  // "" or the quantization scheme found, e.g. "FP8 (modelopt, per-tensor weight scales)".
  const std::string& quantization() const { return quantization_; }

 private:
  using Location = std::pair<const SafetensorsFile*, const SafetensorsEntry*>;
  struct Fp8Scale {
    Location scale;
    bool per_channel = false;
    Location input_scale;  // {nullptr, nullptr} where the weight has none
  };
  void bind_fp8_scales();

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location> where_;
  std::map<std::string, Fp8Scale> fp8_scales_;  // F8_E4M3 weight -> its weight_scale
  std::string quantization_;
};

// Writes tensors to one safetensors file, sorted by name as HF does. Each tensor is stored in
// write()'s dtype (F32 or BF16) unless add() gave it its own (F32, BF16 or F8_E4M3: values are
// rounded to the nearest code, see kernels/core/fp8.h).
class SafetensorsWriter {
 public:
  void add(const std::string& name, std::vector<int64_t> shape, std::vector<float> values,
           std::optional<DType> storage = std::nullopt);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path, DType storage = DType::F32) const;

 private:
  struct Pending {
    std::vector<int64_t> shape;
    std::vector<float> values;
    std::optional<DType> storage;
  };
  std::map<std::string, Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace parafuse
