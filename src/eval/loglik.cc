// Log-likelihood requests as lm-evaluation-harness 0.4.2 builds and scores them
// (api/model.py _encode_pair, models/huggingface.py _loglikelihood_tokens), with shared-prefix
// scoring: a recurrent model reads a document's common prefix once and continues each request
// from the saved state.
#include <algorithm>
#include <cmath>

#include "mambaq/error.h"
#include "mambaq/eval.h"

namespace mambaq {

Request encode_pair(const Tokenizer& tok, std::string context, std::string cont) {
  // trailing white space of the context moves to the front of the continuation
  const size_t keep = context.find_last_not_of(" \t\n\r\f\v");
  const size_t nsp = keep == std::string::npos ? context.size() : context.size() - keep - 1;
  if (nsp > 0) {
    cont.insert(0, context, context.size() - nsp, nsp);
    context.resize(context.size() - nsp);
  }
  Request r;
  if (context.empty()) {
    r.context = {tok.eos_id() >= 0 ? tok.eos_id() : 0};
    r.continuation = tok.encode(cont);
  } else {
    const auto whole = tok.encode(context + cont);
    r.context = tok.encode(context);
    if (r.context.size() > whole.size()) fail("context encodes longer than context + continuation");
    r.continuation.assign(whole.begin() + std::ptrdiff_t(r.context.size()), whole.end());
  }
  if (r.continuation.empty()) fail("the continuation encodes to no tokens");
  return r;
}

Request lastword_split(const Tokenizer& tok, const std::string& text) {
  // lambada: context = text.rsplit(" ", 1)[0], continuation = " " + last word
  const size_t sp = text.rfind(' ');
  if (sp == std::string::npos) fail("text has no space, so no last word to predict");
  return encode_pair(tok, text.substr(0, sp), text.substr(sp));  // the space and the last word
}

namespace {

// How one document is read.
struct DocPlan {
  std::vector<std::vector<int32_t>> seq;  // per request: context + continuation
  int prefix = 0;                         // tokens read once, shared by every request (0: none)
};

DocPlan plan_doc(const std::vector<Request>& reqs, const EvalOptions& opt) {
  DocPlan p;
  bool long_req = false;
  int min_ctx = 1 << 30;
  for (const auto& r : reqs) {
    if (r.context.empty() || r.continuation.empty()) fail("internal error: request without context or continuation");
    if (int(r.continuation.size()) > opt.max_length)
      fail("a continuation of {} tokens is longer than max_length {}: it cannot be scored (lm-eval refuses it too)",
           r.continuation.size(), opt.max_length);
    std::vector<int32_t> s = r.context;
    s.insert(s.end(), r.continuation.begin(), r.continuation.end());
    long_req |= int(s.size()) > opt.max_length + 1;
    min_ctx = std::min(min_ctx, int(r.context.size()));
    p.seq.push_back(std::move(s));
  }
  if (!opt.shared_prefix || reqs.size() < 2 || long_req) return p;  // each request from scratch
  int lcp = min_ctx;
  for (size_t k = 1; k < p.seq.size(); ++k) {
    int i = 0;
    while (i < lcp && p.seq[k][size_t(i)] == p.seq[0][size_t(i)]) ++i;
    lcp = i;
  }
  p.prefix = lcp;
  return p;
}

// Every forward of scoring has at least this many rows: below it the kernels switch to decode
// paths (the int8/int4 GEMVs; the fp32 GEMM is the same for any row count) whose float rounding
// differs, and a quantized model amplifies a last-bit difference into a flipped activation code. Padding keeps a
// document's numbers independent of how few rows its batch had (Session::score_rows pads the LM
// head's products the same way).
constexpr int kMinRows = 16;

// forward(), padded to kMinRows tokens with a throw-away sequence of token 0; the hidden states
// stay in the session's backend memory.
Hidden forward_padded(Session& m, std::vector<int32_t>& toks, std::vector<int>& lens, std::vector<SeqState*>& sp,
                      Tap* tap) {
  const int T = int(toks.size());
  const int pad = T < kMinRows ? kMinRows - T : 0;
  if (pad) {
    toks.insert(toks.end(), size_t(pad), 0);
    lens.push_back(pad);
    sp.push_back(nullptr);
  }
  return m.forward_hidden(toks, lens, sp.data(), tap);
}

}  // namespace

std::vector<std::vector<RequestScore>> score_requests(Session& m, const std::vector<std::vector<Request>>& docs,
                                                      const EvalOptions& opt, Progress* bar, int64_t* tokens_read) {
  if (opt.max_length < 1) fail_option("max_length", "max_length must be at least 1 (got {})", opt.max_length);
  std::vector<std::vector<RequestScore>> out(docs.size());
  // Saved and working states: two per document of a batch that shares a prefix among its
  // requests, within a memory budget (a Mamba2-2.7B exact state is 168 MB; a GPU holds more).
  const size_t budget = m.host_memory() ? size_t(512) << 20 : size_t(4) << 30;
  const size_t state_bytes = opt.shared_prefix ? m.new_state(true).bytes() : 0;
  const size_t max_docs_by_state = state_bytes ? std::max<size_t>(1, budget / (2 * state_bytes)) : SIZE_MAX;
  size_t d0 = 0;
  while (d0 < docs.size()) {
    // Batch documents until about opt.batch_tokens tokens are read (and the states fit: only a
    // document with a shared prefix keeps any).
    std::vector<DocPlan> plans;
    size_t d1 = d0, with_state = 0;
    int64_t tokens = 0;
    while (d1 < docs.size() && (d1 == d0 || (tokens < opt.batch_tokens && with_state < max_docs_by_state))) {
      plans.push_back(plan_doc(docs[d1], opt));
      const DocPlan& p = plans.back();
      with_state += p.prefix > 0;
      tokens += p.prefix;
      for (const auto& s : p.seq) tokens += std::min<int64_t>(int64_t(s.size()) - 1, opt.max_length) - p.prefix;
      ++d1;
    }
    const size_t nd = d1 - d0;
    if (tokens_read) *tokens_read += tokens;
    // Phase 1: the shared prefixes, each from an empty exact state.
    std::vector<SeqState> saved(nd);
    Hidden h1;
    std::vector<int> row1(nd, -1);  // hidden row of each document's last prefix token
    {
      std::vector<int32_t> toks;
      std::vector<int> lens;
      std::vector<SeqState*> sp;
      for (size_t i = 0; i < nd; ++i) {
        const int p = plans[i].prefix;
        if (p == 0) continue;
        saved[i] = m.new_state(true);
        toks.insert(toks.end(), plans[i].seq[0].begin(), plans[i].seq[0].begin() + p);
        lens.push_back(p);
        sp.push_back(&saved[i]);
        row1[i] = int(toks.size()) - 1;
      }
      if (!lens.empty()) h1 = forward_padded(m, toks, lens, sp, opt.tap);
    }
    // Phase 2: round k reads request k of every document, from a copy of its saved state.
    size_t kmax = 0;
    for (const auto& p : plans) kmax = std::max(kmax, p.seq.size());
    for (size_t i = 0; i < nd; ++i) out[d0 + i].resize(plans[i].seq.size());
    std::vector<SeqState> work(nd);
    for (size_t k = 0; k < kmax; ++k) {
      std::vector<int32_t> toks;
      std::vector<int> lens;
      std::vector<SeqState*> sp;
      std::vector<int> start(nd, 0), off(nd, -1);
      for (size_t i = 0; i < nd; ++i) {
        if (k >= plans[i].seq.size()) continue;
        const auto& s = plans[i].seq[k];
        const int L = int(s.size()), p = plans[i].prefix;
        start[i] = p > 0 ? p : std::max(0, L - 1 - opt.max_length);
        const int n = L - 1 - start[i];
        if (n <= 0) continue;  // a one-token continuation right after the prefix
        off[i] = int(toks.size());
        toks.insert(toks.end(), s.begin() + start[i], s.begin() + (L - 1));
        lens.push_back(n);
        if (p > 0) {
          if (work[i].empty()) work[i] = m.new_state(true);
          m.copy_state(work[i], saved[i]);
          sp.push_back(&work[i]);
        } else {
          sp.push_back(nullptr);
        }
      }
      Hidden h2;
      if (!lens.empty()) h2 = forward_padded(m, toks, lens, sp, opt.tap);
      // the rows predicting each continuation token
      std::vector<Session::RowRef> rows;
      std::vector<int32_t> targets;
      for (size_t i = 0; i < nd; ++i) {
        if (k >= plans[i].seq.size()) continue;
        const auto& s = plans[i].seq[k];
        const int L = int(s.size()), c = int(docs[d0 + i][k].context.size());
        for (int t = c; t < L; ++t) {
          const int pos = t - 1;  // the position whose output predicts token t
          if (pos >= start[i]) {
            rows.push_back({&h2, off[i] + pos - start[i]});
          } else {
            MQ_ASSERT(plans[i].prefix > 0 && pos == plans[i].prefix - 1);
            rows.push_back({&h1, row1[i]});
          }
          targets.push_back(s[size_t(t)]);
        }
      }
      std::vector<RowScore> sc;
      m.score_rows(rows, targets, sc);
      size_t r = 0;
      for (size_t i = 0; i < nd; ++i) {
        if (k >= plans[i].seq.size()) continue;
        RequestScore& rs = out[d0 + i][k];
        rs.greedy = true;
        for (size_t t = 0; t < docs[d0 + i][k].continuation.size(); ++t, ++r) {
          rs.ll += sc[r].logprob;
          rs.greedy = rs.greedy && sc[r].greedy;
        }
      }
    }
    if (bar) bar->add(int64_t(nd));
    d0 = d1;
  }
  return out;
}

}  // namespace mambaq
