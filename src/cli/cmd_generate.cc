#include <fmt/format.h>

#include <cstdio>

#include "cli/common.h"
#include "mambaq/generate.h"

namespace mambaq::cli {

Runner register_generate(CLI::App& app) {
  struct Opts {
    std::string model, prompt;
    int n = 32;
    SampleOptions s;
    bool stats = false, stop_eos = false;
    std::string mode;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("generate", "Generate text from a prompt, streaming tokens as they come");
  sub->add_option("MODEL", o->model, "Model folder")->required();
  sub->add_option("--prompt", o->prompt, "Prompt text")->required();
  sub->add_option("-n,--max-tokens", o->n, "Tokens to generate")->check(at_least(1));
  sub->add_option("--temperature", o->s.temperature, "Sampling temperature (0 = greedy, the default)")
      ->check(at_least(0));
  sub->add_option("--top-k", o->s.top_k, "Sample among the K most likely tokens (0 = all)")->check(at_least(0));
  sub->add_option("--top-p", o->s.top_p, "Nucleus sampling mass (1 = off)")->check(between(0.0f, 1.0f));
  sub->add_option("--seed", o->s.seed, "Random seed for sampling");
  sub->add_flag("--stop-at-eos", o->stop_eos, "Stop after <|endoftext|>");
  sub->add_flag("--stats", o->stats, "Print timing to stderr");
  add_mode(sub, o->mode);
  add_backend(sub, o->c);
  add_dtype(sub, o->c);
  add_common(sub, o->c);
  return [o] {
    apply_common(o->c);
    auto model = Model::load(o->model);
    Session S = make_session(*model, o->mode, o->c);
    auto tok = load_tokenizer(o->model, o->c);
    const auto ids = tok->encode(o->prompt);
    if (o->stop_eos) o->s.stop_id = tok->eos_id();
    fmt::print("{}", o->prompt);
    std::fflush(stdout);
    GenStats st;
    generate(S, ids, o->n, o->s,
             [&](int32_t t) {
               const std::string b = tok->token_bytes(t);
               std::fwrite(b.data(), 1, b.size(), stdout);
               std::fflush(stdout);
               return true;
             },
             &st);
    fmt::print("\n");
    std::fflush(stdout);
    if (o->stats)
      fmt::print(stderr, "prompt {} tokens, time to first token {:.1f} ms, {} tokens decoded at {:.1f} tok/s\n",
                 st.prompt_tokens, 1e3 * st.prefill_s, st.new_tokens - 1,
                 st.new_tokens > 1 ? (st.new_tokens - 1) / st.decode_s : 0.0);
    return 0;
  };
}

}  // namespace mambaq::cli
