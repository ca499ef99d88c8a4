// libFuzzer target for the YAML files parafuse reads: the run config (parse_run_config) and
// fusion plans (parse_fusion_plan), both through the one config reader
// (runtime/config/config_reader.h). Every input goes to both. Each must parse or throw
// parafuse::Error; anything else (a yaml-cpp exception, a crash, a sanitizer report) is a
// finding. A plan that parses must also survive to_yaml and read back the same; a mismatch
// aborts, which libFuzzer reports.
//
// Needs pf_launcher (parse_run_config); seeds in tests/fuzz/corpus/run_config/.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/core/error.h"
#include "launcher/run_config.h"
#include "runtime/fusion/fusion_plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)parafuse::parse_run_config(text, "fuzz.yaml");
  } catch (const parafuse::Error&) {
  }

  parafuse::FusionPlan plan;
  try {
    plan = parafuse::parse_fusion_plan(text, "fuzz-plan.yaml");
  } catch (const parafuse::Error&) {
    return 0;
  }
  const parafuse::FusionPlan back = parafuse::parse_fusion_plan(plan.to_yaml("fuzz"), "written");
  if (back.model_blocks != plan.model_blocks || back.remove_attention != plan.remove_attention ||
      back.fuse != plan.fuse) {
    std::fprintf(stderr, "round trip changed the plan:\n%s\n---\n%s\n", plan.to_yaml().c_str(),
                 back.to_yaml().c_str());
    std::abort();
  }
  return 0;
}
