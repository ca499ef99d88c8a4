// libFuzzer target for the GGUF reader: any input must either parse or throw parafuse::Error.
// A crash, a sanitizer report, a huge allocation or any other exception is a finding. Inputs
// that parse are pushed further: config_from_gguf, and every tensor read through
// GgufWeightSource (whole, and a sliced corner that exercises the unaligned block path).
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_config.h"

namespace {

void read_every_tensor(const parafuse::GgufWeightSource& source) {
  for (const std::string& name : source.names()) {
    try {
      const parafuse::TensorInfo info = source.info(name);
      int64_t n = 1;
      for (int64_t d : info.shape) n *= d;
      std::vector<float> all(static_cast<size_t>(n));
      source.read_f32(name, {}, {}, all.data());
      const int64_t rows = info.shape.size() == 2 ? info.shape[0] : 1;
      const int64_t cols = info.shape.back();
      std::vector<float> corner(static_cast<size_t>(cols));
      source.read_f32(name, {rows - 1, rows}, {cols / 3, cols}, corner.data());
    } catch (const parafuse::Error&) {
      // 3-D tensors, Q/K tensors whose rows do not split into the declared heads, ...
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<const parafuse::GgufFile> file;
  try {
    file = std::make_shared<parafuse::GgufFile>(data, size, "fuzz.gguf");
  } catch (const parafuse::Error&) {
    return 0;
  }
  try {
    parafuse::ModelConfig config = parafuse::config_from_gguf(*file);
    (void)config.summary();
  } catch (const parafuse::Error&) {
  }
  try {
    parafuse::GgufWeightSource source(file);
    read_every_tensor(source);
  } catch (const parafuse::Error&) {
  }
  return 0;
}
