// Seeded random weights for any ModelConfig: tests, and benchmarks of shapes we cannot
// download. Element i of tensor `name` is a pure function of (seed, name, i), so any slice
// any rank reads agrees with every other rank's view of the same tensor without storing it.
// Linear weights are uniform in +-1/sqrt(in_features); norm weights are 1 + small noise. The
// layers that write into the residual stream (o_proj, down_proj, linear_*) are further scaled
// by 1/sqrt(2 * n_blocks), so activations stay O(1) through a 160-block model.
#pragma once

#include <cstdint>
#include <map>

#include "runtime/model/model_config.h"
#include "runtime/model/weight_source.h"

namespace parafuse {

class SyntheticWeightSource : public WeightSource {
 public:
  SyntheticWeightSource(const ModelConfig& config, uint64_t seed);
  std::string description() const override;
  void read_f32(const std::string& name, Range rows, Range cols, float* out) const override;

 private:
  uint64_t seed_;
  // Half-width of each tensor's uniform distribution (centred on 1 for 1-D norm weights).
  std::map<std::string, float> scales_;
  std::string description_;
};

// The HF tensor names and shapes a ModelConfig implies (also what `parafuse fuse` writes).
std::map<std::string, TensorInfo> expected_tensors(const ModelConfig& config);

}  // namespace parafuse
