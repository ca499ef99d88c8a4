// A tiny GGUF writer for tests and fuzz seeds only (parafuse itself never writes GGUF).
//
// It writes exactly what it is told, including wrong things: any version or magic, counts that
// disagree with the entries, offsets that are misaligned or overlap, data shorter than the
// tensor needs. That is what lets the malformed-file tests build each broken file from a valid
// one with one field changed.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "kernels/core/dtype.h"
#include "tests/unit/f16_encode.h"

namespace parafuse::test {

enum GgufType : uint32_t {
  kGgufU8 = 0,
  kGgufI8 = 1,
  kGgufU16 = 2,
  kGgufI16 = 3,
  kGgufU32 = 4,
  kGgufI32 = 5,
  kGgufF32 = 6,
  kGgufBool = 7,
  kGgufString = 8,
  kGgufArray = 9,
  kGgufU64 = 10,
  kGgufI64 = 11,
  kGgufF64 = 12,
};

// GGML tensor type numbers.
enum GgmlType : uint32_t {
  kGgmlF32 = 0,
  kGgmlF16 = 1,
  kGgmlQ4_0 = 2,
  kGgmlQ4_1 = 3,
  kGgmlQ8_0 = 8,
  kGgmlBF16 = 30
};

class Bytes {
 public:
  template <typename T>
  Bytes& put(T value) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &value, sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& raw(const std::vector<uint8_t>& b) {
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

class GgufWriter {
 public:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;  // innermost first; its size is n_dims
    uint32_t type = kGgmlF32;
    std::vector<uint8_t> data;
    std::optional<uint64_t> offset;  // default: next aligned offset after the previous tensor
  };

  char magic[4] = {'G', 'G', 'U', 'F'};
  uint32_t version = 3;
  uint64_t alignment = 32;  // layout padding; add "general.alignment" yourself to declare it
  std::optional<uint64_t> tensor_count;  // override the real counts
  std::optional<uint64_t> kv_count;

  // `value` is the encoded value after the u32 type.
  GgufWriter& kv_raw(const std::string& key, uint32_t type, const std::vector<uint8_t>& value) {
    Bytes b;
    b.str(key).put<uint32_t>(type).raw(value);
    kvs_.push_back(b.bytes());
    return *this;
  }
  GgufWriter& kv_u32(const std::string& key, uint32_t v) { return kv(key, kGgufU32, v); }
  GgufWriter& kv_i32(const std::string& key, int32_t v) { return kv(key, kGgufI32, v); }
  GgufWriter& kv_u64(const std::string& key, uint64_t v) { return kv(key, kGgufU64, v); }
  GgufWriter& kv_f32(const std::string& key, float v) { return kv(key, kGgufF32, v); }
  GgufWriter& kv_bool(const std::string& key, bool v) { return kv(key, kGgufBool, uint8_t(v)); }
  GgufWriter& kv_string(const std::string& key, const std::string& v) {
    Bytes b;
    b.str(v);
    return kv_raw(key, kGgufString, b.bytes());
  }
  GgufWriter& kv_strings(const std::string& key, const std::vector<std::string>& values) {
    Bytes b;
    b.put<uint32_t>(kGgufString).put<uint64_t>(values.size());
    for (const std::string& s : values) b.str(s);
    return kv_raw(key, kGgufArray, b.bytes());
  }
  GgufWriter& kv_i32s(const std::string& key, const std::vector<int32_t>& values) {
    Bytes b;
    b.put<uint32_t>(kGgufI32).put<uint64_t>(values.size());
    for (int32_t v : values) b.put(v);
    return kv_raw(key, kGgufArray, b.bytes());
  }
  GgufWriter& kv_f32s(const std::string& key, const std::vector<float>& values) {
    Bytes b;
    b.put<uint32_t>(kGgufF32).put<uint64_t>(values.size());
    for (float v : values) b.put(v);
    return kv_raw(key, kGgufArray, b.bytes());
  }

  GgufWriter& tensor(Tensor t) {
    tensors_.push_back(std::move(t));
    return *this;
  }
  GgufWriter& tensor_f32(const std::string& name, std::vector<uint64_t> ne,
                         const std::vector<float>& values) {
    std::vector<uint8_t> data(values.size() * 4);
    std::memcpy(data.data(), values.data(), data.size());
    return tensor({name, std::move(ne), kGgmlF32, std::move(data), std::nullopt});
  }

  std::vector<uint8_t> build() const {
    Bytes b;
    b.raw({uint8_t(magic[0]), uint8_t(magic[1]), uint8_t(magic[2]), uint8_t(magic[3])});
    b.put<uint32_t>(version);
    b.put<uint64_t>(tensor_count.value_or(tensors_.size()));
    b.put<uint64_t>(kv_count.value_or(kvs_.size()));
    for (const auto& kv : kvs_) b.raw(kv);
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      const uint64_t offset = t.offset.value_or(next);
      offsets.push_back(offset);
      next = align(offset + t.data.size());
      b.str(t.name).put<uint32_t>(uint32_t(t.ne.size()));
      for (uint64_t n : t.ne) b.put<uint64_t>(n);
      b.put<uint32_t>(t.type).put<uint64_t>(offset);
    }
    std::vector<uint8_t> out = b.bytes();
    if (tensors_.empty()) return out;
    const uint64_t data_start = align(out.size());
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (tensors_[i].data.empty()) continue;  // header-only tensors (broken-file tests)
      const uint64_t at = data_start + offsets[i];
      if (out.size() < at + tensors_[i].data.size()) out.resize(at + tensors_[i].data.size());
      std::memcpy(out.data() + at, tensors_[i].data.data(), tensors_[i].data.size());
    }
    return out;
  }

 private:
  template <typename T>
  GgufWriter& kv(const std::string& key, uint32_t type, T value) {
    Bytes b;
    b.put(value);
    return kv_raw(key, type, b.bytes());
  }
  uint64_t align(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }
  std::vector<std::vector<uint8_t>> kvs_;
  std::vector<Tensor> tensors_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// One quantized block (32 elements) in GGUF layout.
inline std::vector<uint8_t> q8_0_block(float scale, const std::vector<int8_t>& q) {
  Bytes b;
  b.put<uint16_t>(f32_to_f16(scale));
  for (int8_t v : q) b.put(v);
  return b.bytes();
}
// nibbles[i] in 0..15 for element i; element i < 16 is a low nibble, i >= 16 a high one.
inline std::vector<uint8_t> pack_nibbles(const std::vector<uint8_t>& nibbles) {
  std::vector<uint8_t> packed(16);
  for (int i = 0; i < 16; ++i)
    packed[size_t(i)] = uint8_t(nibbles[size_t(i)] | (nibbles[size_t(i + 16)] << 4));
  return packed;
}
inline std::vector<uint8_t> q4_0_block(float scale, const std::vector<uint8_t>& nibbles) {
  Bytes b;
  b.put<uint16_t>(f32_to_f16(scale)).raw(pack_nibbles(nibbles));
  return b.bytes();
}
inline std::vector<uint8_t> q4_1_block(float scale, float min,
                                       const std::vector<uint8_t>& nibbles) {
  Bytes b;
  b.put<uint16_t>(f32_to_f16(scale)).put<uint16_t>(f32_to_f16(min)).raw(pack_nibbles(nibbles));
  return b.bytes();
}

}  // namespace parafuse::test
