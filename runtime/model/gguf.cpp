// GGUF parsing and dequantization.
//
// The header of a GGUF file is a stream of length-prefixed fields with no framing, so a
// hostile or truncated file can claim any count or length. Every read goes through ByteReader,
// which checks the bytes remaining first; counts are checked against the smallest number of
// bytes their elements could take before anything is reserved. Once the header is parsed,
// every tensor's [offset, offset + nbytes) is checked against the file, against the alignment
// and against every other tensor, so later reads (GgufWeightSource) need no checks of their own.
#include "runtime/model/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/core/error.h"
#include "kernels/core/quant.h"  // dequantize_block
#include "runtime/model/mapped_file.h"

namespace parafuse {
namespace {

// GGUF metadata value types (gguf spec, enum gguf_metadata_value_type).
enum GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

constexpr int64_t kQuantBlock = 32;  // elements per Q8_0 / Q4_0 / Q4_1 block
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kDefaultAlignment = 32;

// Smallest encoded size of one value of `type` (strings: the u64 length alone); 0 if unknown.
size_t min_encoded_size(uint32_t type) {
  switch (type) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
    case kString:
      return 8;
    case kArray:
      return 12;  // u32 element type + u64 count
    default:
      return 0;
  }
}

// GGML tensor type numbers we read -> DType; false for any other number.
bool dtype_from_ggml(uint32_t ggml_type, DType* out) {
  switch (ggml_type) {
    case 0:
      *out = DType::F32;
      return true;
    case 1:
      *out = DType::F16;
      return true;
    case 2:
      *out = DType::Q4_0;
      return true;
    case 3:
      *out = DType::Q4_1;
      return true;
    case 8:
      *out = DType::Q8_0;
      return true;
    case 30:
      *out = DType::BF16;
      return true;
    default:
      return false;
  }
}

// Bytes per 32-element block of a quantized type, 0 for plain types.
size_t block_bytes(DType type) {
  switch (type) {
    case DType::Q8_0:
      return 2 + 32;  // f16 scale, 32 x int8
    case DType::Q4_0:
      return 2 + 16;  // f16 scale, 32 x 4-bit
    case DType::Q4_1:
      return 2 + 2 + 16;  // f16 scale, f16 min, 32 x 4-bit
    default:
      return 0;
  }
}

const char* value_kind_name(const GgufValue& v) {
  switch (v.index()) {
    case 0:
      return "signed integer";
    case 1:
      return "unsigned integer";
    case 2:
      return "float";
    case 3:
      return "bool";
    case 4:
      return "string";
    default: {
      const auto& array = std::get<GgufArray>(v);
      switch (array.index()) {
        case 0:
          return "array of signed integers";
        case 1:
          return "array of unsigned integers";
        case 2:
          return "array of floats";
        case 3:
          return "array of bools";
        default:
          return "array of strings";
      }
    }
  }
}

// Bounds-checked little-endian reader over the header bytes.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, const std::string& origin)
      : data_(data), size_(size), origin_(origin) {}
  size_t position() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string read_string(const std::string& what) {
    const uint64_t length = read<uint64_t>(what + " length");
    PF_CHECK(length <= remaining(), "{}: {}: string length {} exceeds the {} bytes remaining",
             origin_, what, length, remaining());
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(length));
    pos_ += size_t(length);
    return s;
  }

  // Throws unless `count` elements of at least `min_size` bytes each can still fit.
  void check_count(uint64_t count, size_t min_size, const std::string& what) const {
    PF_CHECK(min_size == 0 || count <= remaining() / min_size,
             "{}: {} = {} cannot fit in the {} bytes remaining (each takes at least {} bytes)",
             origin_, what, count, remaining(), min_size);
  }

 private:
  void need(size_t n, const std::string& what) const {
    PF_CHECK(n <= remaining(), "{}: truncated: {} needs {} bytes at offset {}, file size is {}",
             origin_, what, n, pos_, size_);
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& origin_;
};

// One scalar of `type` (not an array), widened to the GgufValue kinds.
GgufValue read_scalar(ByteReader& in, uint32_t type, const std::string& what) {
  switch (type) {
    case kU8:
      return uint64_t(in.read<uint8_t>(what));
    case kI8:
      return int64_t(in.read<int8_t>(what));
    case kU16:
      return uint64_t(in.read<uint16_t>(what));
    case kI16:
      return int64_t(in.read<int16_t>(what));
    case kU32:
      return uint64_t(in.read<uint32_t>(what));
    case kI32:
      return int64_t(in.read<int32_t>(what));
    case kU64:
      return in.read<uint64_t>(what);
    case kI64:
      return in.read<int64_t>(what);
    case kF32:
      return double(in.read<float>(what));
    case kF64:
      return in.read<double>(what);
    case kBool:
      return in.read<uint8_t>(what) != 0;
    case kString:
      return in.read_string(what);
    default:
      PF_THROW("{}: unknown value type {}", what, type);  // caller checked; unreachable
  }
}

template <typename T>
std::vector<T> read_array_of(ByteReader& in, uint32_t elem_type, uint64_t count,
                             const std::string& what) {
  std::vector<T> values;
  values.reserve(size_t(count));  // count was checked against the bytes remaining
  for (uint64_t i = 0; i < count; ++i) {
    values.push_back(std::get<T>(read_scalar(in, elem_type, what)));
  }
  return values;
}

GgufValue read_value(ByteReader& in, uint32_t type, const std::string& origin,
                     const std::string& what) {
  PF_CHECK(min_encoded_size(type) != 0, "{}: {}: unknown value type {}", origin, what, type);
  if (type != kArray) return read_scalar(in, type, what);
  const uint32_t elem_type = in.read<uint32_t>(what + " element type");
  PF_CHECK(elem_type != kArray, "{}: {}: nested arrays are not supported", origin, what);
  PF_CHECK(min_encoded_size(elem_type) != 0, "{}: {}: unknown array element type {}", origin, what,
           elem_type);
  const uint64_t count = in.read<uint64_t>(what + " array count");
  in.check_count(count, min_encoded_size(elem_type), what + " array count");
  switch (elem_type) {
    case kU8:
    case kU16:
    case kU32:
    case kU64:
      return GgufArray(read_array_of<uint64_t>(in, elem_type, count, what));
    case kI8:
    case kI16:
    case kI32:
    case kI64:
      return GgufArray(read_array_of<int64_t>(in, elem_type, count, what));
    case kF32:
    case kF64:
      return GgufArray(read_array_of<double>(in, elem_type, count, what));
    case kBool:
      return GgufArray(read_array_of<bool>(in, elem_type, count, what));
    default:
      return GgufArray(read_array_of<std::string>(in, elem_type, count, what));
  }
}

// a + b or a * b into *out; false on uint64 overflow.
bool checked_add(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

}  // namespace

GgufFile::GgufFile(const std::string& path)
    : origin_(path), file_(std::make_unique<MappedFile>(path)) {
  parse(file_->data(), file_->size());
}

GgufFile::GgufFile(const uint8_t* data, size_t size, std::string origin)
    : origin_(std::move(origin)) {
  parse(data, size);
}

GgufFile::~GgufFile() = default;

void GgufFile::parse(const uint8_t* data, size_t size) {
  ByteReader in(data, size, origin_);
  const uint32_t magic = in.read<uint32_t>("magic");
  PF_CHECK(std::memcmp(&magic, "GGUF", 4) == 0, "{}: bad magic 0x{:08x}: not a GGUF file", origin_,
           magic);
  version_ = in.read<uint32_t>("version");
  PF_CHECK(version_ == 2 || version_ == 3,
           "{}: GGUF version {} is not supported (2 and 3 are; big-endian files are not)", origin_,
           version_);
  const uint64_t n_tensors = in.read<uint64_t>("tensor count");
  const uint64_t n_kv = in.read<uint64_t>("metadata count");
  // Smallest key/value: u64 key length + u32 type + 1-byte value. Smallest tensor info:
  // u64 name length + u32 n_dims + u32 type + u64 offset (n_dims = 0 gets its own error).
  in.check_count(n_kv, 8 + 4 + 1, "metadata count");
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = in.read_string(fmt::format("metadata key #{}", i));
    const std::string what = fmt::format("metadata '{}'", key);
    const uint32_t type = in.read<uint32_t>(what + " type");
    GgufValue value = read_value(in, type, origin_, what);
    const bool inserted = metadata_.emplace(std::move(key), std::move(value)).second;
    PF_CHECK(inserted, "{}: duplicate {}", origin_, what);
  }
  in.check_count(n_tensors, 8 + 4 + 4 + 8, "tensor count");

  uint64_t alignment = kDefaultAlignment;
  if (has("general.alignment")) {
    const GgufValue& v = metadata_.at("general.alignment");
    PF_CHECK(v.index() <= 1, "{}: metadata 'general.alignment' is a {}, expected an integer",
             origin_, value_kind_name(v));
    const bool negative = v.index() == 0 && std::get<int64_t>(v) < 0;
    alignment = v.index() == 0 ? uint64_t(std::get<int64_t>(v)) : std::get<uint64_t>(v);
    PF_CHECK(!negative && alignment != 0 && (alignment & (alignment - 1)) == 0,
             "{}: general.alignment = {} must be a nonzero power of two", origin_,
             negative ? std::to_string(std::get<int64_t>(v)) : std::to_string(alignment));
  }

  tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = in.read_string(fmt::format("tensor #{} name", i));
    const std::string what = fmt::format("tensor '{}'", t.name);
    const uint32_t n_dims = in.read<uint32_t>(what + " n_dims");
    PF_CHECK(n_dims >= 1 && n_dims <= kMaxDims, "{}: {}: n_dims = {} (must be 1..{})", origin_,
             what, n_dims, kMaxDims);
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = in.read<uint64_t>(fmt::format("{} ne[{}]", what, d));
      PF_CHECK(ne >= 1 && ne <= uint64_t(std::numeric_limits<int64_t>::max()),
               "{}: {}: ne[{}] = {} (each dimension must be >= 1)", origin_, what, d, int64_t(ne));
      PF_CHECK(checked_mul(n_elements, ne, &n_elements) &&
                   n_elements <= uint64_t(std::numeric_limits<int64_t>::max()),
               "{}: {}: element count overflows", origin_, what);
      t.ne.push_back(int64_t(ne));
    }
    const uint32_t ggml_type = in.read<uint32_t>(what + " type");
    PF_CHECK(dtype_from_ggml(ggml_type, &t.type),
             "{}: {}: tensor type {} is not supported (F32=0, F16=1, Q4_0=2, Q4_1=3, Q8_0=8, "
             "BF16=30)",
             origin_, what, ggml_type);
    t.offset = in.read<uint64_t>(what + " offset");
    const size_t per_block = block_bytes(t.type);
    if (per_block != 0) {
      PF_CHECK(t.ne[0] % kQuantBlock == 0,
               "{}: {}: ne[0] = {} is not a multiple of the {} block size {}", origin_, what,
               t.ne[0], dtype_name(t.type), kQuantBlock);
      const uint64_t n_blocks = n_elements / kQuantBlock;
      PF_CHECK(checked_mul(n_blocks, per_block, &t.nbytes), "{}: {}: byte size overflows", origin_,
               what);
    } else {
      PF_CHECK(checked_mul(n_elements, dtype_size(t.type), &t.nbytes),
               "{}: {}: byte size overflows", origin_, what);
    }
    PF_CHECK(t.offset % alignment == 0, "{}: {}: offset {} is not a multiple of alignment {}",
             origin_, what, t.offset, alignment);
    const bool inserted = index_.emplace(t.name, tensors_.size()).second;
    PF_CHECK(inserted, "{}: duplicate {}", origin_, what);
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of `alignment` after the tensor infos.
  const uint64_t header_end = in.position();
  uint64_t data_start = 0;
  PF_CHECK(checked_add(header_end, alignment - 1, &data_start),
           "{}: general.alignment = {} overflows the data offset", origin_, alignment);
  data_start -= data_start % alignment;
  for (const GgufTensorInfo& t : tensors_) {
    uint64_t begin = 0, end = 0;
    const bool ok = checked_add(data_start, t.offset, &begin) && checked_add(begin, t.nbytes, &end);
    PF_CHECK(ok && end <= size, "{}: tensor '{}': data [{}, {}) past end of file (size {})",
             origin_, t.name, ok ? std::to_string(begin) : "overflow",
             ok ? std::to_string(end) : "overflow", size);
  }
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& prev = *by_offset[i - 1];
    const GgufTensorInfo& next = *by_offset[i];
    PF_CHECK(prev.offset + prev.nbytes <= next.offset,
             "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap (offsets in the data section)",
             origin_, prev.name, prev.offset, prev.offset + prev.nbytes, next.name, next.offset,
             next.offset + next.nbytes);
  }
  data_section_ = tensors_.empty() ? nullptr : data + data_start;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* GgufFile::tensor_data(const GgufTensorInfo& t) const {
  return data_section_ + t.offset;
}

void GgufFile::release_tensor_pages(const GgufTensorInfo& t) const {
  if (file_) file_->release(tensor_data(t), size_t(t.nbytes));
}

namespace {
const GgufValue& lookup(const std::map<std::string, GgufValue>& metadata, const std::string& origin,
                        const std::string& key) {
  auto it = metadata.find(key);
  PF_CHECK(it != metadata.end(), "{}: metadata key '{}' is missing", origin, key);
  return it->second;
}

int64_t to_int(const GgufValue& v, const std::string& origin, const std::string& key) {
  if (const auto* s = std::get_if<int64_t>(&v)) return *s;
  if (const auto* u = std::get_if<uint64_t>(&v)) {
    PF_CHECK(*u <= uint64_t(std::numeric_limits<int64_t>::max()),
             "{}: metadata '{}' = {} is too large", origin, key, *u);
    return int64_t(*u);
  }
  PF_THROW("{}: metadata '{}' is a {}, expected an integer", origin, key, value_kind_name(v));
}

const GgufArray& to_array(const GgufValue& v, const std::string& origin, const std::string& key) {
  const auto* array = std::get_if<GgufArray>(&v);
  PF_CHECK(array != nullptr, "{}: metadata '{}' is a {}, expected an array", origin, key,
           value_kind_name(v));
  return *array;
}
}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
  return to_int(lookup(metadata_, origin_, key), origin_, key);
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = lookup(metadata_, origin_, key);
  if (const auto* d = std::get_if<double>(&v)) return *d;
  return double(to_int(v, origin_, key));
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = lookup(metadata_, origin_, key);
  const auto* b = std::get_if<bool>(&v);
  PF_CHECK(b != nullptr, "{}: metadata '{}' is a {}, expected a bool", origin_, key,
           value_kind_name(v));
  return *b;
}

const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = lookup(metadata_, origin_, key);
  const auto* s = std::get_if<std::string>(&v);
  PF_CHECK(s != nullptr, "{}: metadata '{}' is a {}, expected a string", origin_, key,
           value_kind_name(v));
  return *s;
}

const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  const GgufValue& v = lookup(metadata_, origin_, key);
  const auto* strings = std::get_if<std::vector<std::string>>(&to_array(v, origin_, key));
  PF_CHECK(strings != nullptr, "{}: metadata '{}' is a {}, expected an array of strings", origin_,
           key, value_kind_name(v));
  return *strings;
}

std::vector<int64_t> GgufFile::get_ints(const std::string& key) const {
  const GgufValue& v = lookup(metadata_, origin_, key);
  const GgufArray& array = to_array(v, origin_, key);
  if (const auto* s = std::get_if<std::vector<int64_t>>(&array)) return *s;
  const auto* u = std::get_if<std::vector<uint64_t>>(&array);
  PF_CHECK(u != nullptr, "{}: metadata '{}' is a {}, expected an array of integers", origin_, key,
           value_kind_name(v));
  std::vector<int64_t> out;
  out.reserve(u->size());
  for (uint64_t x : *u) out.push_back(to_int(GgufValue(x), origin_, key));
  return out;
}

namespace {
float read_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

}  // namespace

void dequantize_row(DType type, const uint8_t* row, int64_t first, int64_t n, float* out) {
  PF_CHECK(first >= 0 && n >= 0, "dequantize_row: bad range first={} n={}", first, n);
  switch (type) {
    case DType::F32:
      std::memcpy(out, row + first * 4, size_t(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = read_f16(row + (first + i) * 2);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, row + (first + i) * 2, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1: {
      const size_t per_block = block_bytes(type);
      float scratch[kQuantBlock];
      int64_t done = 0;
      while (done < n) {
        const int64_t element = first + done;
        const int64_t block = element / kQuantBlock;
        const int64_t in_block = element % kQuantBlock;
        const int64_t take = std::min(kQuantBlock - in_block, n - done);
        const uint8_t* src = row + block * int64_t(per_block);
        if (in_block == 0 && take == kQuantBlock) {
          dequantize_block(type, src, out + done);  // aligned full block: no copy
        } else {
          dequantize_block(type, src, scratch);
          std::memcpy(out + done, scratch + in_block, size_t(take) * sizeof(float));
        }
        done += take;
      }
      return;
    }
    default:
      PF_THROW("dequantize_row: dtype {} is not a GGUF storage type", dtype_name(type));
  }
}

}  // namespace parafuse
