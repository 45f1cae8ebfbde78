// lambada_openai / lastword:FILE (last-word prediction) and wikitext2 / ppl:FILE (perplexity)
// with the protocols of ../shared/README.md (those of lm-evaluation-harness and its reference runs).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "core/stats.h"
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

TaskResult run_lastword(Session& m, const Tokenizer& tok, const std::string& key, const std::string& path,
                        const EvalOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  auto texts = read_jsonl_texts(path);
  const int64_t n_original = int64_t(texts.size());
  if (opt.limit > 0 && size_t(opt.limit) < texts.size()) texts.resize(size_t(opt.limit));
  std::vector<std::vector<Request>> docs;
  docs.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    try {
      docs.push_back({lastword_split(tok, texts[i])});
    } catch (const Error& e) {
      fail("{}: document {}: {}", path, i + 1, e.what());
    }
  }
  Progress bar(key, int64_t(docs.size()), opt.progress);
  const auto sc = score_requests(m, docs, opt, &bar);
  bar.finish();
  TaskResult res;
  res.key = key;
  res.kind = "lastword";
  res.n_original = n_original, res.n_effective = int64_t(docs.size());
  res.per_doc.resize(docs.size());
  int correct = 0;
  double sum_ll = 0;
  int64_t target_tokens = 0;
  std::vector<double> accs, lls;
  for (size_t d = 0; d < docs.size(); ++d) {
    const RequestScore& r = sc[d][0];
    res.per_doc[d] = {r.greedy ? 1 : 0, r.ll};
    correct += r.greedy;
    sum_ll += r.ll;
    target_tokens += int64_t(docs[d][0].continuation.size());
    accs.push_back(r.greedy ? 1.0 : 0.0);
    lls.push_back(r.ll);
    if (opt.log_samples)
      res.samples.push_back({{"doc_id", d},
                             {"doc", {{"text", texts[d]}}},
                             {"target", tok.decode(docs[d][0].continuation)},
                             {"arguments", {{tok.decode(docs[d][0].context), tok.decode(docs[d][0].continuation)}}},
                             {"resps", {{{r.ll, r.greedy}}}},
                             {"filtered_resps", {{r.ll, r.greedy}}},
                             {"perplexity", r.ll},
                             {"acc", r.greedy ? 1.0 : 0.0}});
  }
  const double n = double(docs.size());
  const double ppl = finite_ppl(-sum_ll / n, key);
  const double acc_se = mean_stderr(accs), ppl_se = opt.bootstrap_iters > 0 ? perplexity_bootstrap_stderr(lls, opt.bootstrap_iters) : -1;
  res.json = {{"acc", correct / n},  {"acc_stderr", acc_se},        {"correct", correct},
              {"n", docs.size()},    {"ppl", ppl},                   {"target_tokens", target_tokens}};
  if (ppl_se >= 0) res.json["ppl_stderr"] = ppl_se;
  res.metrics = {{"perplexity", ppl, ppl_se}, {"acc", correct / n, acc_se}};
  res.config = {{"task", key},
                {"dataset_path", path},
                {"output_type", "loglikelihood"},
                {"doc_to_text", "{{text.split(' ')[:-1]|join(' ')}}"},
                {"doc_to_target", "{{' '+text.split(' ')[-1]}}"},
                {"target_delimiter", " "},
                {"metric_list", {{{"metric", "perplexity"}, {"aggregation", "perplexity"}, {"higher_is_better", false}},
                                 {{"metric", "acc"}, {"aggregation", "mean"}, {"higher_is_better", true}}}}};
  res.seconds = elapsed(t0);
  return res;
}

TaskResult run_mc(Session& m, const Tokenizer& tok, const std::string& key, const EvalOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  std::vector<McDoc> mc = load_mc_task(key, opt.data_dir);
  const int64_t n_original = int64_t(mc.size());
  if (opt.limit > 0 && size_t(opt.limit) < mc.size()) mc.resize(size_t(opt.limit));
  std::vector<std::vector<Request>> docs(mc.size());
  for (size_t d = 0; d < mc.size(); ++d)
    for (size_t i = 0; i < mc[d].contexts.size(); ++i) {
      try {
        docs[d].push_back(encode_pair(tok, mc[d].contexts[i], mc[d].continuations[i]));
      } catch (const Error& e) {
        fail("{}: document {}, choice {}: {}", key, d + 1, i + 1, e.what());
      }
    }
  Progress bar(key, int64_t(docs.size()), opt.progress);
  int64_t tokens_read = 0;
  const auto sc = score_requests(m, docs, opt, &bar, &tokens_read);
  bar.finish();
  const bool has_norm = !mc.empty() && mc[0].choice_chars[0] > 0;
  TaskResult res;
  res.key = key;
  res.kind = "multiple_choice";
  res.n_original = n_original, res.n_effective = int64_t(mc.size());
  res.per_doc.resize(mc.size());
  std::vector<double> acc(mc.size()), acc_norm(mc.size());
  for (size_t d = 0; d < mc.size(); ++d) {
    // numpy argmax: the first maximum wins a tie
    int best = 0, best_n = 0;
    for (size_t i = 1; i < sc[d].size(); ++i) {
      if (sc[d][i].ll > sc[d][size_t(best)].ll) best = int(i);
      if (has_norm && sc[d][i].ll / mc[d].choice_chars[i] > sc[d][size_t(best_n)].ll / mc[d].choice_chars[size_t(best_n)])
        best_n = int(i);
    }
    res.per_doc[d] = {best, best_n};
    acc[d] = best == mc[d].gold;
    acc_norm[d] = best_n == mc[d].gold;
    if (opt.log_samples) {
      nlohmann::json args = nlohmann::json::array(), resps = nlohmann::json::array(), filt = nlohmann::json::array();
      for (size_t i = 0; i < sc[d].size(); ++i) {
        args.push_back({mc[d].contexts[i], mc[d].continuations[i]});
        resps.push_back({{sc[d][i].ll, sc[d][i].greedy}});
        filt.push_back({sc[d][i].ll, sc[d][i].greedy});
      }
      nlohmann::json rec = {{"doc_id", d},         {"doc", mc[d].doc},         {"target", mc[d].gold},
                            {"arguments", args},   {"resps", resps},           {"filtered_resps", filt},
                            {"acc", acc[d]}};
      if (has_norm) rec["acc_norm"] = acc_norm[d];
      res.samples.push_back(std::move(rec));
    }
  }
  if (mc.empty()) fail("{}: no documents", key);
  res.metrics.push_back({"acc", mean(acc), mean_stderr(acc)});
  res.json = {{"acc", mean(acc)}, {"acc_stderr", mean_stderr(acc)}, {"n", mc.size()}};
  if (has_norm) {
    res.metrics.push_back({"acc_norm", mean(acc_norm), mean_stderr(acc_norm)});
    res.json["acc_norm"] = mean(acc_norm);
    res.json["acc_norm_stderr"] = mean_stderr(acc_norm);
  }
  res.json["correct"] = int(mean(acc) * double(mc.size()) + 0.5);
  res.json["tokens_read"] = tokens_read;  // tokens the model read (shared prefixes once)
  nlohmann::json metric_list = {{{"metric", "acc"}, {"aggregation", "mean"}, {"higher_is_better", true}}};
  if (has_norm) metric_list.push_back({{"metric", "acc_norm"}, {"aggregation", "mean"}, {"higher_is_better", true}});
  res.config = {{"task", key}, {"output_type", "multiple_choice"}, {"target_delimiter", " "},
                {"num_fewshot", 0}, {"metric_list", metric_list}};
  res.seconds = elapsed(t0);
  return res;
}

// lm-eval's `wikitext`: wikitext_document_level pages, each detokenized and scored by
// loglikelihood_rolling (disjoint windows of max_length tokens, the first after <|endoftext|>).
TaskResult run_rolling(Session& m, const Tokenizer& tok, const std::string& key, const std::string& path,
                       const EvalOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (!fs::exists(path)) fail("{}: file not found", path);
  std::vector<std::string> pages = wikitext_pages(read_text_file(path));
  if (pages.empty()) fail("{}: no page (no line of the form ' = Title = ')", path);
  const int64_t n_original = int64_t(pages.size());
  if (opt.limit > 0 && size_t(opt.limit) < pages.size()) pages.resize(size_t(opt.limit));
  const int W = opt.max_length;
  const int32_t eot = tok.eos_id() >= 0 ? tok.eos_id() : 0;
  std::vector<std::vector<Request>> windows;  // one request per window, each read from scratch
  std::vector<size_t> page_of;
  for (size_t p = 0; p < pages.size(); ++p) {
    const auto ids = tok.encode(wikitext_detokenize(pages[p]));
    const int n = int(ids.size());
    for (int pred = 0; pred < n;) {
      const int len = std::min(W, n - pred), end = pred + len;
      Request r;
      if (pred == 0) {
        r.context = {eot};
      } else {  // the window's tokens before its predictions (make_disjoint_window)
        const int c0 = std::max(0, end - W - 1);
        r.context.assign(ids.begin() + c0, ids.begin() + pred);
      }
      r.continuation.assign(ids.begin() + pred, ids.begin() + end);
      windows.push_back({std::move(r)});
      page_of.push_back(p);
      pred = end;
    }
  }
  EvalOptions o = opt;
  o.shared_prefix = false;
  Progress bar(key, int64_t(windows.size()), opt.progress);
  const auto sc = score_requests(m, windows, o, &bar);
  bar.finish();
  std::vector<double> page_ll(pages.size(), 0.0);
  for (size_t w = 0; w < windows.size(); ++w) page_ll[page_of[w]] += sc[w][0].ll;
  double ll = 0, words = 0, bytes = 0;
  TaskResult res;
  for (size_t p = 0; p < pages.size(); ++p) {
    // words of the original page: len(re.split(r"\s+", page))
    int64_t w = 1;
    for (size_t i = 0; i < pages[p].size();) {
      if (std::isspace(static_cast<unsigned char>(pages[p][i]))) {
        ++w;
        while (i < pages[p].size() && std::isspace(static_cast<unsigned char>(pages[p][i]))) ++i;
      } else {
        ++i;
      }
    }
    ll += page_ll[p], words += double(w), bytes += double(pages[p].size());
    if (opt.log_samples)
      res.samples.push_back({{"doc_id", p}, {"doc", {{"page", pages[p]}}}, {"resps", {{page_ll[p]}}},
                             {"filtered_resps", {page_ll[p]}}, {"word_perplexity", {page_ll[p], w}},
                             {"byte_perplexity", {page_ll[p], pages[p].size()}}, {"bits_per_byte", {page_ll[p], pages[p].size()}}});
  }
  const double word_ppl = std::exp(-ll / words), byte_ppl = std::exp(-ll / bytes), bpb = -ll / bytes / std::log(2.0);
  if (!std::isfinite(word_ppl)) fail("{}: perplexity overflows: the model is broken on this task", key);
  res.key = key;
  res.kind = "rolling";
  res.n_original = n_original, res.n_effective = int64_t(pages.size());
  res.metrics = {{"word_perplexity", word_ppl, -1}, {"byte_perplexity", byte_ppl, -1}, {"bits_per_byte", bpb, -1}};
  res.json = {{"word_perplexity", word_ppl}, {"byte_perplexity", byte_ppl}, {"bits_per_byte", bpb},
              {"ppl", word_ppl}, {"n", pages.size()}, {"windows", windows.size()}, {"words", words}, {"bytes", bytes}};
  res.config = {{"task", key}, {"dataset_path", path}, {"output_type", "loglikelihood_rolling"},
                {"metric_list", {{{"metric", "word_perplexity"}}, {{"metric", "byte_perplexity"}}, {{"metric", "bits_per_byte"}}}}};
  res.version = 2;
  res.seconds = elapsed(t0);
  return res;
}

TaskResult run_ppl(Session& m, const Tokenizer& tok, const std::string& key, const std::string& path,
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
  const int per_batch = std::max(1, opt.batch_tokens / S);
  double nll = 0;
  int64_t scored = 0;
  Progress bar(key, nwin, opt.progress);
  for (int64_t w0 = 0; w0 < nwin; w0 += per_batch) {
    const int nw = int(std::min<int64_t>(per_batch, nwin - w0));
    std::span<const int32_t> toks(ids.data() + w0 * S, size_t(nw) * S);
    std::vector<int> lens(size_t(nw), S);
    const Hidden hidden = m.forward_hidden(toks, lens, nullptr, opt.tap);
    std::vector<Session::RowRef> rows;
    std::vector<int32_t> targets;
    for (int w = 0; w < nw; ++w)
      for (int t = 0; t + 1 < S; ++t) {
        rows.push_back({&hidden, w * S + t});
        targets.push_back(toks[size_t(w * S + t + 1)]);
      }
    std::vector<RowScore> sc;
    m.score_rows(rows, targets, sc);
    for (auto& s : sc) nll -= s.logprob;
    scored += int64_t(sc.size());
    bar.add(nw);
  }
  bar.finish();
  TaskResult res;
  res.key = key;
  res.kind = "ppl";
  res.n_original = int64_t(ids.size()) / S, res.n_effective = nwin;
  const double ppl = finite_ppl(nll / double(scored), key);
  res.json = {{"ppl", ppl}, {"tokens", ids.size()}, {"scored", scored}, {"seqlen", S}, {"windows", nwin}};
  res.metrics = {{"perplexity", ppl, -1}};
  res.config = {{"task", key}, {"dataset_path", path}, {"output_type", "mambaq_windows"}, {"seqlen", S}};
  res.seconds = elapsed(t0);
  return res;
}

}  // namespace

std::vector<std::string> wikitext_pages(const std::string& text) {
  // A page starts at a level-1 heading line " = Title = " (not " = = "); it runs to the next one.
  std::vector<std::string> pages;
  size_t start = std::string::npos;
  for (size_t i = 0; i < text.size();) {
    size_t e = text.find('\n', i);
    if (e == std::string::npos) e = text.size();
    const std::string_view line(text.data() + i, e - i);
    if (line.starts_with(" = ") && !line.starts_with(" = = ") && line.size() >= 6 && line.ends_with(" = ")) {
      if (start != std::string::npos) pages.push_back(text.substr(start, i - start));
      start = i;
    }
    i = e + 1;
  }
  if (start != std::string::npos) pages.push_back(text.substr(start));
  return pages;
}

std::vector<std::string> known_tasks() {
  return {"lambada_openai", "arc_easy", "arc_challenge", "piqa", "winogrande", "hellaswag", "wikitext", "wikitext2"};
}

std::string task_key(const std::string& task) {
  const size_t colon = task.find(':');
  if (colon == std::string::npos) return task;
  return fs::path(task.substr(colon + 1)).stem().string();
}

void check_task_keys(const std::vector<std::string>& tasks) {
  for (size_t i = 0; i < tasks.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (task_key(tasks[i]) == task_key(tasks[j])) {
        if (tasks[i] == tasks[j]) fail_option("tasks", "tasks: '{}' is given twice", tasks[i]);
        fail_option("tasks",
                    "tasks: '{}' and '{}' both report as '{}' (one result would replace the other): give the files "
                    "different names",
                    tasks[j], tasks[i], task_key(tasks[i]));
      }
}

TaskResult run_task(Session& m, const Tokenizer& tok, const std::string& task, const EvalOptions& opt) {
  if (task == "arc_easy" || task == "arc_challenge" || task == "piqa" || task == "winogrande" || task == "hellaswag")
    return run_mc(m, tok, task, opt);
  if (task == "wikitext")
    return run_rolling(m, tok, "wikitext", (fs::path(opt.data_dir) / "wikitext-2-raw" / "wiki.test.raw").string(), opt);
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
    const std::string stem = task_key(task);
    if (kind == "lastword") return run_lastword(m, tok, stem, path, opt);
    if (kind == "ppl") return run_ppl(m, tok, stem, path, opt);
  }
  std::string known;
  for (const auto& k : known_tasks()) known += k + ", ";
  fail_option("tasks", "tasks: unknown task '{}' (known: {}lastword:FILE.jsonl, ppl:FILE.txt)", task, known);
}

}  // namespace mambaq
