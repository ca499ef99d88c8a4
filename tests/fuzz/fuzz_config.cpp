// libFuzzer target for config.json parsing: any input must either parse or throw
// parafuse::Error (never an nlohmann exception, a crash or a sanitizer report). A config that
// parses must also survive to_hf_config_json and parse back to the same summary; a mismatch
// aborts, which libFuzzer reports as a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/core/error.h"
#include "runtime/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  parafuse::ModelConfig config;
  try {
    config = parafuse::parse_hf_config(text, "fuzz.json");
  } catch (const parafuse::Error&) {
    return 0;
  }
  if (config.head_dim <= (1 << 16)) (void)parafuse::rope_inv_freq(config);
  const std::string written = parafuse::to_hf_config_json(config);  // must not throw
  const parafuse::ModelConfig back = parafuse::parse_hf_config(written, "written.json");
  if (back.summary() != config.summary() && config.model_type == back.model_type) {
    std::fprintf(stderr, "round trip changed the config:\n%s\n---\n%s\n", config.summary().c_str(),
                 back.summary().c_str());
    std::abort();
  }
  return 0;
}
