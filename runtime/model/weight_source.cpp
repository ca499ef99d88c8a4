// The one place a model path becomes a WeightSource, so every subcommand accepts the same
// forms and rejects anything else with the same message.
#include "runtime/model/weight_source.h"

#include <filesystem>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"
#include "runtime/model/safetensors.h"

namespace parafuse {

std::vector<float> WeightSource::read_all(const std::string& name) const {
  const TensorInfo t = info(name);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  read_f32(name, Range{}, Range{}, out.data());
  return out;
}

std::unique_ptr<WeightSource> open_weight_source(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) PF_THROW("model path '{}' does not exist", path);
  if (fs::is_directory(status)) return std::make_unique<SafetensorsWeightSource>(path);
  const std::string extension = fs::path(path).extension().string();
  if (fs::is_regular_file(status) && extension == ".gguf") {
    return std::make_unique<GgufWeightSource>(std::make_shared<GgufFile>(path));
  }
  if (extension == ".safetensors") {
    PF_THROW(
        "model path '{}' is a safetensors file; pass the directory holding it (with "
        "config.json) instead",
        path);
  }
  PF_THROW(
      "model path '{}' is neither a directory of safetensors (model.safetensors or "
      "model.safetensors.index.json) nor a .gguf file",
      path);
}

}  // namespace parafuse
