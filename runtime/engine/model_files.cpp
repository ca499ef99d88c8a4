#include "runtime/engine/model_files.h"

#include <filesystem>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/synthetic.h"

namespace parafuse {

ModelFiles open_model(const std::string& path) {
  namespace fs = std::filesystem;
  ModelFiles m;
  m.path = path;
  const std::string synthetic = "synthetic:";
  if (path.rfind(synthetic, 0) == 0) {
    std::string spec = path.substr(synthetic.size());
    uint64_t seed = 0;
    if (auto at = spec.rfind('@'); at != std::string::npos) {
      try {
        seed = std::stoull(spec.substr(at + 1));
      } catch (const std::exception&) {
        PF_THROW("model '{}': the seed after '@' must be a non-negative integer", path);
      }
      spec = spec.substr(0, at);
    }
    m.config = load_hf_config(spec);
    m.weights = std::make_unique<SyntheticWeightSource>(m.config, seed);
    return m;
  }
  PF_CHECK(fs::exists(path), "model path '{}' does not exist", path);
  if (fs::is_directory(path)) {
    const fs::path dir(path);
    PF_CHECK(fs::exists(dir / "config.json"), "model folder '{}' has no config.json", path);
    m.config = load_hf_config((dir / "config.json").string());
    m.weights = open_weight_source(path);
    if (fs::exists(dir / "tokenizer.json"))
      m.tokenizer = Tokenizer::from_hf_json((dir / "tokenizer.json").string());
    return m;
  }
  PF_CHECK(fs::path(path).extension() == ".gguf",
           "model path '{}' is neither a folder (HF safetensors) nor a .gguf file", path);
  auto file = std::make_shared<GgufFile>(path);
  m.config = config_from_gguf(*file);
  m.tokenizer = Tokenizer::from_gguf(*file);
  m.weights = std::make_unique<GgufWeightSource>(file);
  return m;
}

}  // namespace parafuse
