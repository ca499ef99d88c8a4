// GGUF v3 reader (the llama.cpp file format), hand-written: no library exists here.
//
// Layout: magic "GGUF", u32 version (3; 2 also accepted), u64 n_tensors, u64 n_kv, then n_kv
// key/value pairs (string key, u32 type, value; arrays nest one level), then n_tensors tensor
// infos (name, u32 n_dims <= 4, u64 ne[n_dims] innermost first, u32 type, u64 offset), then
// padding to `general.alignment` (default 32), then the data section. Every count, length,
// offset and size is checked against the file size before use, so a malformed file yields an
// Error naming the field and never a crash, a huge allocation or an out-of-bounds read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "kernels/core/dtype.h"
#include "runtime/model/weight_source.h"

namespace parafuse {

// GGUF value: scalars are widened (all ints to int64 or uint64, floats to double); arrays keep
// the element kind of their first element via the vector type.
using GgufArray = std::variant<std::vector<int64_t>, std::vector<uint64_t>, std::vector<double>,
                               std::vector<bool>, std::vector<std::string>>;
using GgufValue = std::variant<int64_t, uint64_t, double, bool, std::string, GgufArray>;

struct GgufTensorInfo {
  std::string name;
  DType type = DType::F32;
  std::vector<int64_t> ne;  // innermost first, as stored
  uint64_t offset = 0;      // relative to the data section
  uint64_t nbytes = 0;
};

class MappedFile;  // runtime/model/mapped_file.h

class GgufFile {
 public:
  // Opens and validates the header; throws Error("<path>: <what is wrong>").
  explicit GgufFile(const std::string& path);
  // From memory (fuzzing, tests); `origin` names it in errors. The bytes must outlive this.
  GgufFile(const uint8_t* data, size_t size, std::string origin);
  ~GgufFile();

  const std::string& origin() const { return origin_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

  // Typed metadata access; throws naming the key when it is missing or of another type.
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  int64_t get_int(const std::string& key) const;   // any integer type
  double get_float(const std::string& key) const;  // any float or integer type
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key) const;

  // Raw bytes of one tensor (inside the mapping).
  const uint8_t* tensor_data(const GgufTensorInfo& t) const;
  // Returns a tensor's resident file pages to the kernel after it was copied out (a no-op for
  // a file parsed from memory); see MappedFile::release.
  void release_tensor_pages(const GgufTensorInfo& t) const;

 private:
  void parse(const uint8_t* data, size_t size);
  std::string origin_;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  const uint8_t* data_section_ = nullptr;
};

// Dequantize `n` elements of a row stored as `type` starting at element `first` (F32, F16, BF16,
// Q8_0, Q4_0, Q4_1; block types need first and n aligned to the 32-element block, or the
// function dequantizes the covering blocks and copies the asked-for part).
void dequantize_row(DType type, const uint8_t* row, int64_t first, int64_t n, float* out);

// A WeightSource over a GGUF file of arch "llama" or "deci": translates HF names to GGUF names
// (model.layers.N.self_attn.q_proj.weight <-> blk.N.attn_q.weight ...) and undoes the Q/K row
// permutation llama.cpp's converter applies, so rows come back in HF rotate-half order. GGUF
// tensors with no HF counterpart (e.g. rope_freqs.weight) keep their GGUF name.
class GgufWeightSource : public WeightSource {
 public:
  explicit GgufWeightSource(std::shared_ptr<const GgufFile> file);
  std::string description() const override;
  void read_f32(const std::string& name, Range rows, Range cols, float* out) const override;
  // Every GGUF storage type (F32, F16, BF16, Q8_0, Q4_0, Q4_1), Q/K rows unpermuted; both reads
  // give the tensor's file pages back afterwards (weights are read once, at load).
  bool reads_native(const std::string& name) const override;
  void read_native(const std::string& name, Range rows, Range cols, void* out) const override;
  const GgufFile& file() const { return *file_; }

 private:
  // Q/K heads of `block` (scalar metadata, or one entry per block for arch "deci").
  int heads_of_block(const std::string& key, int block) const;
  // Q/K heads the converter permuted `t` by (0: not permuted), checked against its shape.
  int permuted_heads(const GgufTensorInfo& t, const std::string& name) const;
  std::shared_ptr<const GgufFile> file_;
  std::string arch_;  // general.architecture
  std::map<std::string, std::string> hf_to_gguf_;
};

}  // namespace parafuse

namespace parafuse {
struct ModelConfig;
class Tokenizer;
// ModelConfig from GGUF metadata (general.architecture "llama"; "deci" where per-block arrays
// such as {arch}.attention.head_count_kv and {arch}.feed_forward_length are given).
ModelConfig config_from_gguf(const GgufFile& file);
// The byte-level BPE tokenizer in `tokenizer.ggml.*` (gguf_tokenizer.cpp).
Tokenizer tokenizer_from_gguf(const GgufFile& file);
}  // namespace parafuse
