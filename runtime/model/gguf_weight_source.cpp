// GgufWeightSource: a GGUF file seen through HF names and HF layouts.
//
// Everything inside parafuse speaks HF tensor names, (out, in) linear weights and HF's
// rotate-half RoPE layout. GGUF differs in all three: llama.cpp names ("blk.3.attn_q.weight"),
// ne innermost first (ne = [in, out]), and Q/K rows permuted by the converter so that each
// head's RoPE pairs are adjacent. This file translates names, reverses shapes and undoes the
// permutation row by row, so callers cannot tell a GGUF source from a safetensors one.
#include <algorithm>
#include <cstring>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"

namespace parafuse {
namespace {

// GGUF stem inside "blk.N." <-> HF stem inside "model.layers.N.".
struct StemPair {
  const char* gguf;
  const char* hf;
};
constexpr StemPair kBlockStems[] = {
    {"attn_norm", "input_layernorm"},    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},      {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};
constexpr StemPair kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// "blk.12.attn_q.weight" -> block 12, stem "attn_q", kind "weight"; false if not that form.
bool split_block_name(const std::string& name, int* block, std::string* stem, std::string* kind) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  size_t pos = kPrefix.size();
  int64_t number = 0;
  const size_t digits_begin = pos;
  while (pos < name.size() && name[pos] >= '0' && name[pos] <= '9' && pos - digits_begin < 9) {
    number = number * 10 + (name[pos] - '0');
    ++pos;
  }
  if (pos == digits_begin || pos >= name.size() || name[pos] != '.') return false;
  const size_t last_dot = name.rfind('.');
  if (last_dot <= pos + 1) return false;
  *block = int(number);
  *stem = name.substr(pos + 1, last_dot - pos - 1);
  *kind = name.substr(last_dot + 1);
  return true;
}

// HF name of a GGUF tensor, or the GGUF name itself when it has no HF counterpart.
std::string hf_name_of(const std::string& gguf_name) {
  for (const StemPair& pair : kGlobalNames) {
    if (gguf_name == pair.gguf) return pair.hf;
  }
  int block = 0;
  std::string stem, kind;
  if (split_block_name(gguf_name, &block, &stem, &kind) && (kind == "weight" || kind == "bias")) {
    for (const StemPair& pair : kBlockStems) {
      if (stem == pair.gguf) return fmt::format("model.layers.{}.{}.{}", block, pair.hf, kind);
    }
  }
  return gguf_name;
}

// The GGUF row that holds HF row `hf_row` of a Q/K weight permuted with `n_head` heads.
// The converter did w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2): GGUF row h*hd + 2*j + t
// holds HF row h*hd + t*(hd/2) + j.
int64_t permuted_row(int64_t hf_row, int64_t head_dim) {
  const int64_t head = hf_row / head_dim;
  const int64_t within = hf_row % head_dim;
  const int64_t half = head_dim / 2;
  const int64_t t = within / half;
  const int64_t j = within % half;
  return head * head_dim + 2 * j + t;
}

}  // namespace

GgufWeightSource::GgufWeightSource(std::shared_ptr<const GgufFile> file) : file_(std::move(file)) {
  PF_CHECK(file_->has("general.architecture"), "{}: metadata key 'general.architecture' is missing",
           file_->origin());
  arch_ = file_->get_string("general.architecture");
  PF_CHECK(arch_ == "llama" || arch_ == "deci",
           "{}: general.architecture '{}' is not supported (supported: llama, deci)",
           file_->origin(), arch_);
  for (const GgufTensorInfo& t : file_->tensors()) {
    const std::string hf = hf_name_of(t.name);
    const bool inserted = hf_to_gguf_.emplace(hf, t.name).second;
    PF_CHECK(inserted, "{}: tensors '{}' and '{}' both map to '{}'", file_->origin(),
             hf_to_gguf_.at(hf), t.name, hf);
    TensorInfo info;
    info.name = hf;
    info.dtype = t.type;
    info.shape.assign(t.ne.rbegin(), t.ne.rend());  // HF order: outermost first
    tensors_.emplace(hf, std::move(info));
  }
}

std::string GgufWeightSource::description() const {
  return fmt::format("gguf {} ({} tensors, arch {})", file_->origin(), file_->tensors().size(),
                     arch_);
}

int GgufWeightSource::heads_of_block(const std::string& key, int block) const {
  const GgufValue& value = file_->metadata().at(key);
  int64_t heads = 0;
  if (std::holds_alternative<GgufArray>(value)) {
    const std::vector<int64_t> per_block = file_->get_ints(key);
    PF_CHECK(block >= 0 && size_t(block) < per_block.size(),
             "{}: metadata '{}' has {} entries, no entry for block {}", file_->origin(), key,
             per_block.size(), block);
    heads = per_block[size_t(block)];
  } else {
    heads = file_->get_int(key);
  }
  PF_CHECK(heads > 0 && heads <= (1 << 20), "{}: metadata '{}' = {} for block {} (must be > 0)",
           file_->origin(), key, heads, block);
  return int(heads);
}

int GgufWeightSource::permuted_heads(const GgufTensorInfo& t, const std::string& name) const {
  // Q/K weights (and biases) were permuted by llama.cpp's converter; find the head count.
  int block = 0;
  std::string stem, kind;
  if (!split_block_name(t.name, &block, &stem, &kind) || (stem != "attn_q" && stem != "attn_k"))
    return 0;
  const std::string& origin = file_->origin();
  const std::string prefix = arch_ + ".attention.";
  std::string key = prefix + (stem == "attn_q" ? "head_count" : "head_count_kv");
  if (!file_->has(key)) key = prefix + "head_count";  // no kv count: kv heads = heads
  PF_CHECK(file_->has(key), "{}: metadata key '{}' is missing (needed to read '{}')", origin, key,
           name);
  const int n_head = heads_of_block(key, block);
  const int64_t n_cols = t.ne[0];
  const int64_t n_rows = t.ne.size() == 2 ? t.ne[1] : 1;
  const int64_t permuted_len = t.ne.size() == 2 ? n_rows : n_cols;
  PF_CHECK(permuted_len % (2 * int64_t(n_head)) == 0,
           "{}: tensor '{}': {} rows do not split into {} heads of even size", origin, name,
           permuted_len, n_head);
  return n_head;
}

void GgufWeightSource::read_f32(const std::string& name, Range rows, Range cols, float* out) const {
  const std::string& origin = file_->origin();
  const Slice slice = resolve_slice(info(name), rows, cols, origin);
  const GgufTensorInfo& t = *file_->find_tensor(hf_to_gguf_.at(name));
  const int64_t n_cols = t.ne[0];                         // HF (out, in): in = ne[0]
  const int64_t n_rows = t.ne.size() == 2 ? t.ne[1] : 1;  // out = ne[1]
  const int64_t row_begin = slice.row_begin, row_end = slice.row_end;
  const int64_t col_begin = slice.col_begin, col_end = slice.col_end;
  const int64_t out_cols = slice.cols();
  const uint8_t* data = file_->tensor_data(t);
  const uint64_t row_bytes = t.nbytes / uint64_t(n_rows);
  const int n_head = permuted_heads(t, name);

  if (t.ne.size() == 1) {  // one row; a Q/K bias is permuted along its only axis
    if (n_head == 0) {
      dequantize_row(t.type, data, col_begin, out_cols, out);
    } else {
      const int64_t head_dim = n_cols / n_head;
      for (int64_t c = col_begin; c < col_end; ++c) {
        dequantize_row(t.type, data, permuted_row(c, head_dim), 1, out + (c - col_begin));
      }
    }
    file_->release_tensor_pages(t);
    return;
  }
  const int64_t head_dim = n_head == 0 ? 0 : n_rows / n_head;
  for (int64_t r = row_begin; r < row_end; ++r) {  // out: (row_end-row_begin, out_cols)
    const int64_t gguf_row = n_head == 0 ? r : permuted_row(r, head_dim);
    dequantize_row(t.type, data + uint64_t(gguf_row) * row_bytes, col_begin, out_cols,
                   out + (r - row_begin) * out_cols);
  }
  file_->release_tensor_pages(t);
}

bool GgufWeightSource::reads_native(const std::string& name) const {
  return info(name).shape.size() == 2;
}

void GgufWeightSource::read_native(const std::string& name, Range rows, Range cols,
                                   void* out) const {
  const std::string& origin = file_->origin();
  const TensorInfo& hf = info(name);
  PF_CHECK(hf.shape.size() == 2, "{}: tensor '{}' has shape {}; native reads are of 2-D tensors",
           origin, name, shape_string(hf.shape));
  const Slice slice = resolve_slice(hf, rows, cols, origin);
  PF_CHECK(native_cols_ok(name, cols),
           "{}: tensor '{}' ({}) columns [{}, {}) do not fall on its {}-element blocks", origin,
           name, dtype_name(hf.dtype), slice.col_begin, slice.col_end,
           dtype_block_elements(hf.dtype));
  const GgufTensorInfo& t = *file_->find_tensor(hf_to_gguf_.at(name));
  const uint64_t row_bytes = t.nbytes / uint64_t(t.ne[1]);
  const size_t skip = dtype_row_bytes(t.type, slice.col_begin);
  const size_t out_row_bytes = dtype_row_bytes(t.type, slice.cols());
  const int n_head = permuted_heads(t, name);
  const int64_t head_dim = n_head == 0 ? 0 : t.ne[1] / n_head;
  const uint8_t* data = file_->tensor_data(t);
  auto* dst = static_cast<uint8_t*>(out);
  for (int64_t r = slice.row_begin; r < slice.row_end; ++r) {
    const int64_t gguf_row = n_head == 0 ? r : permuted_row(r, head_dim);
    std::memcpy(dst + size_t(r - slice.row_begin) * out_row_bytes,
                data + uint64_t(gguf_row) * row_bytes + skip, out_row_bytes);
  }
  file_->release_tensor_pages(t);
}

}  // namespace parafuse
