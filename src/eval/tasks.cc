// lambada_openai / lastword:FILE (last-word prediction) and wikitext2 / ppl:FILE (perplexity)
// with the protocols of ../shared/README.md (those of lm-evaluation-harness and its reference runs).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "io/json_file.h"
#include "io/mmap_file.h"
#include "kernels/backend.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"

namespace fs = std::filesystem;

namespace mambaq {

std::string default_data_dir() {
  if (const char* e = std::getenv("MAMBAQ_DATA")) return e;
#ifdef MAMBAQ_SOURCE_DIR
  return std::string(MAMBAQ_SOURCE_DIR) + "/data";
#else
  return "data";
#endif
}

namespace {

std::string resolve(const std::string& file, const std::string& data_dir) {
  if (fs::exists(file) || fs::path(file).is_absolute()) return file;
  const fs::path p = fs::path(data_dir) / file;
  if (fs::exists(p)) return p.string();
  return file;
}

// Scores logits rows: log-softmax at `target` and whether it is the argmax.
struct RowScore {
  double logprob;
  bool greedy;
};

void score_rows(const Model& m, const float* hidden, const std::vector<int>& rows, const std::vector<int32_t>& targets,
                std::vector<RowScore>& out) {
  const int V = m.config().padded_vocab, dm = m.config().d_model;
  constexpr int kChunk = 256;
  std::vector<float> h(size_t(kChunk) * dm), logits(size_t(kChunk) * V);
  out.resize(rows.size());
  for (int32_t tgt : targets)  // a tokenizer larger than the model's vocabulary
    if (tgt < 0 || tgt >= V)
      fail("scored token id {} is outside the model's vocabulary [0, {}): the tokenizer does not belong to this model",
           tgt, V);
  for (size_t r0 = 0; r0 < rows.size(); r0 += kChunk) {
    const int n = int(std::min<size_t>(kChunk, rows.size() - r0));
    for (int i = 0; i < n; ++i)
      std::copy_n(hidden + size_t(rows[r0 + size_t(i)]) * dm, dm, h.data() + size_t(i) * dm);
    m.lm_head(h.data(), n, logits.data());
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) {
      double lp;
      int arg;
      const int32_t tgt = targets[r0 + size_t(i)];
      default_backend().log_softmax_at(logits.data() + size_t(i) * V, V, tgt, &lp, &arg);
      out[r0 + size_t(i)] = {lp, arg == tgt};
    }
    for (int i = 0; i < n; ++i)
      if (!std::isfinite(out[r0 + size_t(i)].logprob))
        fail("the log-likelihood of a scored token is {} (the LM head's logits overflow): refusing to report it",
             out[r0 + size_t(i)].logprob);
  }
}

// exp(mean NLL), refused when it overflows a double: "inf" is not a perplexity to report.
double finite_ppl(double mean_nll, const std::string& task) {
  // Every log-likelihood was checked finite, so a NaN mean is 0/0.
  if (std::isnan(mean_nll)) fail("{}: nothing was scored (no document or window long enough)", task);
  const double p = std::exp(mean_nll);
  if (!std::isfinite(p))
    fail("{}: perplexity overflows (mean negative log-likelihood {:.1f} nats per token): the model is broken on this "
         "task", task, mean_nll);
  return p;
}

double elapsed(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TaskResult run_lastword(const Model& m, const Tokenizer& tok, const std::string& key, const std::string& path,
                        const EvalOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  auto texts = read_jsonl_texts(path);
  if (opt.limit > 0 && size_t(opt.limit) < texts.size()) texts.resize(size_t(opt.limit));
  std::vector<LastwordDoc> docs;
  docs.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    try {
      docs.push_back(lastword_split(tok, texts[i]));
    } catch (const Error& e) {
      fail("{}: document {}: {}", path, i + 1, e.what());
    }
  }
  TaskResult res;
  res.key = key;
  res.kind = "lastword";
  res.per_doc.resize(docs.size());
  Progress bar(key, int64_t(docs.size()), opt.progress);
  const int dm = m.config().d_model;
  size_t d0 = 0;
  int64_t target_tokens = 0;
  while (d0 < docs.size()) {
    // Pack documents into one forward pass: input = (context + continuation)[:-1].
    std::vector<int32_t> toks;
    std::vector<int> lens, rows;
    std::vector<int32_t> targets;
    size_t d1 = d0;
    while (d1 < docs.size() && (d1 == d0 || int(toks.size()) < opt.batch_tokens)) {
      const auto& d = docs[d1];
      std::vector<int32_t> all = d.context;
      all.insert(all.end(), d.continuation.begin(), d.continuation.end());
      const int L = int(all.size()) - 1;
      const int base = int(toks.size());
      toks.insert(toks.end(), all.begin(), all.end() - 1);
      lens.push_back(L);
      const int nc = int(d.continuation.size());
      for (int k = 0; k < nc; ++k) {
        rows.push_back(base + L - nc + k);
        targets.push_back(d.continuation[size_t(k)]);
      }
      ++d1;
    }
    std::vector<float> hidden(toks.size() * size_t(dm));
    m.forward(toks, lens, nullptr, hidden.data(), opt.tap);
    std::vector<RowScore> sc;
    score_rows(m, hidden.data(), rows, targets, sc);
    size_t r = 0;
    for (size_t d = d0; d < d1; ++d) {
      double ll = 0;
      bool greedy = true;
      for (size_t k = 0; k < docs[d].continuation.size(); ++k, ++r) {
        ll += sc[r].logprob;
        greedy &= sc[r].greedy;
      }
      target_tokens += int64_t(docs[d].continuation.size());
      res.per_doc[d] = {greedy ? 1 : 0, ll};
    }
    bar.add(int64_t(d1 - d0));
    d0 = d1;
  }
  bar.finish();
  int correct = 0;
  double sum_ll = 0;
  for (auto& [c, ll] : res.per_doc) {
    correct += c;
    sum_ll += ll;
  }
  const double n = double(res.per_doc.size());
  res.json = {{"acc", correct / n},  {"correct", correct}, {"n", res.per_doc.size()},
              {"ppl", finite_ppl(-sum_ll / n, key)}, {"target_tokens", target_tokens}};
  res.seconds = elapsed(t0);
  return res;
}

TaskResult run_ppl(const Model& m, const Tokenizer& tok, const std::string& key, const std::string& path,
                   const EvalOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (!fs::exists(path)) fail("{}: file not found", path);
  const std::string text = read_text_file(path);
  if (text.empty()) fail("{}: empty file", path);
  const int S = opt.ppl_seqlen;
  if (S < 2) fail_option("ppl_seqlen", "ppl_seqlen must be at least 2 (got {})", S);
  const std::vector<int32_t> ids = tok.encode(text);
  int64_t nwin = int64_t(ids.size()) / S;
  if (nwin == 0) fail("{}: only {} tokens, fewer than one window of --ppl-seqlen {}", path, ids.size(), S);
  if (opt.limit > 0) nwin = std::min<int64_t>(nwin, opt.limit);
  const int dm = m.config().d_model;
  const int per_batch = std::max(1, opt.batch_tokens / S);
  double nll = 0;
  int64_t scored = 0;
  Progress bar(key, nwin, opt.progress);
  for (int64_t w0 = 0; w0 < nwin; w0 += per_batch) {
    const int nw = int(std::min<int64_t>(per_batch, nwin - w0));
    std::span<const int32_t> toks(ids.data() + w0 * S, size_t(nw) * S);
    std::vector<int> lens(size_t(nw), S), rows;
    std::vector<int32_t> targets;
    for (int w = 0; w < nw; ++w)
      for (int t = 0; t + 1 < S; ++t) {
        rows.push_back(w * S + t);
        targets.push_back(toks[size_t(w * S + t + 1)]);
      }
    std::vector<float> hidden(toks.size() * size_t(dm));
    m.forward(toks, lens, nullptr, hidden.data(), opt.tap);
    std::vector<RowScore> sc;
    score_rows(m, hidden.data(), rows, targets, sc);
    for (auto& s : sc) nll -= s.logprob;
    scored += int64_t(sc.size());
    bar.add(nw);
  }
  bar.finish();
  TaskResult res;
  res.key = key;
  res.kind = "ppl";
  res.json = {{"ppl", finite_ppl(nll / double(scored), key)}, {"tokens", ids.size()}, {"scored", scored}, {"seqlen", S},
              {"windows", nwin}};
  res.seconds = elapsed(t0);
  return res;
}

}  // namespace

LastwordDoc lastword_split(const Tokenizer& tok, const std::string& text) {
  // lambada: context = text.rsplit(" ", 1)[0], continuation = " " + last word
  const size_t sp = text.rfind(' ');
  if (sp == std::string::npos) fail("text has no space, so no last word to predict");
  std::string context = text.substr(0, sp), cont(1, ' ');
  cont.append(text, sp + 1, std::string::npos);
  // lm-eval _encode_pair: trailing spaces of the context move into the continuation
  const size_t keep = context.find_last_not_of(" \t\n\r\f\v");
  const size_t nsp = keep == std::string::npos ? context.size() : context.size() - keep - 1;
  if (nsp > 0) {
    cont.insert(0, context, context.size() - nsp, nsp);
    context.resize(context.size() - nsp);
  }
  LastwordDoc d;
  if (context.empty()) {
    d.context = {tok.eos_id() >= 0 ? tok.eos_id() : 0};
    d.continuation = tok.encode(cont);
  } else {
    const auto whole = tok.encode(context + cont);
    d.context = tok.encode(context);
    if (d.context.size() > whole.size()) fail("context encodes longer than context + continuation");
    d.continuation.assign(whole.begin() + std::ptrdiff_t(d.context.size()), whole.end());
  }
  if (d.continuation.empty()) fail("the continuation encodes to no tokens");
  return d;
}

TaskResult run_task(const Model& m, const Tokenizer& tok, const std::string& task, const EvalOptions& opt) {
  if (task == "lambada_openai")
    return run_lastword(m, tok, "lambada_openai",
                        (fs::path(opt.data_dir) / "lambada_openai" / "lambada_test.jsonl").string(), opt);
  if (task == "wikitext2")
    return run_ppl(m, tok, "wikitext2", (fs::path(opt.data_dir) / "wikitext-2-raw" / "wiki.test.raw").string(), opt);
  const size_t colon = task.find(':');
  if (colon != std::string::npos) {
    const std::string kind = task.substr(0, colon), file = task.substr(colon + 1);
    if (file.empty()) fail_option("tasks", "tasks: '{}' names no file", task);
    const std::string path = resolve(file, opt.data_dir);
    const std::string stem = fs::path(file).stem().string();
    if (kind == "lastword") return run_lastword(m, tok, stem, path, opt);
    if (kind == "ppl") return run_ppl(m, tok, stem, path, opt);
  }
  fail_option("tasks", "tasks: unknown task '{}' (known: lambada_openai, wikitext2, lastword:FILE.jsonl, ppl:FILE.txt)", task);
}

}  // namespace mambaq
