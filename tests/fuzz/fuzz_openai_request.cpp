// libFuzzer target: request bodies of /v1/completions and /v1/chat/completions, and step plans
// as bytes. Any input must give a request or an ApiError / parafuse::Error, never a crash.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/engine/step_plan.h"
#include "runtime/serve/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace parafuse;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  ApiLimits limits;
  limits.vocab_size = 49152;
  for (Endpoint e : {Endpoint::Completions, Endpoint::ChatCompletions}) {
    try {
      parse_generation_request(body, e, limits);
    } catch (const ApiError&) {
    }
  }
  try {
    decode_step_plan(std::vector<uint8_t>(data, data + size));
  } catch (const Error&) {
  }
  return 0;
}
