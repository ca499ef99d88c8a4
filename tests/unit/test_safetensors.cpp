// Safetensors: what a user of a checkpoint notices — tensors read back exactly (whole or
// sliced, F32/F16/BF16, single file or sharded), and every malformed file is refused with one
// message naming the file and the problem, never a crash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/model/model_files.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/weight_source.h"
#include "tests/unit/f16_encode.h"

namespace parafuse {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("pf_safetensors_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // The message of the Error opening the test directory throws.
  std::string source_error() const {
    try {
      SafetensorsWeightSource source(dir_.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  fs::path dir_;
};

// Bytes of a safetensors file: length field, header text, `data_bytes` bytes of data.
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes, uint64_t length_field) {
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(length_field >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(uint8_t(i * 7 + 1));
  return out;
}
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  return raw_file(header, data_bytes, header.size());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// The message of the Error that opening `bytes` throws (fails the test when none is thrown).
std::string open_error(const std::vector<uint8_t>& bytes) {
  try {
    SafetensorsFile file(bytes.data(), bytes.size(), "bad.safetensors");
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.safetensors")) << "the message must name the file";
    return e.what();
  }
  ADD_FAILURE() << "no error for a malformed file";
  return "";
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t begin, uint64_t end) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape +
         ", \"data_offsets\": [" + std::to_string(begin) + ", " + std::to_string(end) + "]}";
}

std::vector<float> iota_values(size_t n, float scale = 0.25f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (float(i) - float(n) / 2) * scale;
  return v;
}

TEST_F(SafetensorsTest, F32RoundTripIsExactAndHeaderIsAligned) {
  SafetensorsWriter writer;
  writer.add("model.norm.weight", {6}, iota_values(6));
  writer.add("model.embed_tokens.weight", {5, 3}, iota_values(15, 0.1f));
  writer.add("empty", {0, 4}, {});
  writer.set_metadata("fused_from", "1,2");
  writer.write(path("model.safetensors"));

  SafetensorsFile file(path("model.safetensors"));
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("fused_from"), "1,2");
  ASSERT_EQ(file.entries().size(), 3u);
  const SafetensorsEntry& emb = file.entries().at("model.embed_tokens.weight");
  EXPECT_EQ(emb.info.dtype, DType::F32);
  EXPECT_EQ(emb.info.shape, (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(emb.end - emb.begin, 60u);
  // The data section starts 8-byte aligned (HF pads the header with spaces).
  std::ifstream in(path("model.safetensors"), std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  EXPECT_EQ(len[0] % 8, 0);

  SafetensorsWeightSource source(dir_.string());
  EXPECT_EQ(source.read_all("model.embed_tokens.weight"), iota_values(15, 0.1f));
  EXPECT_EQ(source.read_all("model.norm.weight"), iota_values(6));
  EXPECT_TRUE(source.read_all("empty").empty());
  EXPECT_EQ(source.names().size(), 3u);
  EXPECT_THAT(source.description(), HasSubstr("1 file"));
}

TEST_F(SafetensorsTest, Bf16RoundTripRoundsToNearest) {
  const std::vector<float> values = {1.0f, -2.5f, 0.15625f, 3.14159f, -1e-3f, 65504.0f};
  SafetensorsWriter writer;
  writer.add("w", {2, 3}, values);
  writer.write(path("model.safetensors"), DType::BF16);
  SafetensorsWeightSource source(dir_.string());
  EXPECT_EQ(source.info("w").dtype, DType::BF16);
  const std::vector<float> back = source.read_all("w");
  ASSERT_EQ(back.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(back[i], bf16_to_f32(f32_to_bf16(values[i]))) << i;
    EXPECT_NEAR(back[i], values[i], std::abs(values[i]) / 128) << i;
  }
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], -2.5f);
}

TEST_F(SafetensorsTest, F16FileCraftedByHandReads) {
  const std::vector<float> values = {0.5f, -1.0f, 2.0f, 0.000061035156f, 1000.0f, -0.333f};
  std::vector<uint8_t> bytes = raw_file("{" + entry("h", "F16", "[3, 2]", 0, 12) + "}", 0);
  for (float v : values) {
    const uint16_t h = f32_to_f16(v);
    bytes.push_back(uint8_t(h & 0xff));
    bytes.push_back(uint8_t(h >> 8));
  }
  write_bytes(path("model.safetensors"), bytes);
  SafetensorsWeightSource source(dir_.string());
  EXPECT_EQ(source.info("h").dtype, DType::F16);
  const std::vector<float> back = source.read_all("h");
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(back[i], f16_to_f32(f32_to_f16(values[i]))) << i;
  }
  EXPECT_EQ(back[0], 0.5f);
  EXPECT_EQ(back[4], 1000.0f);
  float row[2];
  source.read_f32("h", {2, 3}, {}, row);
  EXPECT_EQ(row[0], 1000.0f);
  EXPECT_NEAR(row[1], -0.333f, 1e-3f);
}

TEST_F(SafetensorsTest, SlicesMatchTheWholeTensor) {
  const int64_t rows = 5, cols = 7;
  SafetensorsWriter writer;
  writer.add("m", {rows, cols}, iota_values(size_t(rows * cols), 1.0f));
  writer.add("v", {9}, iota_values(9, 1.0f));
  for (DType storage : {DType::F32, DType::BF16}) {  // these small values are exact in BF16
    SCOPED_TRACE(dtype_name(storage));
    writer.write(path("model.safetensors"), storage);
    SafetensorsWeightSource source(dir_.string());
    const std::vector<float> all = source.read_all("m");
    EXPECT_EQ(all, iota_values(size_t(rows * cols), 1.0f));
    auto expect_slice = [&](Range r, Range c) {
      const int64_t r1 = r.end < 0 ? rows : r.end, c1 = c.end < 0 ? cols : c.end;
      std::vector<float> got(size_t((r1 - r.begin) * (c1 - c.begin)), -999.0f);
      source.read_f32("m", r, c, got.data());
      size_t k = 0;
      for (int64_t i = r.begin; i < r1; ++i) {
        for (int64_t j = c.begin; j < c1; ++j) EXPECT_EQ(got[k++], all[size_t(i * cols + j)]);
      }
    };
    expect_slice({1, 3}, {});      // rows
    expect_slice({}, {2, 5});      // columns
    expect_slice({4, 5}, {6, 7});  // both: the last element
    expect_slice({2, 2}, {0, 3});  // empty
    float part[4];
    source.read_f32("v", {}, {3, 7}, part);  // a 1-D tensor is one row
    EXPECT_EQ(std::vector<float>(part, part + 4), std::vector<float>({-1.5f, -0.5f, 0.5f, 1.5f}));
    float unused[64];
    try {
      source.read_f32("m", {0, 6}, {}, unused);
      ADD_FAILURE() << "row range past the end was accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("'m' rows [0, 6) is out of range for shape [5, 7]"));
    }
    EXPECT_THROW(source.read_f32("m", {}, {3, 2}, unused), Error);
    EXPECT_THROW(source.read_f32("v", {0, 2}, {}, unused), Error);
    try {
      source.read_all("missing.weight");
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("tensor 'missing.weight' not found in safetensors"));
    }
  }
}

TEST_F(SafetensorsTest, ShardedDirectoryWithIndex) {
  SafetensorsWriter first, second;
  first.add("model.embed_tokens.weight", {4, 2}, iota_values(8));
  first.add("model.norm.weight", {2}, {1.0f, 2.0f});
  second.add("lm_head.weight", {4, 2}, iota_values(8, 2.0f));
  first.write(path("model-00001-of-00002.safetensors"));
  second.write(path("model-00002-of-00002.safetensors"));
  std::ofstream(path("model.safetensors.index.json")) << R"({
    "metadata": {"total_size": 80},
    "weight_map": {
      "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
      "model.norm.weight": "model-00001-of-00002.safetensors",
      "lm_head.weight": "model-00002-of-00002.safetensors"
    }})";
  const auto source = std::make_unique<SafetensorsWeightSource>(dir_.string());
  EXPECT_THAT(source->description(), HasSubstr("2 files"));
  EXPECT_EQ(source->names(),
            (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight",
                                      "model.norm.weight"}));
  EXPECT_EQ(source->read_all("lm_head.weight"), iota_values(8, 2.0f));
  EXPECT_EQ(source->read_all("model.norm.weight"), std::vector<float>({1.0f, 2.0f}));
  float row[2];
  source->read_f32("model.embed_tokens.weight", {3, 4}, {}, row);
  EXPECT_EQ(row[0], iota_values(8)[6]);
}

TEST_F(SafetensorsTest, IndexNamingAMissingShard) {
  SafetensorsWriter writer;
  writer.add("a", {1}, {1.0f});
  writer.write(path("shard-1.safetensors"));
  std::ofstream(path("model.safetensors.index.json"))
      << R"({"weight_map": {"a": "shard-1.safetensors", "b": "shard-2.safetensors"}})";
  EXPECT_THAT(source_error(), HasSubstr("model.safetensors.index.json: shard "
                                        "'shard-2.safetensors' (listed for tensor 'b') does not "
                                        "exist in " +
                                        dir_.string()));
}

TEST_F(SafetensorsTest, IndexListingATensorItsShardLacks) {
  SafetensorsWriter writer;
  writer.add("a", {1}, {1.0f});
  writer.write(path("shard-1.safetensors"));
  std::ofstream(path("model.safetensors.index.json"))
      << R"({"weight_map": {"a": "shard-1.safetensors", "ghost": "shard-1.safetensors"}})";
  EXPECT_THAT(source_error(), HasSubstr("tensor 'ghost' is listed in shard "
                                        "'shard-1.safetensors' but that file does not contain "
                                        "it"));
}

TEST_F(SafetensorsTest, IndexThatIsNotJsonOrHasNoWeightMap) {
  std::ofstream(path("model.safetensors.index.json")) << R"({"weight_map": )";
  EXPECT_THAT(source_error(), HasSubstr("model.safetensors.index.json: index is not valid JSON"));
  std::ofstream(path("model.safetensors.index.json")) << R"({"metadata": {}})";
  EXPECT_THAT(source_error(), HasSubstr("expected an object with a \"weight_map\" object"));
}

TEST_F(SafetensorsTest, OpenModelNamesTheAcceptedForms) {
  auto message = [](const std::string& p) -> std::string {
    try {
      open_model(p);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_THAT(message(path("nope")), HasSubstr("model path '" + path("nope") + "' does not exist"));
  EXPECT_THAT(message(dir_.string()), HasSubstr("model folder '" + dir_.string() +
                                                "' has no config.json"));
  std::ofstream(path("notes.txt")) << "hello";
  EXPECT_THAT(message(path("notes.txt")),
              HasSubstr("is neither a folder (HF config.json + safetensors) nor a .gguf file"));
  std::ofstream(path("lone.safetensors")) << "x";
  EXPECT_THAT(message(path("lone.safetensors")),
              HasSubstr("is a safetensors file; pass the folder holding it"));
  std::ofstream(path("broken.gguf")) << "not a gguf file at all";
  EXPECT_THROW(open_model(path("broken.gguf")), Error);
  EXPECT_THAT(message("synthetic:" + path("nope.json") + "@x"),
              HasSubstr("the seed after '@' must be a non-negative integer"));
  // A folder with a config but no weights, then a broken weights file: each names its path.
  std::ofstream(path("config.json"))
      << R"({"model_type": "llama", "vocab_size": 8, "hidden_size": 4, "num_attention_heads": 1,
             "num_hidden_layers": 1, "intermediate_size": 8})";
  EXPECT_THAT(message(dir_.string()), HasSubstr("has neither model.safetensors nor "
                                                "model.safetensors.index.json"));
  write_bytes(path("model.safetensors"), raw_file("[]", 0));
  EXPECT_THAT(message(dir_.string()), HasSubstr(path("model.safetensors") + ": header does not"));
}

// The corpus of malformed files: each is refused with its own message.
TEST(SafetensorsMalformed, FileTooShort) {
  EXPECT_THAT(open_error({1, 0, 0, 0, 0}), HasSubstr("5 bytes, too short"));
  EXPECT_THAT(open_error({}), HasSubstr("0 bytes, too short"));
}

TEST(SafetensorsMalformed, HeaderLengthZero) {
  EXPECT_THAT(open_error(raw_file("{}", 0, 0)), HasSubstr("header length is 0"));
}

TEST(SafetensorsMalformed, HeaderLengthPastEndOfFile) {
  EXPECT_THAT(open_error(raw_file("{}", 0, 100)),
              HasSubstr("header length 100 runs past the end of the file (10 bytes)"));
}

TEST(SafetensorsMalformed, HeaderOver100MegabytesIsRejectedBeforeReading) {
  EXPECT_THAT(open_error(raw_file("{}", 0, 100'000'001)), HasSubstr("over the 100 MB limit"));
  EXPECT_THAT(open_error(raw_file("", 0, ~uint64_t(0))), HasSubstr("over the 100 MB limit"));
}

TEST(SafetensorsMalformed, FirstByteNotBrace) {
  EXPECT_THAT(open_error(raw_file("[1, 2]", 0)), HasSubstr("does not start with '{'"));
  EXPECT_THAT(open_error(raw_file(" {}", 0)), HasSubstr("does not start with '{'"));
}

TEST(SafetensorsMalformed, InvalidJson) {
  EXPECT_THAT(open_error(raw_file(R"({"a": })", 0)),
              HasSubstr("header is not valid JSON (at byte 7"));
  EXPECT_THAT(open_error(raw_file("{}trailing", 0)), HasSubstr("header is not valid JSON"));
  EXPECT_THAT(open_error(raw_file("{\"\xff\": 1}", 0)), HasSubstr("header is not valid JSON"));
}

TEST(SafetensorsMalformed, EntryNotAnObject) {
  EXPECT_THAT(open_error(raw_file(R"({"w": [1, 2]})", 0)),
              HasSubstr("tensor 'w': entry is a list, expected an object"));
}

TEST(SafetensorsMalformed, UnknownOrUnsupportedDtype) {
  EXPECT_THAT(open_error(raw_file("{" + entry("w", "Q7", "[2]", 0, 2) + "}", 2)),
              HasSubstr("tensor 'w' has unknown dtype 'Q7'"));
  EXPECT_THAT(open_error(raw_file("{" + entry("ids", "I64", "[2]", 0, 16) + "}", 16)),
              HasSubstr("tensor 'ids' has dtype I64, which parafuse does not read"));
  EXPECT_THAT(open_error(raw_file(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4)),
              HasSubstr("tensor 'w': missing or non-string 'dtype'"));
}

TEST(SafetensorsMalformed, ShapeNotNonNegativeIntegers) {
  for (const char* shape : {"[-1, 2]", "[1.5]", "[\"2\"]", "4"}) {
    SCOPED_TRACE(shape);
    EXPECT_THAT(open_error(raw_file("{" + entry("w", "F32", shape, 0, 8) + "}", 8)),
                HasSubstr("tensor 'w'"));
  }
  EXPECT_THAT(open_error(raw_file("{" + entry("w", "F32", "[-1, 2]", 0, 8) + "}", 8)),
              HasSubstr("shape [-1,2] is not a list of non-negative integers"));
}

TEST(SafetensorsMalformed, ShapeTimesDtypeSizeOverflows) {
  EXPECT_THAT(
      open_error(raw_file("{" + entry("w", "F32", "[4611686018427387904, 8]", 0, 8) + "}", 8)),
      HasSubstr("tensor 'w': shape [4611686018427387904,8] overflows 64 bits"));
  // The element count fits, the byte count does not.
  EXPECT_THAT(open_error(raw_file("{" + entry("w", "F32", "[4611686018427387904]", 0, 8) + "}", 8)),
              HasSubstr("overflows 64 bits in bytes"));
}

TEST(SafetensorsMalformed, ByteSizeMismatch) {
  EXPECT_THAT(open_error(raw_file("{" + entry("w", "F32", "[2, 2]", 0, 12) + "}", 12)),
              HasSubstr("tensor 'w': data_offsets [0, 12] hold 12 bytes but shape [2, 2] of F32 "
                        "needs 16"));
}

TEST(SafetensorsMalformed, OffsetsOutOfRange) {
  EXPECT_THAT(open_error(raw_file("{" + entry("w", "F32", "[4]", 0, 16) + "}", 8)),
              HasSubstr("tensor 'w': data_offsets [0, 16] run past the data section (8 bytes)"));
  EXPECT_THAT(open_error(raw_file("{" + entry("w", "F32", "[0]", 9, 5) + "}", 8)),
              HasSubstr("end before they begin"));
  EXPECT_THAT(
      open_error(raw_file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4)),
      HasSubstr("'data_offsets' must be [begin, end]"));
}

TEST(SafetensorsMalformed, OverlappingOffsets) {
  EXPECT_THAT(
      open_error(raw_file(
          "{" + entry("a", "F32", "[2]", 0, 8) + ", " + entry("b", "F32", "[2]", 4, 12) + "}", 12)),
      HasSubstr("tensors 'a' [0, 8) and 'b' [4, 12) overlap"));
}

TEST(SafetensorsMalformed, GappedOffsets) {
  EXPECT_THAT(
      open_error(raw_file(
          "{" + entry("a", "F32", "[1]", 0, 4) + ", " + entry("b", "F32", "[1]", 8, 12) + "}", 12)),
      HasSubstr("gap in the data section: 4 unused bytes between 'a' (ends at 4) and 'b'"));
  EXPECT_THAT(open_error(raw_file("{" + entry("a", "F32", "[1]", 4, 8) + "}", 8)),
              HasSubstr("first tensor 'a' begins at byte 4, not 0"));
  EXPECT_THAT(open_error(raw_file("{" + entry("a", "F32", "[1]", 0, 4) + "}", 6)),
              HasSubstr("data section has 6 bytes but the tensors end at byte 4 (2 trailing"));
}

TEST(SafetensorsMalformed, DuplicateNames) {
  EXPECT_THAT(
      open_error(raw_file(
          "{" + entry("a", "F32", "[1]", 0, 4) + ", " + entry("a", "F32", "[1]", 4, 8) + "}", 8)),
      HasSubstr("duplicate tensor name 'a' in the header"));
  EXPECT_THAT(open_error(raw_file(R"({"a": {"dtype": "F32", "dtype": "F16", "shape": [1],)"
                                  R"( "data_offsets": [0, 4]}})",
                                  4)),
              HasSubstr("duplicate key 'dtype' in the header"));
}

TEST(SafetensorsMalformed, BadMetadata) {
  EXPECT_THAT(open_error(raw_file(R"({"__metadata__": {"format": "pt", "n": 1}})", 0)),
              HasSubstr("__metadata__ must map strings to strings; key 'n' holds an integer"));
  EXPECT_THAT(open_error(raw_file(R"({"__metadata__": ["pt"]})", 0)),
              HasSubstr("__metadata__ is a list, expected a map of strings to strings"));
}

TEST(SafetensorsMalformed, ValidEdgeCasesAreAccepted) {
  // No tensors at all; zero-sized tensors sharing an offset; header padded with spaces.
  EXPECT_NO_THROW(SafetensorsFile(raw_file("{}", 0).data(), 10, "empty"));
  const std::vector<uint8_t> bytes =
      raw_file("{" + entry("z", "F32", "[0, 3]", 4, 4) + ", " + entry("a", "F32", "[1]", 0, 4) +
                   ", " + entry("b", "BF16", "[2]", 4, 8) + "}    ",
               8);
  SafetensorsFile file(bytes.data(), bytes.size(), "ok");
  EXPECT_EQ(file.entries().size(), 3u);
}

// Every prefix of a valid file is an Error, never a crash (each copy is exactly sized, so the
// sanitizer builds catch any read past it).
TEST(SafetensorsMalformed, EveryTruncationThrows) {
  const std::vector<uint8_t> valid =
      raw_file(R"({"__metadata__": {"format": "pt"}, )" + entry("a", "F32", "[2]", 0, 8) + ", " +
                   entry("b", "BF16", "[2, 2]", 8, 16) + "}",
               16);
  ASSERT_NO_THROW(SafetensorsFile(valid.data(), valid.size(), "valid"));
  for (size_t n = 0; n < valid.size(); ++n) {
    const std::vector<uint8_t> prefix(valid.begin(), valid.begin() + long(n));
    EXPECT_THROW(SafetensorsFile(prefix.data(), prefix.size(), "cut"), Error) << n << " bytes";
  }
}

}  // namespace
}  // namespace parafuse
