#include "runtime/model/model_files.h"

#include <filesystem>

#include "kernels/core/error.h"
#include "runtime/config/value_rules.h"
#include "runtime/model/gguf.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/synthetic.h"

namespace parafuse {
namespace {

ModelFiles open_synthetic(const std::string& path, std::string spec) {
  ModelFiles m;
  m.path = path;
  uint64_t seed = 0;
  if (auto at = spec.rfind('@'); at != std::string::npos) {
    const auto v = parse_int(spec.substr(at + 1));
    PF_CHECK(v && *v >= 0, "model '{}': the seed after '@' must be a non-negative integer", path);
    seed = uint64_t(*v);
    spec = spec.substr(0, at);
  }
  m.config = load_hf_config(spec);
  m.weights = std::make_unique<SyntheticWeightSource>(m.config, seed);
  return m;
}

}  // namespace

ModelFiles open_model(const std::string& path) {
  namespace fs = std::filesystem;
  const std::string synthetic = "synthetic:";
  if (path.rfind(synthetic, 0) == 0) return open_synthetic(path, path.substr(synthetic.size()));

  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  PF_CHECK(fs::exists(status), "model path '{}' does not exist", path);
  ModelFiles m;
  m.path = path;
  if (fs::is_directory(status)) {
    const fs::path dir(path);
    PF_CHECK(fs::exists(dir / "config.json"), "model folder '{}' has no config.json", path);
    m.config = load_hf_config((dir / "config.json").string());
    m.weights = std::make_unique<SafetensorsWeightSource>(path);
    if (fs::exists(dir / "tokenizer.json"))
      m.tokenizer = Tokenizer::from_hf_json((dir / "tokenizer.json").string());
    return m;
  }
  const fs::path file(path);
  PF_CHECK(file.extension() != ".safetensors",
           "model path '{}' is a safetensors file; pass the folder holding it (with config.json) "
           "instead",
           path);
  PF_CHECK(fs::is_regular_file(status) && file.extension() == ".gguf",
           "model path '{}' is neither a folder (HF config.json + safetensors) nor a .gguf file "
           "(nor synthetic:CONFIG.json)",
           path);
  auto gguf = std::make_shared<GgufFile>(path);
  m.config = config_from_gguf(*gguf);
  m.tokenizer = tokenizer_from_gguf(*gguf);
  m.weights = std::make_unique<GgufWeightSource>(gguf);
  return m;
}

}  // namespace parafuse
