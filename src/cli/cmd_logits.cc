#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "cli/common.h"
#include "io/mmap_file.h"

namespace mambaq::cli {

Runner register_logits(CLI::App& app) {
  struct Opts {
    std::string model, prompt, json;
    int top = 10;
    std::string mode;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("logits", "Top-K logits at the last position of a prompt");
  sub->add_option("MODEL", o->model, "Model folder")->required();
  sub->add_option("--prompt", o->prompt, "Prompt text")->required();
  sub->add_option("--top", o->top, "How many logits to report")->check(at_least(1));
  sub->add_option("--json", o->json, "Write {ids, top_ids, top_logits} to FILE ('-' = stdout)");
  auto force = add_force(sub);
  add_mode(sub, o->mode);
  add_backend(sub, o->c);
  add_dtype(sub, o->c);
  add_common(sub, o->c);
  return [o, force] {
    apply_common(o->c);
    check_new_output_file(o->json, "--json", *force);
    auto model = Model::load(o->model);
    Session S = make_session(*model, o->mode, o->c);
    auto tok = load_tokenizer(o->model, o->c);
    const auto ids = tok->encode(o->prompt);
    auto logits = S.last_logits(ids);
    const int k = std::min<int>(o->top, int(logits.size()));
    std::vector<int> idx(logits.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
    idx.resize(size_t(k));
    std::vector<float> top;
    for (int i : idx) top.push_back(logits[size_t(i)]);
    fmt::print("ids: {}\n", fmt::join(ids, " "));
    fmt::print("{:>4}  {:>6}  {:>10}  token\n", "rank", "id", "logit");
    for (int r = 0; r < k; ++r)
      fmt::print("{:>4}  {:>6}  {:>10.5f}  {:?}\n", r + 1, idx[size_t(r)], top[size_t(r)],
                 tok->token_bytes(idx[size_t(r)]));
    if (!o->json.empty()) write_json(o->json, {{"ids", ids}, {"top_ids", idx}, {"top_logits", top}});
    return 0;
  };
}

}  // namespace mambaq::cli
