// Opening a model path: the one place that knows the accepted forms.
//   DIR             HF checkpoint: config.json + model.safetensors or shards listed by
//                   model.safetensors.index.json (+ tokenizer.json, optional)
//   FILE.gguf       GGUF (config from metadata, tokenizer from tokenizer.ggml.*)
//   synthetic:CFG   seeded random weights for the HF config.json CFG (tests, benchmarks);
//                   synthetic:CFG@SEED picks the seed (default 0)
// Anything else is one Error that says which forms exist.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "runtime/model/model_config.h"
#include "runtime/model/weight_source.h"
#include "runtime/tokenizer/tokenizer.h"

namespace parafuse {

struct ModelFiles {
  std::string path;
  ModelConfig config;
  std::unique_ptr<WeightSource> weights;
  std::optional<Tokenizer> tokenizer;  // absent when the folder holds none
};

ModelFiles open_model(const std::string& path);

}  // namespace parafuse
