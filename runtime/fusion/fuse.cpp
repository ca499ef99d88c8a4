// FFN Fusion checkpoint rewriting. See fuse.h for the math.
#include "runtime/fusion/fuse.h"

#include <filesystem>
#include <fstream>

#include "kernels/core/error.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/synthetic.h"

namespace parafuse {
namespace {

// Block id in the input model -> the group it leads / belongs to.
struct GroupIndex {
  std::vector<int> group_of;  // -1 when not in a group
  std::vector<bool> leads;
  GroupIndex(const ModelConfig& c, const FusionPlan& plan)
      : group_of(size_t(c.n_blocks()), -1), leads(size_t(c.n_blocks()), false) {
    for (size_t g = 0; g < plan.fuse.size(); ++g) {
      for (int b : plan.fuse[g]) group_of[size_t(b)] = int(g);
      leads[size_t(plan.fuse[g].front())] = true;
    }
  }
};

}  // namespace

ModelConfig fused_config(const ModelConfig& config, const FusionPlan& plan) {
  plan.validate(config);
  const ModelConfig trimmed = plan.without_removed_attention(config);
  const GroupIndex index(config, plan);
  ModelConfig out = trimmed;
  out.model_type = "nemotron-nas";
  out.blocks.clear();
  for (int i = 0; i < config.n_blocks(); ++i) {
    const int g = index.group_of[size_t(i)];
    if (g >= 0 && !index.leads[size_t(i)]) continue;  // folded into its group's first block
    BlockConfig b = trimmed.blocks[size_t(i)];
    if (g >= 0) {
      b.ffn = FfnKind::SwiGlu;
      b.intermediate_size = 0;
      b.fused_from.clear();
      for (int member : plan.fuse[size_t(g)]) {
        b.intermediate_size += trimmed.blocks[size_t(member)].intermediate_size;
        const auto& inner = trimmed.blocks[size_t(member)].fused_from;
        if (inner.empty()) {
          b.fused_from.push_back(member);
        } else {
          b.fused_from.insert(b.fused_from.end(), inner.begin(), inner.end());
        }
      }
      b.ffn_norm_folded = true;
    }
    out.blocks.push_back(b);
  }
  out.validate();
  return out;
}

int64_t count_parameters(const ModelConfig& config) {
  int64_t n = 0;
  for (const auto& [name, info] : expected_tensors(config)) {
    int64_t p = 1;
    for (int64_t d : info.shape) p *= d;
    n += p;
  }
  return n;
}

int count_all_reduces_per_token(const ModelConfig& config) {
  int n = 1;  // vocab-parallel embedding
  for (const BlockConfig& b : config.blocks) {
    if (b.attention != AttentionKind::None) ++n;
    if (b.ffn != FfnKind::None) ++n;
  }
  return n;
}

FuseStats write_fused_checkpoint(const ModelConfig& config, const WeightSource& weights,
                                 const FusionPlan& plan, const std::string& out_dir,
                                 const Tokenizer* tokenizer, DType storage,
                                 const std::function<void(size_t, size_t)>& progress) {
  namespace fs = std::filesystem;
  const ModelConfig out_config = fused_config(config, plan);
  const ModelConfig trimmed = plan.without_removed_attention(config);
  const GroupIndex index(config, plan);
  const int64_t H = config.hidden_size;
  fs::create_directories(out_dir);

  SafetensorsWriter writer;
  size_t done = 0;
  const size_t total = size_t(count_parameters(out_config));
  auto copy = [&](const std::string& from, const std::string& to) {
    TensorInfo info = weights.info(from);
    std::vector<float> v = weights.read_all(from);
    done += v.size();
    writer.add(to, info.shape, std::move(v));
    if (progress) progress(done, total);
  };
  copy("model.embed_tokens.weight", "model.embed_tokens.weight");
  copy("model.norm.weight", "model.norm.weight");
  if (!config.tie_word_embeddings) copy("lm_head.weight", "lm_head.weight");

  int out_block = 0;
  for (int i = 0; i < config.n_blocks(); ++i) {
    const int g = index.group_of[size_t(i)];
    if (g >= 0 && !index.leads[size_t(i)]) continue;
    const BlockConfig& b = trimmed.blocks[size_t(i)];
    auto src = [&](const char* suffix) { return block_tensor_name(i, suffix); };
    auto dst = [&](const char* suffix) { return block_tensor_name(out_block, suffix); };
    if (b.attention != AttentionKind::None) copy(src("input_layernorm.weight"), dst("input_layernorm.weight"));
    if (b.attention == AttentionKind::Full) {
      for (const char* p : {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                            "self_attn.v_proj.weight", "self_attn.o_proj.weight"})
        copy(src(p), dst(p));
    } else if (b.attention == AttentionKind::Linear) {
      copy(src("self_attn.linear_attn.weight"), dst("self_attn.linear_attn.weight"));
    }
    if (g < 0) {
      if (b.ffn != FfnKind::None && !b.ffn_norm_folded)
        copy(src("post_attention_layernorm.weight"), dst("post_attention_layernorm.weight"));
      if (b.ffn == FfnKind::SwiGlu) {
        for (const char* p : {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"})
          copy(src(p), dst(p));
      } else if (b.ffn == FfnKind::Linear) {
        copy(src("mlp.linear_mlp.weight"), dst("mlp.linear_mlp.weight"));
      }
    } else {
      // The fused FFN: gate/up rows of every member with its norm weight folded into the
      // columns, stacked; down columns stacked in the same order.
      const int64_t width = out_config.blocks[size_t(out_block)].intermediate_size;
      std::vector<float> gate(size_t(width * H)), up(size_t(width * H)), down(size_t(H * width));
      int64_t row = 0;
      for (int member : plan.fuse[size_t(g)]) {
        const BlockConfig& mb = trimmed.blocks[size_t(member)];
        const int64_t I = mb.intermediate_size;
        auto name = [&](const char* suffix) { return block_tensor_name(member, suffix); };
        std::vector<float> norm(size_t(H), 1.0f);
        if (!mb.ffn_norm_folded) norm = weights.read_all(name("post_attention_layernorm.weight"));
        weights.read_f32(name("mlp.gate_proj.weight"), {}, {}, gate.data() + row * H);
        weights.read_f32(name("mlp.up_proj.weight"), {}, {}, up.data() + row * H);
        for (int64_t r = row; r < row + I; ++r)
          for (int64_t c = 0; c < H; ++c) {
            gate[size_t(r * H + c)] *= norm[size_t(c)];
            up[size_t(r * H + c)] *= norm[size_t(c)];
          }
        std::vector<float> d = weights.read_all(name("mlp.down_proj.weight"));  // (H, I)
        for (int64_t r = 0; r < H; ++r)
          std::copy(d.begin() + r * I, d.begin() + (r + 1) * I, down.begin() + r * width + row);
        row += I;
        done += size_t(3 * I * H);
        if (progress) progress(done, total);
      }
      writer.add(dst("mlp.gate_proj.weight"), {width, H}, std::move(gate));
      writer.add(dst("mlp.up_proj.weight"), {width, H}, std::move(up));
      writer.add(dst("mlp.down_proj.weight"), {H, width}, std::move(down));
    }
    ++out_block;
  }
  writer.set_metadata("parafuse_fusion_plan", plan.to_yaml());
  writer.write((fs::path(out_dir) / "model.safetensors").string(), storage);
  {
    std::ofstream cfg(fs::path(out_dir) / "config.json");
    cfg << to_hf_config_json(out_config);
    PF_CHECK(cfg.good(), "cannot write {}/config.json", out_dir);
  }
  if (tokenizer) tokenizer->save_hf(out_dir);

  FuseStats stats;
  stats.blocks_before = config.n_blocks();
  stats.blocks_after = out_config.n_blocks();
  stats.parameters_before = count_parameters(config);
  stats.parameters_after = count_parameters(out_config);
  stats.all_reduces_before = count_all_reduces_per_token(config);
  stats.all_reduces_after = count_all_reduces_per_token(out_config);
  return stats;
}

}  // namespace parafuse
