// libFuzzer target for the safetensors reader: any byte string either opens or throws
// parafuse::Error. An opened file's every tensor is then read in full and as a slice through
// SafetensorsFile::read_f32 (the path SafetensorsWeightSource uses), so an offset that passed
// validation but is wrong shows up as an out-of-bounds read under ASan. Then the same bytes go
// through SafetensorsWeightSource, which binds FP8 weights to their scales, and every tensor it
// lists is read through it (scales applied).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/model/safetensors.h"

namespace {

void read_all_ways(const parafuse::TensorInfo& info,
                   const std::function<void(parafuse::Range, parafuse::Range, float*)>& read) {
  if (info.shape.size() > 2) return;  // read_f32 refuses these; covered by unit tests
  const int64_t rows = info.rows(), cols = info.cols();
  if (cols == 0) return;
  // Validation bounds rows * cols by the input size: the allocation cannot explode.
  std::vector<float> out(size_t(rows * cols), 0.0f);
  read({}, {}, out.data());
  read({rows / 2, rows}, {cols / 3, cols}, out.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exactly sized heap copy, so a read one byte past the input is caught.
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    const parafuse::SafetensorsFile file(bytes.data(), bytes.size(), "fuzz");
    for (const auto& item : file.entries()) {  // (clang 14 cannot capture a structured binding)
      const parafuse::SafetensorsEntry& entry = item.second;
      read_all_ways(entry.info, [&](parafuse::Range r, parafuse::Range c, float* out) {
        file.read_f32(entry, r, c, out);
      });
    }
  } catch (const parafuse::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  try {
    const parafuse::SafetensorsWeightSource source(
        std::make_unique<parafuse::SafetensorsFile>(bytes.data(), bytes.size(), "fuzz"));
    for (const auto& item : source.tensors()) {
      const std::string& name = item.first;
      read_all_ways(item.second, [&](parafuse::Range r, parafuse::Range c, float* out) {
        source.read_f32(name, r, c, out);
      });
    }
  } catch (const parafuse::Error&) {
  }
  return 0;
}
