// HF safetensors: strict reader, sliced F32 reads, and a writer.
//
// Validation follows the HF library's own rules (header <= 100 MB, starts with '{', every
// tensor's byte range exactly its shape * dtype size, ranges sorted by offset tile the data
// section with no gap or overlap) plus one it misses: nlohmann-json (like serde) keeps the
// last of two equal keys, so duplicate names are caught by a parse callback. Each problem is
// one Error naming the file and the tensor, so a bad checkpoint says what is wrong with it.
#include "runtime/model/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "kernels/core/fp8.h"
#include "runtime/config/read_file.h"
#include "runtime/model/mapped_file.h"

namespace parafuse {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the HF library's limit
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string json_kind(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "a list";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_float:
      return "a float";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    default:
      return "an invalid value";
  }
}

// True (with *out set) when `j` is an integer in [0, INT64_MAX].
bool as_nonnegative(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return *out <= uint64_t(std::numeric_limits<int64_t>::max());
  }
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = uint64_t(v);
    return true;
  }
  return false;
}

// Parses JSON text; the first duplicate key of any object is reported (nlohmann keeps the last
// silently). `what` names the text in messages ("header", "index").
json parse_json_strict(const char* begin, const char* end, const std::string& origin,
                       const char* what, bool top_keys_are_tensors) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool duplicate_is_tensor = false;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) {
        duplicate = key;
        duplicate_is_tensor = top_keys_are_tensors && depth == 1;
      }
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(begin, end, callback, /*allow_exceptions=*/true);
  } catch (const json::parse_error& e) {
    PF_THROW("{}: {} is not valid JSON (at byte {} of the {}): {}", origin, what, e.byte, what,
             e.what());
  } catch (const json::exception& e) {
    PF_THROW("{}: {} could not be parsed: {}", origin, what, e.what());
  }
  if (!duplicate.empty()) {
    if (duplicate_is_tensor) {
      PF_THROW("{}: duplicate tensor name '{}' in the {}", origin, duplicate, what);
    }
    PF_THROW("{}: duplicate key '{}' in the {}", origin, duplicate, what);
  }
  return parsed;
}

// The HF dtype names parafuse does not read, so that the message can say "not supported"
// rather than "unknown".
bool is_other_hf_dtype(const std::string& s) {
  static const std::set<std::string> kOthers = {
      "BOOL", "U8",  "I8",      "I16",     "U16", "I32",     "U32",     "I64",
      "U64",  "F64", "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};
  return kOthers.count(s) != 0;
}

SafetensorsEntry parse_entry(const std::string& origin, const std::string& name,
                             const json& value) {
  if (!value.is_object()) {
    PF_THROW("{}: tensor '{}': entry is {}, expected an object with dtype, shape, data_offsets",
             origin, name, json_kind(value));
  }
  SafetensorsEntry e;
  e.info.name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) {
    PF_THROW("{}: tensor '{}': missing or non-string 'dtype'", origin, name);
  }
  const std::string& dtype = dtype_it->get_ref<const std::string&>();
  if (dtype == "F32") {
    e.info.dtype = DType::F32;
  } else if (dtype == "F16") {
    e.info.dtype = DType::F16;
  } else if (dtype == "BF16") {
    e.info.dtype = DType::BF16;
  } else if (dtype == "F8_E4M3") {
    e.info.dtype = DType::F8_E4M3;
  } else if (is_other_hf_dtype(dtype)) {
    PF_THROW(
        "{}: tensor '{}' has dtype {}, which parafuse does not read (F32, F16, BF16, F8_E4M3 "
        "only)",
        origin, name, dtype);
  } else {
    PF_THROW("{}: tensor '{}' has unknown dtype '{}'", origin, name, dtype);
  }

  const auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array()) {
    PF_THROW("{}: tensor '{}': missing 'shape' or it is not a list", origin, name);
  }
  uint64_t n_elements = 1;
  for (const json& dim : *shape_it) {
    uint64_t d = 0;
    if (!as_nonnegative(dim, &d)) {
      PF_THROW("{}: tensor '{}': shape {} is not a list of non-negative integers", origin, name,
               shape_it->dump());
    }
    e.info.shape.push_back(int64_t(d));
    if (__builtin_mul_overflow(n_elements, d, &n_elements)) {
      PF_THROW("{}: tensor '{}': shape {} overflows 64 bits", origin, name, shape_it->dump());
    }
  }
  const uint64_t element_size = dtype_size(e.info.dtype);
  uint64_t n_bytes = 0;
  if (__builtin_mul_overflow(n_elements, element_size, &n_bytes)) {
    PF_THROW("{}: tensor '{}': shape {} of {} overflows 64 bits in bytes", origin, name,
             shape_it->dump(), dtype);
  }

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !as_nonnegative((*offsets_it)[0], &e.begin) || !as_nonnegative((*offsets_it)[1], &e.end)) {
    PF_THROW("{}: tensor '{}': 'data_offsets' must be [begin, end] with non-negative integers",
             origin, name);
  }
  if (e.end < e.begin) {
    PF_THROW("{}: tensor '{}': data_offsets [{}, {}] end before they begin", origin, name, e.begin,
             e.end);
  }
  if (e.end - e.begin != n_bytes) {
    PF_THROW("{}: tensor '{}': data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}",
             origin, name, e.begin, e.end, e.end - e.begin, shape_string(e.info.shape), dtype,
             n_bytes);
  }
  return e;
}

// The checkpoint's quantization scheme, from ModelOpt's hf_quant_config.json or config.json's
// quantization_config: "" when it declares none, a description when it is an FP8 scheme read
// here, an Error naming the file and the scheme otherwise.
std::string read_quantization_config(const fs::path& root) {
  std::error_code ec;
  const fs::path modelopt = root / "hf_quant_config.json";
  auto text_of = [](const json& j) { return j.is_string() ? j.get<std::string>() : j.dump(); };
  if (fs::is_regular_file(modelopt, ec)) {
    const std::string origin = modelopt.string();
    const std::string s = read_file(origin, "quantization config");
    const json q = parse_json_strict(s.data(), s.data() + s.size(), origin, "file", false);
    const json* algo = nullptr;
    if (q.is_object() && q.contains("quantization") && q["quantization"].is_object() &&
        q["quantization"].contains("quant_algo"))
      algo = &q["quantization"]["quant_algo"];
    if (!algo) PF_THROW("{}: expected {{\"quantization\": {{\"quant_algo\": ...}}}}", origin);
    if (*algo != "FP8") {
      PF_THROW("{}: quant_algo {} is not supported (parafuse reads ModelOpt FP8 checkpoints)",
               origin, text_of(*algo));
    }
    return "FP8 (ModelOpt)";
  }
  const fs::path config = root / "config.json";
  if (!fs::is_regular_file(config, ec)) return "";
  const std::string origin = config.string();
  const std::string s = read_file(origin, "model config");
  const json c = parse_json_strict(s.data(), s.data() + s.size(), origin, "file", false);
  if (!c.is_object() || !c.contains("quantization_config") || c["quantization_config"].is_null())
    return "";
  const json& q = c["quantization_config"];
  const std::string method =
      q.is_object() && q.contains("quant_method") ? text_of(q["quant_method"]) : "";
  if (method == "modelopt") {
    const std::string algo = q.contains("quant_algo") ? text_of(q["quant_algo"]) : "FP8";
    if (algo != "FP8")
      PF_THROW("{}: quantization_config.quant_algo {} is not supported (FP8 only)", origin, algo);
    return "FP8 (ModelOpt)";
  }
  if (method == "compressed-tensors") {
    if (q.contains("config_groups") && q["config_groups"].is_object()) {
      for (const auto& [group, g] : q["config_groups"].items()) {
        if (!g.is_object() || !g.contains("weights") || !g["weights"].is_object()) continue;
        const json& w = g["weights"];
        const std::string type = w.contains("type") ? text_of(w["type"]) : "?";
        const std::string bits = w.contains("num_bits") ? text_of(w["num_bits"]) : "?";
        const std::string strategy = w.contains("strategy") ? text_of(w["strategy"]) : "?";
        if (type != "float" || bits != "8") {
          PF_THROW(
              "{}: compressed-tensors group '{}' has {}-bit {} weights; parafuse reads 8-bit "
              "float (FP8) weights only",
              origin, group, bits, type);
        }
        if (strategy != "tensor" && strategy != "channel") {
          PF_THROW(
              "{}: compressed-tensors group '{}' has weight strategy {}; parafuse reads "
              "'tensor' and 'channel' FP8 scales",
              origin, group, strategy);
        }
      }
    }
    return "FP8 (compressed-tensors)";
  }
  if (method == "fp8") {
    if (q.contains("weight_block_size") && !q["weight_block_size"].is_null())
      PF_THROW("{}: block-wise FP8 (weight_block_size {}) is not supported", origin,
               q["weight_block_size"].dump());
    return "FP8";
  }
  PF_THROW(
      "{}: quantization_config.quant_method {} is not supported (parafuse reads FP8 "
      "checkpoints: modelopt, compressed-tensors, fp8)",
      origin, method.empty() ? std::string("(missing)") : "'" + method + "'");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : origin_(path) {
  file_ = std::make_unique<MappedFile>(path);
  parse(file_->data(), file_->size());
}

SafetensorsFile::SafetensorsFile(const uint8_t* data, size_t size, std::string origin)
    : origin_(std::move(origin)) {
  parse(data, size);
}

SafetensorsFile::~SafetensorsFile() = default;

void SafetensorsFile::parse(const uint8_t* data, size_t size) {
  if (size < 8) {
    PF_THROW("{}: file is {} bytes, too short for the 8-byte header length", origin_, size);
  }
  const uint64_t header_len = read_u64_le(data);
  if (header_len == 0) PF_THROW("{}: header length is 0 (expected a JSON header)", origin_);
  if (header_len > kMaxHeaderBytes) {
    PF_THROW("{}: header length {} is over the 100 MB limit (not a safetensors file?)", origin_,
             header_len);
  }
  if (header_len > size - 8) {
    PF_THROW("{}: header length {} runs past the end of the file ({} bytes)", origin_, header_len,
             size);
  }
  const char* header = reinterpret_cast<const char*>(data + 8);
  if (header[0] != '{') {
    PF_THROW("{}: header does not start with '{{' (first byte 0x{:02x})", origin_,
             uint8_t(header[0]));
  }
  const json root = parse_json_strict(header, header + header_len, origin_, "header", true);
  if (!root.is_object()) PF_THROW("{}: header is {}, expected an object", origin_, json_kind(root));

  data_section_ = data + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) {
        PF_THROW("{}: __metadata__ is {}, expected a map of strings to strings", origin_,
                 json_kind(value));
      }
      for (const auto& [key, item] : value.items()) {
        if (!item.is_string()) {
          PF_THROW("{}: __metadata__ must map strings to strings; key '{}' holds {}", origin_, key,
                   json_kind(item));
        }
        metadata_[key] = item.get<std::string>();
      }
      continue;
    }
    SafetensorsEntry e = parse_entry(origin_, name, value);
    if (e.end > data_size) {
      PF_THROW("{}: tensor '{}': data_offsets [{}, {}] run past the data section ({} bytes)",
               origin_, name, e.begin, e.end, data_size);
    }
    by_offset.push_back(&(entries_[name] = std::move(e)));
  }

  // The HF rule: sorted by offset, the ranges tile [0, data_size) exactly.
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : by_offset) {
    if (e->begin < expected) {
      PF_THROW("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", origin_, previous->info.name,
               previous->begin, previous->end, e->info.name, e->begin, e->end);
    }
    if (e->begin > expected) {
      if (previous == nullptr) {
        PF_THROW("{}: gap in the data section: first tensor '{}' begins at byte {}, not 0", origin_,
                 e->info.name, e->begin);
      }
      PF_THROW(
          "{}: gap in the data section: {} unused bytes between '{}' (ends at {}) and '{}' "
          "(begins at {})",
          origin_, e->begin - expected, previous->info.name, expected, e->info.name, e->begin);
    }
    expected = e->end;
    previous = e;
  }
  if (expected != data_size) {
    PF_THROW("{}: data section has {} bytes but the tensors end at byte {} ({} trailing bytes)",
             origin_, data_size, expected, data_size - expected);
  }
}

void SafetensorsFile::read_raw(const SafetensorsEntry& entry, Range rows, Range cols,
                               void* out) const {
  const TensorInfo& info = entry.info;
  const Slice slice = resolve_slice(info, rows, cols, origin_);
  const size_t element = dtype_size(info.dtype);
  const size_t width = size_t(slice.cols()) * element;
  if (width == 0) return;
  const uint8_t* base = data_of(entry);
  for (int64_t r = slice.row_begin; r < slice.row_end; ++r) {
    const size_t first = size_t(r * info.cols() + slice.col_begin) * element;
    std::memcpy(static_cast<uint8_t*>(out) + size_t(r - slice.row_begin) * width, base + first,
                width);
  }
}

void SafetensorsFile::read_f32(const SafetensorsEntry& entry, Range rows, Range cols,
                               float* out) const {
  const TensorInfo& info = entry.info;
  const Slice slice = resolve_slice(info, rows, cols, origin_);
  const int64_t r0 = slice.row_begin, r1 = slice.row_end, c0 = slice.col_begin;
  const int64_t n_cols = info.cols();
  const int64_t width = slice.cols();
  if (width == 0) return;  // also spares a loop over the rows of a [huge, 0] tensor
  const uint8_t* base = data_of(entry);
  for (int64_t r = r0; r < r1; ++r) {
    float* dst = out + (r - r0) * width;
    const int64_t first = r * n_cols + c0;  // element index of the slice's row start
    switch (info.dtype) {
      case DType::F32:
        std::memcpy(dst, base + first * 4, size_t(width) * 4);
        break;
      case DType::F8_E4M3: {
        const uint8_t* src = base + first;
        for (int64_t c = 0; c < width; ++c) dst[c] = f8_e4m3_to_f32(src[c]);
        break;
      }
      case DType::F16:
      case DType::BF16: {
        const uint8_t* src = base + first * 2;
        const bool bf16 = info.dtype == DType::BF16;
        for (int64_t c = 0; c < width; ++c) {
          uint16_t h;
          std::memcpy(&h, src + c * 2, 2);
          dst[c] = bf16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
        break;
      }
      default:
        PF_THROW("{}: tensor '{}' has dtype {}, which cannot be read", origin_, info.name,
                 dtype_name(info.dtype));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWeightSource

SafetensorsWeightSource::SafetensorsWeightSource(const std::string& dir) : dir_(dir) {
  const fs::path root(dir);
  const fs::path index_path = root / kIndexName;
  const fs::path single_path = root / kSingleName;
  std::error_code ec;
  if (fs::is_regular_file(index_path, ec)) {
    const std::string index_origin = index_path.string();
    const std::string s = read_file(index_origin, "safetensors index");
    const json index =
        parse_json_strict(s.data(), s.data() + s.size(), index_origin, "index", false);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      PF_THROW("{}: expected an object with a \"weight_map\" object {{tensor: shard file}}",
               index_origin);
    }
    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        PF_THROW("{}: weight_map entry for tensor '{}' is {}, expected a file name", index_origin,
                 tensor, json_kind(shard));
      }
      const std::string& shard_name = shard.get_ref<const std::string&>();
      auto it = shards.find(shard_name);
      if (it == shards.end()) {
        const fs::path shard_rel(shard_name);
        if (shard_name.empty() || shard_rel.is_absolute() ||
            std::find(shard_rel.begin(), shard_rel.end(), "..") != shard_rel.end()) {
          PF_THROW("{}: shard '{}' (for tensor '{}') must be a file name inside {}", index_origin,
                   shard_name, tensor, dir);
        }
        const fs::path shard_path = root / shard_rel;
        if (!fs::is_regular_file(shard_path, ec)) {
          PF_THROW("{}: shard '{}' (listed for tensor '{}') does not exist in {}", index_origin,
                   shard_name, tensor, dir);
        }
        files_.push_back(std::make_unique<SafetensorsFile>(shard_path.string()));
        it = shards.emplace(shard_name, files_.back().get()).first;
      }
      const auto entry = it->second->entries().find(tensor);
      if (entry == it->second->entries().end()) {
        PF_THROW("{}: tensor '{}' is listed in shard '{}' but that file does not contain it",
                 index_origin, tensor, shard_name);
      }
      where_[tensor] = {it->second, &entry->second};
    }
    // Tensors a shard holds that the index does not list are still served (as transformers
    // loads whole shards), but one name in two shards is ambiguous.
    for (const auto& file : files_) {
      for (const auto& [name, entry] : file->entries()) {
        auto [it, inserted] = where_.emplace(name, std::pair(file.get(), &entry));
        if (!inserted && it->second.first != file.get()) {
          const std::string& listed = it->second.first->origin();
          PF_THROW("{}: tensor '{}' appears in both {} and {}", index_origin, name, listed,
                   file->origin());
        }
      }
    }
  } else if (fs::is_regular_file(single_path, ec)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single_path.string()));
    for (const auto& [name, entry] : files_.back()->entries()) {
      where_[name] = {files_.back().get(), &entry};
    }
  } else {
    PF_THROW("model directory '{}' has neither {} nor {}", dir, kSingleName, kIndexName);
  }
  quantization_ = read_quantization_config(root);
  bind_fp8_scales();
}

SafetensorsWeightSource::SafetensorsWeightSource(std::unique_ptr<SafetensorsFile> file)
    : dir_(file->origin()) {
  files_.push_back(std::move(file));
  for (const auto& [name, entry] : files_.back()->entries())
    where_[name] = {files_.back().get(), &entry};
  bind_fp8_scales();
}

void SafetensorsWeightSource::bind_fp8_scales() {
  std::set<std::string> belongs_to_a_weight;
  for (const auto& [name, location] : where_) {
    const TensorInfo& info = location.second->info;
    if (info.dtype != DType::F8_E4M3) continue;
    const std::string suffix = ".weight";
    if (name.size() <= suffix.size() || !name.ends_with(suffix) || info.shape.size() != 2) {
      PF_THROW(
          "{}: tensor '{}' {} is F8_E4M3, but only 2-D '.weight' tensors of an FP8 checkpoint "
          "can be (FP8 KV caches and FP8 norms are not read)",
          dir_, name, shape_string(info.shape));
    }
    const std::string base = name.substr(0, name.size() - suffix.size());
    if (where_.count(base + ".weight_scale_inv")) {
      PF_THROW(
          "{}: tensor '{}' has a block-wise scale '{}.weight_scale_inv': block-wise FP8 is not "
          "supported (per-tensor and per-channel weight_scale are)",
          dir_, name, base);
    }
    const std::string scale_name = base + ".weight_scale";
    const auto scale = where_.find(scale_name);
    if (scale == where_.end()) {
      PF_THROW("{}: tensor '{}' is F8_E4M3 but its dequantization scale '{}' is missing", dir_,
               name, scale_name);
    }
    const TensorInfo& s = scale->second.second->info;
    if (s.dtype != DType::F32 && s.dtype != DType::BF16 && s.dtype != DType::F16) {
      PF_THROW("{}: scale '{}' has dtype {}; a weight scale must be F32, BF16 or F16", dir_,
               scale_name, dtype_name(s.dtype));
    }
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    const bool per_tensor = n == 1 && s.shape.size() <= 2;
    const bool per_channel = (s.shape == std::vector<int64_t>{info.rows()} ||
                              s.shape == std::vector<int64_t>{info.rows(), 1});
    if (!per_tensor && !per_channel) {
      PF_THROW(
          "{}: scale '{}' has shape {}, but weight '{}' of shape {} needs one scale ([] or [1]) "
          "or one per output channel ([{}] or [{}, 1])",
          dir_, scale_name, shape_string(s.shape), name, shape_string(info.shape), info.rows(),
          info.rows());
    }
    Fp8Scale& bound = fp8_scales_[name];
    bound = Fp8Scale{scale->second, per_channel && info.rows() != 1, {}};
    belongs_to_a_weight.insert(scale_name);
    const std::string input_scale = base + ".input_scale";
    if (const auto in = where_.find(input_scale); in != where_.end()) {
      const TensorInfo& is = in->second.second->info;
      int64_t m = 1;
      for (int64_t d : is.shape) m *= d;
      if (m != 1 || is.shape.size() > 2) {
        PF_THROW("{}: activation scale '{}' has shape {}; a static input_scale is one value", dir_,
                 input_scale, shape_string(is.shape));
      }
      if (is.dtype != DType::F32 && is.dtype != DType::BF16 && is.dtype != DType::F16) {
        PF_THROW("{}: activation scale '{}' has dtype {}; it must be F32, BF16 or F16", dir_,
                 input_scale, dtype_name(is.dtype));
      }
      bound.input_scale = in->second;
      belongs_to_a_weight.insert(input_scale);
    }
  }
  for (const auto& [name, location] : where_) {
    // The FP8 KV-cache scales of attention (ModelOpt kv_cache_quant_algo FP8): parafuse keeps
    // its KV cache in the activation dtype, so they are unused.
    const bool kv_scale = name.ends_with(".k_scale") || name.ends_with(".v_scale");
    if (belongs_to_a_weight.count(name) || (kv_scale && !quantization_.empty())) continue;
    if (name.ends_with(".weight_scale") || name.ends_with(".input_scale")) {
      const std::string weight = name.substr(0, name.rfind('.')) + ".weight";
      const auto w = where_.find(weight);
      PF_THROW("{}: scale '{}' belongs to no F8_E4M3 weight ('{}' {})", dir_, name, weight,
               w == where_.end() ? "does not exist"
                                 : fmt::format("is {}", dtype_name(w->second.second->info.dtype)));
    }
    tensors_.emplace(name, location.second->info);
  }
  if (!fp8_scales_.empty() && quantization_.empty())
    quantization_ = "FP8 (weight_scale tensors; no quantization config)";
}

std::string SafetensorsWeightSource::description() const {
  return fmt::format("safetensors {} ({} file{}, {} tensors{})", dir_, files_.size(),
                     files_.size() == 1 ? "" : "s", tensors_.size(),
                     quantization_.empty() ? "" : ", " + quantization_);
}

void SafetensorsWeightSource::read_f32(const std::string& name, Range rows, Range cols,
                                       float* out) const {
  info(name);  // the missing-tensor error
  const auto& [file, entry] = where_.at(name);
  file->read_f32(*entry, rows, cols, out);
  if (fp8_scales_.count(name) == 0) return;
  const Slice slice = resolve_slice(entry->info, rows, cols, file->origin());
  std::vector<float> scales(size_t(slice.rows()));
  read_row_scales(name, rows, scales.data());
  const size_t width = size_t(slice.cols());
  for (int64_t r = 0; r < slice.rows(); ++r) {
    float* row = out + size_t(r) * width;
    for (size_t c = 0; c < width; ++c) row[c] *= scales[size_t(r)];
  }
}

bool SafetensorsWeightSource::reads_native(const std::string& name) const {
  const TensorInfo& t = info(name);
  if (t.shape.size() != 2) return false;
  return t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16 ||
         t.dtype == DType::F8_E4M3;  // every F8_E4M3 weight has its scale (bind_fp8_scales)
}

void SafetensorsWeightSource::read_native(const std::string& name, Range rows, Range cols,
                                          void* out) const {
  const TensorInfo& t = info(name);
  const auto& [file, entry] = where_.at(name);
  PF_CHECK(reads_native(name), "{}: tensor '{}' {} {} is not read in its storage format",
           file->origin(), name, dtype_name(t.dtype), shape_string(t.shape));
  file->read_raw(*entry, rows, cols, out);
}

void SafetensorsWeightSource::read_row_scales(const std::string& name, Range rows,
                                              float* out) const {
  const TensorInfo& t = info(name);
  const auto fp8 = fp8_scales_.find(name);
  if (fp8 == fp8_scales_.end()) {
    WeightSource::read_row_scales(name, rows, out);  // the error
    return;
  }
  const auto& [file, entry] = where_.at(name);
  const Slice slice = resolve_slice(t, rows, Range{}, file->origin());
  const auto& [scale_file, scale_entry] = fp8->second.scale;
  if (fp8->second.per_channel) {  // [rows] is one row of rows columns; [rows, 1] rows of one
    const bool column = scale_entry->info.shape.size() == 2;
    scale_file->read_f32(*scale_entry, column ? Range{slice.row_begin, slice.row_end} : Range{},
                         column ? Range{} : Range{slice.row_begin, slice.row_end}, out);
  } else {  // a scalar ([]), [1] or [1, 1]: one value for every row
    float s = 0.0f;
    scale_file->read_f32(*scale_entry, Range{}, Range{}, &s);
    std::fill(out, out + slice.rows(), s);
  }
}

float SafetensorsWeightSource::input_scale(const std::string& name) const {
  info(name);
  const auto fp8 = fp8_scales_.find(name);
  if (fp8 == fp8_scales_.end() || !fp8->second.input_scale.first) return 0.0f;
  const auto& [file, entry] = fp8->second.input_scale;
  float s = 0.0f;
  file->read_f32(*entry, Range{}, Range{}, &s);
  PF_CHECK(std::isfinite(s) && s > 0.0f, "{}: input_scale of '{}' is {}; it must be positive",
           file->origin(), name, s);
  return s;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

void SafetensorsWriter::add(const std::string& name, std::vector<int64_t> shape,
                            std::vector<float> values, std::optional<DType> storage) {
  PF_CHECK(
      !storage || *storage == DType::F32 || *storage == DType::BF16 || *storage == DType::F8_E4M3,
      "safetensors writer: tensor '{}': storage dtype {} not supported (F32, BF16, F8_E4M3)", name,
      dtype_name(*storage));
  PF_CHECK(name != "__metadata__", "safetensors writer: '__metadata__' is not a tensor name");
  int64_t n = 1;
  for (int64_t d : shape) {
    PF_CHECK(d >= 0, "safetensors writer: tensor '{}' has negative dimension in shape {}", name,
             shape_string(shape));
    PF_CHECK(!__builtin_mul_overflow(n, d, &n),
             "safetensors writer: tensor '{}' shape {} overflows", name, shape_string(shape));
  }
  PF_CHECK(uint64_t(n) == values.size(),
           "safetensors writer: tensor '{}' has shape {} ({} elements) but {} values", name,
           shape_string(shape), n, values.size());
  PF_CHECK(tensors_.count(name) == 0, "safetensors writer: tensor '{}' added twice", name);
  tensors_[name] = Pending{std::move(shape), std::move(values), storage};
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path, DType storage) const {
  PF_CHECK(storage == DType::F32 || storage == DType::BF16,
           "safetensors writer: storage dtype {} not supported (F32 or BF16)", dtype_name(storage));
  json header = json::object();
  json metadata = json::object();
  metadata["format"] = "pt";
  for (const auto& [key, value] : metadata_) metadata[key] = value;
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors_) {
    const DType dtype = t.storage.value_or(storage);
    const uint64_t bytes = t.values.size() * dtype_size(dtype);
    header[name] = {{"dtype", std::string(dtype_name(dtype))},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // HF pads so the data starts 8-byte aligned

  // Written beside the target and renamed, so a reader never sees a half-written file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) PF_THROW("cannot create '{}': {}", tmp, std::strerror(errno));
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    std::vector<uint16_t> halves;
    std::vector<uint8_t> codes;
    for (const auto& [name, t] : tensors_) {
      const DType dtype = t.storage.value_or(storage);
      if (dtype == DType::F32) {
        out.write(reinterpret_cast<const char*>(t.values.data()),
                  std::streamsize(t.values.size() * 4));
      } else if (dtype == DType::F8_E4M3) {
        codes.resize(t.values.size());
        for (size_t i = 0; i < t.values.size(); ++i) codes[i] = f32_to_f8_e4m3(t.values[i]);
        out.write(reinterpret_cast<const char*>(codes.data()), std::streamsize(codes.size()));
      } else {
        halves.resize(t.values.size());
        for (size_t i = 0; i < t.values.size(); ++i) halves[i] = f32_to_bf16(t.values[i]);
        out.write(reinterpret_cast<const char*>(halves.data()), std::streamsize(halves.size() * 2));
      }
    }
    out.flush();
    if (!out) PF_THROW("cannot write '{}': {}", tmp, std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) PF_THROW("cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

}  // namespace parafuse
