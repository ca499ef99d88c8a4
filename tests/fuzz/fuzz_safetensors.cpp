// libFuzzer target for the safetensors reader: any byte string either opens or throws
// parafuse::Error. An opened file's every tensor is then read in full and as a slice through
// SafetensorsFile::read_f32 (the path SafetensorsWeightSource uses), so an offset that passed
// validation but is wrong shows up as an out-of-bounds read under ASan.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exactly sized heap copy, so a read one byte past the input is caught.
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    const parafuse::SafetensorsFile file(bytes.data(), bytes.size(), "fuzz");
    std::vector<float> out;
    for (const auto& [name, entry] : file.entries()) {
      const parafuse::TensorInfo& info = entry.info;
      if (info.shape.size() > 2) continue;  // read_f32 refuses these; covered by unit tests
      const int64_t rows = info.rows(), cols = info.cols();
      if (cols == 0) continue;
      // Validation bounds rows * cols by the input size: the allocation cannot explode.
      out.assign(size_t(rows * cols), 0.0f);
      file.read_f32(entry, {}, {}, out.data());
      file.read_f32(entry, {rows / 2, rows}, {cols / 3, cols}, out.data());
    }
  } catch (const parafuse::Error&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
