// `parafuse generate`: stream a completion for one prompt, on one rank or a TP x PP job.
// Every rank runs the same token loop (SPMD); world rank 0 prints.
#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/session.h"
#include "runtime/engine/generate.h"

namespace parafuse {
namespace {

// This process's peak resident memory (VmHWM of /proc/self/status; 0 where there is none).
// Not getrusage: after exec it also remembers the peak of the process that forked us.
size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return size_t(std::stoull(line.substr(6))) * 1024;  // kB
  }
  return 0;
}

struct GenerateArgs {
  SessionFlags session;
  std::string prompt;
  std::string prompt_ids;
  std::string system;
  bool chat = false;
  bool print_ids = false;
  std::optional<int> max_tokens;
  std::optional<float> temperature;
  std::optional<int> top_k;
  std::optional<float> top_p;
  std::optional<uint64_t> seed;
  std::string dump_logits;
};

// --prompt-ids: explicit token ids, no BOS added.
std::vector<int32_t> parse_ids(const std::string& text) {
  const std::vector<int64_t> v = parse_int_list(
      text, {"--prompt-ids", {0, kIntMax}, "a token id", "comma-separated token ids", "1,15,27"});
  return std::vector<int32_t>(v.begin(), v.end());
}

int run_generate(GenerateArgs& a, LaunchContext& launch) {
  std::vector<int32_t> prompt;
  auto configure = [&](RunConfig& run) {
    PF_CHECK(a.prompt.empty() != a.prompt_ids.empty(),
             "give exactly one of --prompt and --prompt-ids");
    if (a.max_tokens) run.sampling.max_tokens = *a.max_tokens;
    if (a.temperature) run.sampling.temperature = *a.temperature;
    if (a.top_k) run.sampling.top_k = *a.top_k;
    if (a.top_p) run.sampling.top_p = *a.top_p;
    if (a.seed) run.sampling.seed = *a.seed;
  };
  // The prompt is tokenized on every rank (identically) while setup errors are still agreed.
  auto check = [&](Session& s) {
    if (!a.print_ids) s.tokenizer();  // text output needs one: fail during setup, on all ranks
    if (!a.prompt_ids.empty()) {
      prompt = parse_ids(a.prompt_ids);  // explicit ids: no BOS added
      for (int32_t id : prompt)
        PF_CHECK(id < s.files.config.vocab_size,
                 "--prompt-ids: token id {} outside the vocabulary [0, {})", id,
                 s.files.config.vocab_size);
      return;
    }
    const Tokenizer& t = s.tokenizer();
    std::string text = a.prompt;
    if (a.chat) {
      std::vector<ChatMessage> messages;
      if (!a.system.empty()) messages.push_back({"system", a.system});
      messages.push_back({"user", a.prompt});
      text = t.apply_chat_template(messages, true);
    }
    if (t.add_bos() && !a.chat) prompt.push_back(t.bos_id());
    const auto ids = t.encode(text, a.chat);
    prompt.insert(prompt.end(), ids.begin(), ids.end());
  };
  Session s = SessionBuilder(launch, a.session).configure(configure).check(check).build();
  const RunConfig& run = s.run;
  const Tokenizer* tok = s.files.tokenizer ? &*s.files.tokenizer : nullptr;
  GenerateOptions go;
  go.max_tokens = run.sampling.max_tokens;
  go.sampling.temperature = run.sampling.temperature;
  go.sampling.top_k = run.sampling.top_k;
  go.sampling.top_p = run.sampling.top_p;
  go.sampling.seed = run.sampling.seed;
  if (tok) go.stop_ids = tok->eos_ids();
  for (int id : s.files.config.eos_token_ids)
    if (std::find(go.stop_ids.begin(), go.stop_ids.end(), id) == go.stop_ids.end())
      go.stop_ids.push_back(id);
  // Logits of each sampled position, raw float32 rows of `vocab`, from the sampling rank.
  std::ofstream logits_out;
  if (!a.dump_logits.empty() && s.engine->is_last_stage() && s.grid->tp_rank() == 0) {
    logits_out.open(a.dump_logits, std::ios::binary);
    PF_CHECK(logits_out.good(), "cannot write --dump-logits file '{}'", a.dump_logits);
    go.on_logits = [&](std::span<const float> row) {
      logits_out.write(reinterpret_cast<const char*>(row.data()),
                       std::streamsize(row.size() * sizeof(float)));
    };
  }

  const bool print = s.is_root();
  std::optional<StreamDecoder> decoder;
  if (!a.print_ids && print) decoder.emplace(s.tokenizer());
  s.engine->reset_stats();
  GenerateResult r = generate(*s.engine, prompt, go, [&](int32_t id) {
    if (decoder) {
      fmt::print("{}", decoder->push(id));
      std::fflush(stdout);
    }
    return true;
  });
  if (print) {
    if (decoder) {
      fmt::print("{}\n", decoder->flush());
    } else {
      fmt::print("{}\n", fmt::join(r.ids, " "));
    }
    std::fflush(stdout);
  }
  if (!s.quiet) {
    s.log_step_stats("generate");
    if (print) {
      const double n = double(r.ids.size());
      fmt::print(stderr,
                 "prompt {} tokens in {:.3f}s ({:.1f} tok/s); generated {} tokens in {:.3f}s "
                 "({:.1f} tok/s){}; peak memory {:.1f} MB\n",
                 prompt.size(), r.prefill_seconds, double(prompt.size()) / r.prefill_seconds,
                 r.ids.size(), r.decode_seconds, r.decode_seconds > 0 ? n / r.decode_seconds : 0.0,
                 r.stopped ? ", stopped at end of sequence" : "", double(peak_rss_bytes()) / 1e6);
    }
  }
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto [cmd, a] = add_model_command<GenerateArgs>(
      app, "generate",
      "Generate text for one prompt, streamed. Under mpirun/srun every rank runs it and rank 0 "
      "prints.");
  cmd->add_option("-p,--prompt", a->prompt, "Prompt text");
  cmd->add_option("--prompt-ids", a->prompt_ids,
                  "Prompt as comma-separated token ids (no BOS is added), e.g. 1,15,27");
  cmd->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template");
  cmd->add_option("--system", a->system, "System message for --chat");
  cmd->add_flag("--print-ids", a->print_ids, "Print generated token ids instead of text");
  cmd->add_option("-n,--max-tokens", a->max_tokens,
                  "Most tokens to generate (default: sampling.max_tokens, 128)")
      ->check(int_flag(kPositiveInt));
  cmd->add_option("-t,--temperature", a->temperature,
                  "Sampling temperature; 0 is greedy (default: sampling.temperature, 0)")
      ->check(number_flag(kNonNegativeNumber));
  cmd->add_option("--top-k", a->top_k, "Keep the k most likely tokens; 0 is off")
      ->check(int_flag(kNonNegativeInt));
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling mass, in (0, 1]; 1 is off")
      ->check(number_flag(kProbability));
  cmd->add_option("--seed", a->seed, "Sampling seed")->check(int_flag(kNonNegativeInt64));
  cmd->add_option("--dump-logits", a->dump_logits,
                  "Write the logits of every sampled position here (raw float32, vocab per row)");
  return runs(a, run_generate);
}

}  // namespace parafuse
