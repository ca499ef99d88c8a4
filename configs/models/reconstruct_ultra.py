#!/usr/bin/env python3
"""Writes llama-3.1-405b.json, ultra-prefusion.json and ultra-253b-base.json (HF config.json
form) from the published facts in ../shared/models/ultra-253b-facts.md, so the derivation can be
read and rerun: `python3 configs/models/reconstruct_ultra.py`.

What is read (facts): 162 blocks, hidden 16384, 128 heads of 128, 8 KV heads, vocab 128256,
RoPE theta 500000 with Llama-3 scaling (factor 8), the 98 attention-free blocks, blocks 9-12 and
18-23 empty, 81 blocks with an FFN, 253.401B parameters.
What is reconstructed (the per-block ffn_mult values were not available):
  * every attention block carries a full Llama-405B FFN (ffn_mult 4.875, width 53248);
  * the parameters left over (253.401B - embeddings - 64 attention blocks - 64 full FFNs) are
    spread evenly over the 88 non-empty attention-free blocks of Ultra-PreFusion: width 10496
    (the nearest multiple of 256), 253.62B in all (+0.09%);
  * Ultra-253B-Base fuses each attention-free run into one FFN at the run's first block (the
    other blocks of the run become empty), except the 34-block run 117-150, fused into three
    groups (12, 11, 11): 64 + 14 + 3 = 81 blocks with an FFN, as published. Fusion keeps the
    parameter count, so both models have the same bytes.
"""
import json
import os

HIDDEN = 16384
HEADS = 128
KV_HEADS = 8
VOCAB = 128256
FULL_FFN = 53248
NARROW_FFN = 10496
N_BLOCKS = 162
NO_ATTENTION_RUNS = [(9, 12), (18, 23), (27, 31), (36, 38), (42, 42), (44, 49), (54, 58),
                     (63, 67), (72, 76), (81, 85), (90, 91), (96, 97), (99, 106), (108, 112),
                     (115, 115), (117, 150), (153, 153)]
EMPTY_RUNS = [(9, 12), (18, 23)]
SPLIT_RUN = {(117, 150): [12, 11, 11]}

COMMON = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_attention_heads": HEADS,
    "head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}


def attention(full):
    return {"n_heads_in_group": HEADS // KV_HEADS} if full else {"no_op": True}


def ffn(width):
    if width == 0:
        return {"no_op": True}
    return {"ffn_mult": round(1.5 * width / HIDDEN, 6), "intermediate_size": width}


def blocks(fused):
    no_attention = {b for lo, hi in NO_ATTENTION_RUNS for b in range(lo, hi + 1)}
    empty = {b for lo, hi in EMPTY_RUNS for b in range(lo, hi + 1)}
    widths = [0 if b in empty else NARROW_FFN if b in no_attention else FULL_FFN
              for b in range(N_BLOCKS)]
    if fused:
        for lo, hi in NO_ATTENTION_RUNS:
            if (lo, hi) in EMPTY_RUNS:
                continue
            start = lo
            for size in SPLIT_RUN.get((lo, hi), [hi - lo + 1]):
                members = range(start, start + size)
                widths[start] = sum(NARROW_FFN for _ in members)
                for b in list(members)[1:]:
                    widths[b] = 0
                start += size
    return [{"attention": attention(b not in no_attention), "ffn": ffn(widths[b])}
            for b in range(N_BLOCKS)]


def parameters(config):
    n = 2 * VOCAB * HIDDEN + HIDDEN
    for block in config.get("block_configs", []):
        if "n_heads_in_group" in block["attention"]:
            n += 2 * HIDDEN * HIDDEN + 2 * HIDDEN * HIDDEN // (HEADS // KV_HEADS) + HIDDEN
        if "intermediate_size" in block["ffn"]:
            n += 3 * HIDDEN * block["ffn"]["intermediate_size"] + HIDDEN
    return n


def write(path, config):
    # One block per line: the file stays readable and diffable.
    text = json.dumps(config, indent=1)
    if "block_configs" in config:
        head = json.dumps({k: v for k, v in config.items() if k != "block_configs"}, indent=1)
        lines = ",\n".join("  " + json.dumps(b) for b in config["block_configs"])
        text = head[:-2] + ',\n "block_configs": [\n' + lines + "\n ]\n}"
    with open(path, "w") as f:
        f.write(text + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    llama = {"_source": "Llama-3.1-405B config.json (meta-llama/Llama-3.1-405B), public",
             "architectures": ["LlamaForCausalLM"], "model_type": "llama", **COMMON,
             "intermediate_size": FULL_FFN, "num_hidden_layers": 126,
             "num_key_value_heads": KV_HEADS}
    write(os.path.join(here, "llama-3.1-405b.json"), llama)
    for name, fused in (("ultra-prefusion.json", False), ("ultra-253b-base.json", True)):
        config = {"_reconstructed": (
                      "Block layout from ../shared/models/ultra-253b-facts.md (162 blocks, the 98 "
                      "attention-free blocks, 9-12 and 18-23 empty); FFN widths reconstructed, "
                      "not published: attention blocks 53248 (Llama-405B's), attention-free "
                      "blocks 10496 before fusion so the total matches 253.4B"
                      + ("; each attention-free run fused into one FFN at its first block, "
                         "117-150 into three (12, 11, 11): 81 blocks with an FFN"
                         if fused else "; no fusion (Puzzle's output)")
                      + ". Written by reconstruct_ultra.py."),
                  "architectures": ["DeciLMForCausalLM"], "model_type": "nemotron-nas",
                  **COMMON, "num_hidden_layers": N_BLOCKS, "block_configs": blocks(fused)}
        config["_parameters"] = parameters(config)
        write(os.path.join(here, name), config)
        print(f"{name}: {config['_parameters'] / 1e9:.3f}B parameters, "
              f"{sum('intermediate_size' in b['ffn'] for b in config['block_configs'])} FFN blocks")
    print(f"llama-3.1-405b.json: {(2 * VOCAB * HIDDEN + 126 * (2 * HIDDEN * HIDDEN + 2 * HIDDEN * 1024 + 3 * HIDDEN * FULL_FFN)) / 1e9:.3f}B parameters")


if __name__ == "__main__":
    main()
