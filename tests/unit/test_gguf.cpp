// GGUF reader tests: a corpus of broken files (each must give one clear Error, never a crash),
// dequantization of every storage type against hand-computed values, the HF view of a GGUF
// file (names, shapes, Q/K un-permutation, slices) and config_from_gguf, all on small files
// written by tests/unit/gguf_writer.h. The real model is in test_gguf_model.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "kernels/core/error.h"
#include "kernels/core/quant.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/engine/stage.h"  // native_weight_dtype
#include "runtime/model/gguf.h"
#include "runtime/model/model_config.h"
#include "tests/unit/error_of.h"
#include "tests/unit/gguf_writer.h"

namespace parafuse {
namespace {

using test::Bytes;
using test::GgufWriter;
using ::testing::HasSubstr;

// The Error message of parsing `bytes`, or "" when it parses.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile file(bytes.data(), bytes.size(), "model.gguf");
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

std::vector<uint8_t> floats_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> out(values.size() * 4);
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A valid file with every kind of metadata and two F32 tensors.
GgufWriter valid_writer() {
  GgufWriter w;
  w.kv_string("general.architecture", "llama")
      .kv_u32("llama.block_count", 1)
      .kv_i32("answer", -42)
      .kv_u64("big", 1ull << 40)
      .kv_f32("ratio", 0.5f)
      .kv_bool("flag", true)
      .kv_strings("tokens", {"a", "bc", ""})
      .kv_i32s("per_block", {3, 0, -1})
      .kv_f32s("scores", {1.5f, -2.0f});
  w.tensor_f32("a", {4}, {1, 2, 3, 4});
  w.tensor_f32("b", {3, 2}, {1, 2, 3, 4, 5, 6});
  return w;
}

TEST(GgufParse, ReadsMetadataAndTensors) {
  const std::vector<uint8_t> bytes = valid_writer().build();
  GgufFile file(bytes.data(), bytes.size(), "model.gguf");
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.get_string("general.architecture"), "llama");
  EXPECT_EQ(file.get_int("llama.block_count"), 1);
  EXPECT_EQ(file.get_int("answer"), -42);
  EXPECT_EQ(file.get_int("big"), int64_t(1) << 40);
  EXPECT_DOUBLE_EQ(file.get_float("ratio"), 0.5);
  EXPECT_DOUBLE_EQ(file.get_float("llama.block_count"), 1.0);  // ints read as floats too
  EXPECT_TRUE(file.get_bool("flag"));
  EXPECT_EQ(file.get_strings("tokens"), (std::vector<std::string>{"a", "bc", ""}));
  EXPECT_EQ(file.get_ints("per_block"), (std::vector<int64_t>{3, 0, -1}));
  ASSERT_EQ(file.tensors().size(), 2u);
  const GgufTensorInfo* b = file.find_tensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->ne, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(b->nbytes, 24u);
  EXPECT_EQ(b->offset % 32, 0u);
  float last;
  std::memcpy(&last, file.tensor_data(*b) + 20, 4);
  EXPECT_EQ(last, 6.0f);
  EXPECT_EQ(file.find_tensor("missing"), nullptr);
}

TEST(GgufParse, AcceptsVersion2AndOpensFromDisk) {
  GgufWriter w = valid_writer();
  w.version = 2;
  const std::string path = ::testing::TempDir() + "/v2.gguf";
  test::write_bytes(path, w.build());
  GgufFile file(path);
  EXPECT_EQ(file.version(), 2u);
  EXPECT_EQ(file.origin(), path);
  EXPECT_EQ(file.tensors().size(), 2u);
}

TEST(GgufParse, TypedAccessorsNameTheKey) {
  const std::vector<uint8_t> bytes = valid_writer().build();
  GgufFile file(bytes.data(), bytes.size(), "model.gguf");
  auto message = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(message([&] { file.get_int("nope"); }),
              HasSubstr("model.gguf: metadata key 'nope' is missing"));
  EXPECT_THAT(message([&] { file.get_int("general.architecture"); }),
              HasSubstr("'general.architecture' is a string, expected an integer"));
  EXPECT_THAT(message([&] { file.get_string("ratio"); }), HasSubstr("expected a string"));
  EXPECT_THAT(message([&] { file.get_strings("per_block"); }),
              HasSubstr("expected an array of strings"));
  EXPECT_THAT(message([&] { file.get_ints("tokens"); }),
              HasSubstr("expected an array of integers"));
  EXPECT_THAT(message([&] { file.get_bool("answer"); }), HasSubstr("expected a bool"));
}

struct BrokenCase {
  std::string name;
  std::vector<uint8_t> bytes;
  std::string expected;  // a substring of the one Error
};

std::vector<uint8_t> header_only(uint64_t n_tensors, uint64_t n_kv, const Bytes& rest) {
  Bytes b;
  b.raw({'G', 'G', 'U', 'F'}).put<uint32_t>(3).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  b.raw(rest.bytes());
  return b.bytes();
}

GgufWriter with_tensor(GgufWriter::Tensor t) {
  GgufWriter w;
  w.tensor(std::move(t));
  return w;
}

std::vector<BrokenCase> broken_files() {
  std::vector<BrokenCase> cases;
  auto add = [&](std::string name, std::vector<uint8_t> bytes, std::string expected) {
    cases.push_back({std::move(name), std::move(bytes), std::move(expected)});
  };
  {
    GgufWriter w = valid_writer();
    std::memcpy(w.magic, "GGML", 4);
    add("bad magic", w.build(), "model.gguf: bad magic 0x4c4d4747: not a GGUF file");
  }
  for (uint32_t version : {1u, 4u, 0x03000000u}) {
    GgufWriter w = valid_writer();
    w.version = version;
    add("bad version", w.build(), fmt::format("GGUF version {} is not supported", version));
  }
  {
    GgufWriter w = valid_writer();
    w.tensor_count = 1ull << 60;
    add("huge tensor count", w.build(), "tensor count = 1152921504606846976 cannot fit in the");
  }
  {
    GgufWriter w = valid_writer();
    w.kv_count = ~0ull;
    add("huge kv count", w.build(), "metadata count = 18446744073709551615 cannot fit in the");
  }
  add("huge key length",
      header_only(0, 1, Bytes().put<uint64_t>(1ull << 62).put<uint64_t>(0).put<uint64_t>(0)),
      "metadata key #0: string length 4611686018427387904 exceeds the 16 bytes remaining");
  {
    GgufWriter w;
    w.kv_raw("name", test::kGgufString, Bytes().put<uint64_t>(~0ull).bytes());
    add("huge string value length", w.build(),
        "metadata 'name': string length 18446744073709551615 exceeds");
  }
  {
    GgufWriter w;
    w.kv_raw("tokens", test::kGgufArray,
             Bytes().put<uint32_t>(test::kGgufString).put<uint64_t>(1ull << 61).bytes());
    add("huge array count", w.build(),
        "metadata 'tokens' array count = 2305843009213693952 cannot fit");
  }
  {
    GgufWriter w;
    w.kv_raw("nested", test::kGgufArray,
             Bytes().put<uint32_t>(test::kGgufArray).put<uint64_t>(0).bytes());
    add("nested array", w.build(), "metadata 'nested': nested arrays are not supported");
  }
  {
    GgufWriter w;
    w.kv_raw("odd", 13, {0, 0, 0, 0});
    add("unknown value type", w.build(), "metadata 'odd': unknown value type 13");
  }
  {
    GgufWriter w;
    w.kv_u32("general.alignment", 1).kv_u32("general.alignment", 1);
    add("duplicate key", w.build(), "model.gguf: duplicate metadata 'general.alignment'");
  }
  for (uint32_t alignment : {0u, 3u, 48u}) {
    GgufWriter w = valid_writer();
    w.kv_u32("general.alignment", alignment);
    add("bad alignment", w.build(),
        fmt::format("general.alignment = {} must be a nonzero power of two", alignment));
  }
  {
    GgufWriter w = valid_writer();
    w.kv_string("general.alignment", "32");
    add("alignment of wrong type", w.build(),
        "metadata 'general.alignment' is a string, expected an integer");
  }
  add("n_dims 0", with_tensor({"w", {}, test::kGgmlF32, {}, {}}).build(),
      "tensor 'w': n_dims = 0 (must be 1..4)");
  add("n_dims 5", with_tensor({"w", {1, 1, 1, 1, 1}, test::kGgmlF32, {0, 0, 0, 0}, {}}).build(),
      "tensor 'w': n_dims = 5 (must be 1..4)");
  add("ne 0", with_tensor({"w", {4, 0}, test::kGgmlF32, {}, {}}).build(),
      "tensor 'w': ne[1] = 0 (each dimension must be >= 1)");
  add("ne negative", with_tensor({"w", {~0ull}, test::kGgmlF32, {}, {}}).build(),
      "tensor 'w': ne[0] = -1 (each dimension must be >= 1)");
  add("element count overflow",
      with_tensor({"w", {1ull << 32, 1ull << 32, 1ull << 32}, test::kGgmlF32, {}, {}}).build(),
      "tensor 'w': element count overflows");
  add("byte size overflow", with_tensor({"w", {1ull << 62}, test::kGgmlF32, {}, {}}).build(),
      "tensor 'w': byte size overflows");
  add("unknown type", with_tensor({"w", {32}, 6, std::vector<uint8_t>(22), {}}).build(),
      "tensor 'w': tensor type 6 is not supported");
  add("block type, ragged row", with_tensor({"w", {16}, test::kGgmlQ8_0, {}, {}}).build(),
      "tensor 'w': ne[0] = 16 is not a multiple of the Q8_0 block size 32");
  {
    GgufWriter w = valid_writer();
    w.tensor({"c", {4}, test::kGgmlF32, floats_bytes({1, 2, 3, 4}), 4});
    add("misaligned offset", w.build(), "tensor 'c': offset 4 is not a multiple of alignment 32");
  }
  {
    GgufWriter w;
    w.tensor({"w", {4}, test::kGgmlF32, {}, 1ull << 20});
    add("offset past end", w.build(), "model.gguf: tensor 'w': data [");
  }
  {
    GgufWriter w;
    w.tensor({"w", {4}, test::kGgmlF32, {}, ~0ull - 31});
    add("offset overflow", w.build(), "tensor 'w': data [overflow, overflow) past end of file");
  }
  {
    std::vector<uint8_t> bytes = valid_writer().build();
    const size_t size = bytes.size();
    bytes.resize(size - 4);  // the last float of tensor 'b'
    add("truncated data", bytes,
        fmt::format("tensor 'b': data [{}, {}) past end of file (size {})", size - 24, size,
                    size - 4));
  }
  {
    GgufWriter w = valid_writer();
    w.tensor_f32("a", {1}, {7});
    add("duplicate tensor", w.build(), "model.gguf: duplicate tensor 'a'");
  }
  {
    GgufWriter w;
    w.tensor_f32("first", {16}, std::vector<float>(16, 1));
    w.tensor({"second", {8}, test::kGgmlF32, floats_bytes(std::vector<float>(8, 2)), 32});
    add("overlapping tensors", w.build(), "tensors 'first' [0, 64) and 'second' [32, 64) overlap");
  }
  return cases;
}

TEST(GgufParse, BrokenFilesGiveOneClearError) {
  for (const BrokenCase& c : broken_files()) {
    SCOPED_TRACE(c.name);
    EXPECT_THAT(parse_error(c.bytes), HasSubstr(c.expected));
  }
}

TEST(GgufParse, EveryTruncatedPrefixThrowsAndTheWholeFileParses) {
  const std::vector<uint8_t> bytes = valid_writer().build();
  for (size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE(n);
    // A copy of exactly n bytes, so AddressSanitizer sees any read past the prefix.
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + ptrdiff_t(n));
    EXPECT_THROW(GgufFile(prefix.data(), prefix.size(), "prefix.gguf"), Error);
  }
  EXPECT_EQ(parse_error(bytes), "");
}

TEST(GgufParse, MissingFileNamesPathAndReason) {
  try {
    GgufFile file("/nonexistent/model.gguf");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/model.gguf: cannot open: No such file"));
  }
}

TEST(GgufDequantize, PlainTypes) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0f};
  float out[3];
  dequantize_row(DType::F32, floats_bytes(f32).data(), 1, 2, out);
  EXPECT_EQ(out[0], -2.25f);
  EXPECT_EQ(out[1], 3.0f);

  const uint16_t f16[3] = {0x3c00, 0xc000, 0x3555};  // 1, -2, 0.333251953125
  dequantize_row(DType::F16, reinterpret_cast<const uint8_t*>(f16), 0, 3, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 0.333251953125f);

  const uint16_t bf16[2] = {0x3fc0, 0xc120};  // 1.5, -10
  dequantize_row(DType::BF16, reinterpret_cast<const uint8_t*>(bf16), 0, 2, out);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[1], -10.0f);
}

TEST(GgufDequantize, Q8_0) {
  std::vector<int8_t> q(32);
  for (int i = 0; i < 32; ++i) q[size_t(i)] = int8_t(i * 8 - 128);  // -128, -120, ..., 120
  const std::vector<uint8_t> block = test::q8_0_block(0.25f, q);
  ASSERT_EQ(block.size(), 34u);
  float out[32];
  dequantize_row(DType::Q8_0, block.data(), 0, 32, out);
  EXPECT_EQ(out[0], -32.0f);                              // -128 * 0.25
  EXPECT_EQ(out[1], -30.0f);                              // -120 * 0.25
  EXPECT_EQ(out[31], 30.0f);                              // 120 * 0.25
  dequantize_row(DType::Q8_0, block.data(), 17, 3, out);  // unaligned inside one block
  EXPECT_EQ(out[0], 2.0f);                                // (17*8-128) * 0.25
  EXPECT_EQ(out[2], 6.0f);
}

TEST(GgufDequantize, Q4_0LowNibblesFirst) {
  std::vector<uint8_t> nibbles(32);
  for (int i = 0; i < 32; ++i) nibbles[size_t(i)] = uint8_t(i % 16);
  std::vector<uint8_t> row = test::q4_0_block(0.5f, nibbles);
  ASSERT_EQ(row.size(), 18u);
  std::vector<uint8_t> second = test::q4_0_block(-2.0f, std::vector<uint8_t>(32, 15));
  row.insert(row.end(), second.begin(), second.end());
  float out[64];
  dequantize_row(DType::Q4_0, row.data(), 0, 64, out);
  EXPECT_EQ(out[0], -4.0f);   // (0 - 8) * 0.5
  EXPECT_EQ(out[9], 0.5f);    // (9 - 8) * 0.5
  EXPECT_EQ(out[15], 3.5f);   // (15 - 8) * 0.5
  EXPECT_EQ(out[16], -4.0f);  // element 16 = high nibble of byte 0 = 0
  EXPECT_EQ(out[31], 3.5f);
  EXPECT_EQ(out[32], -14.0f);  // (15 - 8) * -2
  // A span crossing the block boundary, starting unaligned.
  dequantize_row(DType::Q4_0, row.data(), 30, 4, out);
  EXPECT_EQ(out[0], 3.0f);  // (14 - 8) * 0.5
  EXPECT_EQ(out[1], 3.5f);
  EXPECT_EQ(out[2], -14.0f);
  EXPECT_EQ(out[3], -14.0f);
}

TEST(GgufDequantize, Q4_1ScaleAndMin) {
  std::vector<uint8_t> nibbles(32);
  for (int i = 0; i < 32; ++i) nibbles[size_t(i)] = uint8_t(31 - i) / 2;  // 15, 15, 14, ...
  const std::vector<uint8_t> block = test::q4_1_block(0.125f, -1.0f, nibbles);
  ASSERT_EQ(block.size(), 20u);
  float out[32];
  dequantize_row(DType::Q4_1, block.data(), 0, 32, out);
  EXPECT_EQ(out[0], 0.875f);    // 15 * 0.125 - 1
  EXPECT_EQ(out[2], 0.75f);     // 14 * 0.125 - 1
  EXPECT_EQ(out[16], -0.125f);  // nibble 7
  EXPECT_EQ(out[31], -1.0f);    // nibble 0
  dequantize_row(DType::Q4_1, block.data(), 5, 1, out);
  EXPECT_EQ(out[0], 0.625f);  // nibble 13
}

// A one-block llama: hidden 8, 2 heads of 4, 1 kv head. Q and K are stored permuted the way
// llama.cpp's converter stores them; HF value (r, c) of Q is 100*r + c, of K 1000 + 100*r + c.
std::vector<float> permuted_rows(int rows, int cols, int n_head, float base) {
  const int head_dim = rows / n_head;
  std::vector<float> out(size_t(rows * cols));
  for (int g = 0; g < rows; ++g) {  // GGUF row h*hd + 2j + t holds HF row h*hd + t*hd/2 + j
    const int h = g / head_dim, j = (g % head_dim) / 2, t = g % 2;
    const int hf_row = h * head_dim + t * head_dim / 2 + j;
    for (int c = 0; c < cols; ++c) out[size_t(g * cols + c)] = base + 100.0f * hf_row + c;
  }
  return out;
}

GgufWriter tiny_llama() {
  GgufWriter w;
  w.kv_string("general.architecture", "llama")
      .kv_u32("llama.block_count", 1)
      .kv_u32("llama.embedding_length", 8)
      .kv_u32("llama.feed_forward_length", 64)
      .kv_u32("llama.attention.head_count", 2)
      .kv_u32("llama.attention.head_count_kv", 1)
      .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f)
      .kv_f32("llama.rope.freq_base", 500000.0f)
      .kv_u32("llama.rope.dimension_count", 4)
      .kv_u32("llama.context_length", 256)
      .kv_strings("tokenizer.ggml.tokens", {"a", "b", "c", "d", "e"})
      .kv_u32("tokenizer.ggml.bos_token_id", 1)
      .kv_u32("tokenizer.ggml.eos_token_id", 2);
  std::vector<uint16_t> embed(40);
  for (size_t i = 0; i < embed.size(); ++i) embed[i] = f32_to_f16(float(i) * 0.5f);
  std::vector<uint8_t> embed_bytes(80);
  std::memcpy(embed_bytes.data(), embed.data(), 80);
  w.tensor({"token_embd.weight", {8, 5}, test::kGgmlF16, embed_bytes, {}});
  w.tensor_f32("blk.0.attn_q.weight", {8, 8}, permuted_rows(8, 8, 2, 0));
  w.tensor_f32("blk.0.attn_k.weight", {8, 4}, permuted_rows(4, 8, 1, 1000));
  w.tensor_f32("blk.0.attn_norm.weight", {8}, {1, 2, 3, 4, 5, 6, 7, 8});
  // ffn_up: 2 rows of 64 in Q8_0 (2 blocks per row); row r block b has scale r+1, q = i - 16.
  std::vector<uint8_t> up;
  for (int r = 0; r < 2; ++r) {
    for (int b = 0; b < 2; ++b) {
      std::vector<int8_t> q(32);
      for (int i = 0; i < 32; ++i) q[size_t(i)] = int8_t(i - 16 + b);
      const std::vector<uint8_t> block = test::q8_0_block(float(r + 1), q);
      up.insert(up.end(), block.begin(), block.end());
    }
  }
  w.tensor({"blk.0.ffn_up.weight", {64, 2}, test::kGgmlQ8_0, up, {}});
  w.tensor({"output_norm.weight", {8}, test::kGgmlBF16, std::vector<uint8_t>(16, 0), {}});
  w.tensor_f32("rope_freqs_like.extra", {2}, {1, 2});
  return w;
}

class TinyLlama : public ::testing::Test {
 protected:
  void SetUp() override {
    bytes_ = tiny_llama().build();
    file_ = std::make_shared<GgufFile>(bytes_.data(), bytes_.size(), "tiny.gguf");
    source_ = std::make_unique<GgufWeightSource>(file_);
  }
  std::vector<uint8_t> bytes_;
  std::shared_ptr<GgufFile> file_;
  std::unique_ptr<GgufWeightSource> source_;
};

// read_native hands back the file's own bytes for the same slice read_f32 converts: rows
// unpermuted, column slices on block boundaries only.
TEST_F(TinyLlama, NativeReadsAreTheBytesOfF32Reads) {
  const std::string up = "model.layers.0.mlp.up_proj.weight";  // Q8_0, (2, 64)
  EXPECT_TRUE(source_->reads_native(up));
  std::vector<uint8_t> bytes(dtype_row_bytes(DType::Q8_0, 32));
  source_->read_native(up, {1, 2}, {32, 64}, bytes.data());
  std::vector<float> native(32), f32(32);
  dequantize_row(DType::Q8_0, static_cast<const void*>(bytes.data()), 32, native.data());
  source_->read_f32(up, {1, 2}, {32, 64}, f32.data());
  EXPECT_EQ(native, f32);
  EXPECT_TRUE(source_->native_cols_ok(up, {0, 64}));
  EXPECT_FALSE(source_->native_cols_ok(up, {16, 48}));
  const std::string why = error_of([&] {
    source_->read_native(up, {0, 1}, {16, 48}, bytes.data());
  });
  for (const char* part : {"up_proj", "Q8_0", "[16, 48)", "32-element blocks"})
    EXPECT_THAT(why, HasSubstr(part));
  // Q rows come back in HF order (the converter's permutation undone), as read_f32 gives them.
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  std::vector<float> q_native(3 * 8), q_f32(3 * 8);
  source_->read_native(q, {2, 5}, {}, q_native.data());
  source_->read_f32(q, {2, 5}, {}, q_f32.data());
  EXPECT_EQ(q_native, q_f32);
  // A backend that multiplies by Q8_0 keeps it where the slice is block-aligned, else F32.
  CpuBackend native_backend(1);
  CpuBackend reference(CpuBackendOptions{1, false, "best"});
  EXPECT_EQ(native_weight_dtype(*source_, native_backend, {up}, {}), DType::Q8_0);
  EXPECT_EQ(native_weight_dtype(*source_, native_backend, {up}, {0, 48}), std::nullopt);
  EXPECT_EQ(native_weight_dtype(*source_, reference, {up}, {}), std::nullopt);
  EXPECT_EQ(native_weight_dtype(*source_, native_backend, {q}, {}), std::nullopt);  // F32 file
}

TEST_F(TinyLlama, HfNamesAndShapes) {
  EXPECT_TRUE(source_->has("model.embed_tokens.weight"));
  EXPECT_TRUE(source_->has("model.norm.weight"));
  EXPECT_TRUE(source_->has("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(source_->has("model.layers.0.input_layernorm.weight"));
  EXPECT_TRUE(source_->has("model.layers.0.mlp.up_proj.weight"));
  EXPECT_TRUE(source_->has("rope_freqs_like.extra"));  // no HF name: kept as is
  EXPECT_FALSE(source_->has("lm_head.weight"));
  EXPECT_FALSE(source_->has("blk.0.attn_q.weight"));
  EXPECT_EQ(source_->names().size(), 7u);
  EXPECT_EQ(source_->info("model.embed_tokens.weight").shape, (std::vector<int64_t>{5, 8}));
  EXPECT_EQ(source_->info("model.embed_tokens.weight").dtype, DType::F16);
  EXPECT_EQ(source_->info("model.layers.0.self_attn.k_proj.weight").shape,
            (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(source_->info("model.layers.0.mlp.up_proj.weight").shape,
            (std::vector<int64_t>{2, 64}));
  EXPECT_EQ(source_->info("model.norm.weight").shape, (std::vector<int64_t>{8}));
  EXPECT_THAT(source_->description(), HasSubstr("tiny.gguf (7 tensors, arch llama)"));
}

TEST_F(TinyLlama, QAndKComeBackInHfRowOrder) {
  const std::vector<float> q = source_->read_all("model.layers.0.self_attn.q_proj.weight");
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) ASSERT_EQ(q[size_t(r * 8 + c)], 100.0f * r + c) << r << "," << c;
  }
  const std::vector<float> k = source_->read_all("model.layers.0.self_attn.k_proj.weight");
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 8; ++c) ASSERT_EQ(k[size_t(r * 8 + c)], 1000 + 100.0f * r + c);
  }
  float slice[6];  // rows [3, 5), cols [2, 5)
  source_->read_f32("model.layers.0.self_attn.q_proj.weight", {3, 5}, {2, 5}, slice);
  EXPECT_EQ(std::vector<float>(slice, slice + 6),
            (std::vector<float>{302, 303, 304, 402, 403, 404}));
}

TEST_F(TinyLlama, SlicesOfQuantizedAndHalfTensors) {
  float up[12];  // row 1, cols [26, 38): crosses the Q8_0 block boundary at 32
  source_->read_f32("model.layers.0.mlp.up_proj.weight", {1, 2}, {26, 38}, up);
  for (int c = 26; c < 38; ++c) {
    const int block = c / 32, i = c % 32;
    EXPECT_EQ(up[c - 26], 2.0f * float(i - 16 + block)) << c;
  }
  float embed[3];  // token 4, cols [5, 8): element 4*8 + c of 0.5 * i
  source_->read_f32("model.embed_tokens.weight", {4, 5}, {5, 8}, embed);
  EXPECT_EQ(std::vector<float>(embed, embed + 3), (std::vector<float>{18.5f, 19.0f, 19.5f}));
  float norm[2];
  source_->read_f32("model.layers.0.input_layernorm.weight", {}, {6, 8}, norm);
  EXPECT_EQ(norm[0], 7.0f);
  EXPECT_EQ(norm[1], 8.0f);
}

TEST_F(TinyLlama, BadReadsNameTensorAndRange) {
  float out[64];
  try {
    source_->read_f32("model.layers.0.self_attn.q_proj.weight", {0, 9}, {}, out);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tiny.gguf: read of tensor "
                                    "'model.layers.0.self_attn.q_proj.weight' rows [0, 9) is out "
                                    "of range for shape [8, 8]"));
  }
  try {
    source_->read_f32("model.layers.0.mlp.up_proj.weight", {}, {40, 30}, out);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cols [40, 30) is out of range for shape [2, 64]"));
  }
  try {
    source_->info("lm_head.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tensor 'lm_head.weight' not found in gguf tiny.gguf"));
  }
}

TEST_F(TinyLlama, ConfigFromMetadata) {
  const ModelConfig config = config_from_gguf(*file_);
  EXPECT_EQ(config.model_type, "llama");
  EXPECT_EQ(config.n_blocks(), 1);
  EXPECT_EQ(config.hidden_size, 8);
  EXPECT_EQ(config.n_heads, 2);
  EXPECT_EQ(config.head_dim, 4);
  EXPECT_EQ(config.blocks[0].n_kv_heads, 1);
  EXPECT_EQ(config.blocks[0].intermediate_size, 64);
  EXPECT_EQ(config.vocab_size, 5);  // from tokenizer.ggml.tokens
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_FLOAT_EQ(float(config.rms_norm_eps), 1e-6f);
  EXPECT_EQ(config.rope_theta, 500000.0);
  EXPECT_EQ(config.max_position_embeddings, 256);
  EXPECT_EQ(config.bos_token_id, 1);
  EXPECT_EQ(config.eos_token_ids, std::vector<int>{2});
  EXPECT_FALSE(config.rope_scaling.llama3);
}

std::string config_error(const GgufWriter& w) {
  const std::vector<uint8_t> bytes = w.build();
  try {
    config_from_gguf(GgufFile(bytes.data(), bytes.size(), "model.gguf"));
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(GgufConfig, Llama3RopeScalingFromKeys) {
  GgufWriter w = tiny_llama();
  w.kv_string("llama.rope.scaling.type", "llama3")
      .kv_f32("llama.rope.scaling.factor", 8)
      .kv_f32("llama.rope.scaling.low_freq_factor", 1)
      .kv_f32("llama.rope.scaling.high_freq_factor", 4)
      .kv_u32("llama.rope.scaling.original_context_length", 8192);
  const std::vector<uint8_t> bytes = w.build();
  const ModelConfig config = config_from_gguf(GgufFile(bytes.data(), bytes.size(), "m.gguf"));
  EXPECT_TRUE(config.rope_scaling.llama3);
  EXPECT_EQ(config.rope_scaling.factor, 8.0);
  EXPECT_EQ(config.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(config.rope_scaling.original_max_position, 8192);
}

// Llama-3.1 GGUFs from llama.cpp's converter: RoPE scaling as a rope_freqs tensor of divisors,
// which wins over any rope.scaling keys (llama.cpp applies the factors alone).
TEST(GgufConfig, RopeFreqsTensorBecomesFrequencyFactors) {
  GgufWriter w = tiny_llama();
  w.tensor_f32("rope_freqs.weight", {2}, {1, 8});
  w.kv_string("llama.rope.scaling.type", "llama3").kv_f32("llama.rope.scaling.factor", 8.0f);
  const std::vector<uint8_t> bytes = w.build();
  const ModelConfig config = config_from_gguf(GgufFile(bytes.data(), bytes.size(), "m.gguf"));
  EXPECT_EQ(config.rope_freq_factors, (std::vector<double>{1.0, 8.0}));
  EXPECT_FALSE(config.rope_scaling.llama3);
  const std::vector<float> inv_freq = rope_inv_freq(config);
  ASSERT_EQ(inv_freq.size(), 2u);
  EXPECT_EQ(inv_freq[0], 1.0f);
  EXPECT_FLOAT_EQ(inv_freq[1], float(1.0 / std::pow(500000.0, 0.5) / 8.0));
}

TEST(GgufConfig, RejectsWhatItCannotRepresent) {
  {
    GgufWriter w = tiny_llama();
    w.tensor_f32("rope_freqs.weight", {3}, {1, 8, 8});
    EXPECT_THAT(config_error(w), HasSubstr("model.gguf: tensor 'rope_freqs.weight' has shape [3], "
                                           "expected [2] (head_dim 4 / 2)"));
  }
  {
    GgufWriter w = tiny_llama();
    w.tensor_f32("rope_freqs.weight", {2}, {1, -8});
    EXPECT_THAT(config_error(w),
                HasSubstr("model.gguf: rope_freqs.weight[1] = -8 must be positive and finite"));
  }
  {
    GgufWriter w = tiny_llama();
    w.kv_string("llama.rope.scaling.type", "yarn");
    EXPECT_THAT(config_error(w), HasSubstr("llama.rope.scaling.type = 'yarn' is not supported"));
  }
  {
    GgufWriter w;
    w.kv_string("general.architecture", "qwen2");
    EXPECT_THAT(config_error(w), HasSubstr("general.architecture 'qwen2' is not supported "
                                           "(supported: llama, deci)"));
  }
  {
    GgufWriter w;
    w.kv_string("general.architecture", "llama");
    EXPECT_THAT(config_error(w), HasSubstr("metadata key 'llama.block_count' is missing"));
  }
  {
    GgufWriter w = tiny_llama();
    w.kv_u32("llama.attention.head_count_kv", 3);  // duplicate key: caught by the parser
    EXPECT_THAT(config_error(w), HasSubstr("duplicate metadata 'llama.attention.head_count_kv'"));
  }
}

TEST(GgufConfig, DeciPerBlockArrays) {
  GgufWriter w;
  w.kv_string("general.architecture", "deci")
      .kv_u32("deci.block_count", 3)
      .kv_u32("deci.embedding_length", 16)
      .kv_i32s("deci.attention.head_count", {4, 4, 4})
      .kv_i32s("deci.attention.head_count_kv", {2, 0, 4})
      .kv_i32s("deci.feed_forward_length", {64, 128, 0})
      .kv_u32("deci.vocab_size", 10);
  w.tensor_f32("output.weight", {16, 10}, std::vector<float>(160, 0));
  const std::vector<uint8_t> bytes = w.build();
  const ModelConfig config = config_from_gguf(GgufFile(bytes.data(), bytes.size(), "d.gguf"));
  EXPECT_EQ(config.model_type, "nemotron-nas");
  ASSERT_EQ(config.n_blocks(), 3);
  EXPECT_EQ(config.head_dim, 4);
  EXPECT_FALSE(config.tie_word_embeddings);
  EXPECT_EQ(config.blocks[0].attention, AttentionKind::Full);
  EXPECT_EQ(config.blocks[0].n_kv_heads, 2);
  EXPECT_EQ(config.blocks[1].attention, AttentionKind::None);
  EXPECT_EQ(config.blocks[1].intermediate_size, 128);
  EXPECT_EQ(config.blocks[2].n_kv_heads, 4);
  EXPECT_EQ(config.blocks[2].ffn, FfnKind::None);

  GgufWriter bad;
  bad.kv_string("general.architecture", "deci")
      .kv_u32("deci.block_count", 3)
      .kv_u32("deci.embedding_length", 16)
      .kv_i32s("deci.attention.head_count", {4, 4})
      .kv_u32("deci.feed_forward_length", 64);
  EXPECT_THAT(config_error(bad),
              HasSubstr("metadata 'deci.attention.head_count' has 2 entries, expected 3"));
}

}  // namespace
}  // namespace parafuse
