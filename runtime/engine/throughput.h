// Throughput and latency measurement on an Engine, for `parafuse bench`, `parafuse fuse`'s
// report and the benchmarks: B sequences prefilled together, then decode steps that advance
// all B by one token each. Every rank runs it (SPMD); times are this rank's wall clock, with
// the share spent in TP collectives and pipeline waits taken from the Engine's counters.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/engine/engine.h"

namespace parafuse {

struct ThroughputResult {
  int batch = 0;
  int prompt_tokens = 0;
  int decode_steps = 0;
  double prefill_seconds = 0;           // all B prompts
  double decode_step_seconds = 0;       // median over steps: the per-token latency of each user
  double decode_tokens_per_second = 0;  // B / decode_step_seconds
  double prefill_tokens_per_second = 0;
  double all_reduces_per_step = 0;  // this rank's TP group, decode steps
  double collective_seconds_per_step = 0;
  double transport_seconds_per_step = 0;
  double compute_seconds_per_step = 0;  // the rest
  // Every decode step's time (in order): each user's time per output token (TPOT) and
  // inter-token latency, since every user advances one token per step.
  std::vector<double> step_seconds;
  // Per sequence: seconds from the start of prefill to the end of the forward that holds its
  // last prompt chunk (its first token is sampled from that forward's logits).
  std::vector<double> first_token_seconds;
};

// Uses sequence ids [1000, 1000 + batch) and removes them again.
ThroughputResult measure_throughput(Engine& engine, int batch, int prompt_tokens, int decode_steps);

}  // namespace parafuse
