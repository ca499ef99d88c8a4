// A step plan: everything every rank needs to run one forward step of a continuous batch, and
// nothing else. The Scheduler (scheduler.h) decides it on world rank 0, the plan is broadcast
// to every rank as bytes, and each rank executes it with run_step() — the vLLM split between a
// scheduler that decides and a runner that executes. Because the runner is deterministic and
// Engine::sample gives the same ids on every rank, the ranks never disagree about what a
// sequence holds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"  // SamplingParams

namespace parafuse {

class Engine;
class Collectives;

struct PlannedSeq {
  int seq = 0;                  // engine sequence id
  std::vector<int32_t> tokens;  // new tokens: a prompt chunk, or the last sampled id
  // Whether this step ends the sequence's prompt (or is a decode): its next id is sampled.
  // A prompt chunk that leaves more prompt behind samples nothing.
  bool sample = false;
  SamplingParams sampling;  // counter = the position of the sampled token
  int top_logprobs = -1;    // -1: no logprobs; else how many alternatives (0..20) to report
};

struct StepPlan {
  uint64_t step = 0;
  bool shutdown = false;          // the last plan: workers leave their loop
  std::vector<int> release;       // sequences whose pages are freed before the step
  std::vector<int> start;         // sequences that start empty before the step
  std::vector<PlannedSeq> seqs;   // the forward pass, in order; empty: a heartbeat

  bool empty() const { return seqs.empty(); }
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
};

// What a step produced, per planned sequence (same order as StepPlan::seqs).
struct StepOutput {
  std::vector<int32_t> ids;  // sampled id, or -1 where the plan sampled nothing
  // Where top_logprobs >= 0: the sampled id's log probability, then the top alternatives.
  std::vector<TokenLogprob> sampled_logprob;
  std::vector<std::vector<TokenLogprob>> top;
};

// The plan as bytes (little-endian fixed-width fields) and back; decode_step_plan throws
// parafuse::Error on bytes that are not a plan (truncated, counts past the end).
std::vector<uint8_t> encode_step_plan(const StepPlan& plan);
StepPlan decode_step_plan(const std::vector<uint8_t>& bytes);

// World rank `root` sends the plan to every rank (size first, then the bytes); the others get
// it back. `plan` is read on the root and written elsewhere.
void broadcast_step_plan(Collectives& world, StepPlan& plan, int root = 0);

// Runs the plan on this rank's engine: releases and starts sequences, one forward pass of the
// planned tokens, then samples (and computes logprobs where asked) on the last stage and
// shares the results with every rank.
StepOutput run_step(Engine& engine, const StepPlan& plan);

// Most alternatives a request may ask for (OpenAI's top_logprobs limit).
constexpr int kMaxTopLogprobs = 20;

}  // namespace parafuse
