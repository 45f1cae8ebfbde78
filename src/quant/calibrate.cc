#include "quant/calibrate.h"

#include <filesystem>
#include <map>

#include "io/json_file.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "mambaq/progress.h"
#include "mambaq/session.h"
#include "kernels/hadamard.h"
#include "model/points.h"
#include "quant/recipe.h"

namespace mambaq {

CalibSamples make_calib_samples(const Tokenizer& tok, const std::string& file, int seqlen, int num,
                                const std::string& option) {
  // calib_data / gptq_data name their seqlen and num options alike; compare's are data / seqlen / samples
  const std::string pre = option.ends_with("_data") ? option.substr(0, option.size() - 4) : "";
  const std::string o_len = pre.empty() ? "seqlen" : pre + "seqlen", o_num = pre.empty() ? "samples" : pre + "num";
  if (seqlen < 1) fail_option(o_len, "{} must be positive (got {})", o_len, seqlen);
  if (num < 1) fail_option(o_num, "{} must be positive (got {})", o_num, num);
  if (!std::filesystem::exists(file)) fail_option(option, "{}: {}: file not found", option, file);
  std::vector<std::string> docs;
  if (std::filesystem::path(file).extension() == ".jsonl") {
    docs = read_jsonl_texts(file);
  } else {
    docs.push_back(read_text_file(file));
    if (docs.back().empty()) fail_option(option, "{}: {}: empty file", option, file);
  }
  CalibSamples cs;
  cs.documents = docs.size();
  for (const auto& d : docs) {
    const auto ids = tok.encode(d);
    if (ids.empty()) continue;
    if (ids.size() < size_t(seqlen)) {
      ++cs.available;
      if (cs.samples.size() < size_t(num)) cs.samples.push_back(ids);
      continue;
    }
    for (size_t o = 0; o + size_t(seqlen) <= ids.size(); o += size_t(seqlen)) {
      ++cs.available;
      if (cs.samples.size() < size_t(num))
        cs.samples.emplace_back(ids.begin() + std::ptrdiff_t(o), ids.begin() + std::ptrdiff_t(o) + seqlen);
    }
  }
  if (cs.samples.empty()) fail_option(option, "{}: {}: no samples (no text)", option, file);
  return cs;
}

namespace {

class CalibTap final : public Tap {
 public:
  CalibTap(const ModelConfig& c, const CalibOptions& o, size_t total_tokens, size_t nsamples) : cfg_(c), opt_(o) {
    const Recipe& r = recipe(o.recipe);
    for (int l = -1; l < c.n_layer; ++l)
      for (const auto& sp : scale_points(c.arch)) {
        if (sp.head != (l < 0)) continue;
        const auto [c0, c1] = col_range(c, sp.cols, tap_width(c, sp.tap));
        const size_t expected = std::string_view(sp.tap) == "ssm_state" ? nsamples * c.ssm_state_size()
                                                                         : total_tokens * size_t(c1 - c0);
        const Grouping gk = point_grouping(c.arch, sp.name);
        if (o.groups && l >= 0 && gk != Grouping::None) {
          const HeadGroups& g = (*o.groups)[size_t(l)];
          Grouped& gr = grouped_[{l, sp.name}];
          gr.index = grouped_scale_index(c, g, gk);
          gr.shape = grouped_scale_shape(c, g, gk);
          gr.amax.assign(size_t(numel(gr.shape)), 0.f);
          // the point's percentile, block by block: with --grouped-percentile, or where a
          // --scale-override gives this point an alpha (honoured here as on an ungrouped point;
          // otherwise each block takes its max)
          const auto pa = opt_.point_alpha.find({l, sp.name});
          if (pa != opt_.point_alpha.end() || (o.grouped_percentile && r.percentile(sp)))
            for (int64_t b = 0; b < numel(gr.shape); ++b)  // an upper bound per block
              gr.pct.push_back(make_percentile_observer(pa != opt_.point_alpha.end() ? pa->second : opt_.alpha, opt_.mode,
                                                        expected));
          continue;
        }
        const auto pa = opt_.point_alpha.find({l, sp.name});
        obs_[{l, sp.name}] = pa != opt_.point_alpha.end() ? make_percentile_observer(pa->second, opt_.mode, expected)
                             : r.percentile(sp)             ? make_percentile_observer(opt_.alpha, opt_.mode, expected)
                                                            : make_minmax_observer();
      }
  }

  void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int> offs) override {
    for (const auto& sp : scale_points(cfg_.arch)) {
      if (point != sp.tap || sp.head != (layer < 0)) continue;
      if (auto git = grouped_.find({layer, sp.name}); git != grouped_.end()) {  // a running max per block
        Grouped& gr = git->second;
        const auto [c0, c1] = point == "ssm_state" ? std::pair{0, cols} : col_range(cfg_, sp.cols, cols);
        MQ_ASSERT(size_t(c1 - c0) == gr.index.size());
        if (!gr.pct.empty()) {  // each packed sequence is one sample of every block's observer
          std::vector<std::vector<float>> blk(gr.pct.size());
          const std::vector<int> one{0, rows};
          const std::span<const int> so = point == "ssm_state" ? std::span<const int>(one) : offs;
          for (size_t s = 0; s + 1 < so.size(); ++s) {
            for (auto& v : blk) v.clear();
            for (int r = so[s]; r < so[s + 1]; ++r)
              for (int ci = c0; ci < c1; ++ci) blk[size_t(gr.index[size_t(ci - c0)])].push_back(data[size_t(r) * cols + ci]);
            for (size_t b = 0; b < blk.size(); ++b)
              if (!blk[b].empty()) gr.pct[b]->observe(blk[b].data(), blk[b].size());
          }
          continue;
        }
        for (int r = 0; r < rows; ++r)
          for (int ci = c0; ci < c1; ++ci) {
            float& m = gr.amax[size_t(gr.index[size_t(ci - c0)])];
            m = std::max(m, std::fabs(data[size_t(r) * cols + ci]));
          }
        continue;
      }
      Observer* o = obs_.at({layer, sp.name}).get();
      if (point == "ssm_state") {  // a sequence's SSM state after the forward pass: one sample each
        o->observe(data, size_t(rows) * size_t(cols));
        continue;
      }
      const auto [c0, c1] = col_range(cfg_, sp.cols, cols);
      observe_rows(o, data, cols, c0, c1, sp.hadamard, offs);
    }
  }

  Calibration result() const {
    Calibration c;
    c.alpha = opt_.alpha;
    c.mode = opt_.mode;
    for (const auto& [k, o] : obs_) {
      c.points.push_back({k.first, k.second, o->kind(), o->amax(), o->scale(8)});
      if (const ClipHistogram* h = o->clipping()) c.clipping.push_back({k.first, k.second, h->stats(o->amax())});
    }
    for (const auto& [k, g] : grouped_) {
      PointScale p{k.first, k.second, g.pct.empty() ? "grouped-minmax" : "grouped-percentile", 0.f, 0.f, g.shape, {}};
      std::vector<float> amax = g.amax;
      for (size_t b = 0; b < g.pct.size(); ++b) amax[b] = g.pct[b]->amax();
      for (float a : amax) {
        const float m = std::max(a, 1e-5f);  // as the reference's observers: a block never seen nonzero
        p.values.push_back(m / 127.f);
        p.amax = std::max(p.amax, m);
      }
      p.scale = p.amax / 127.f;  // the largest: for summaries
      c.points.push_back(std::move(p));
    }
    std::sort(c.points.begin(), c.points.end(),
              [](const PointScale& a, const PointScale& b) { return std::tie(a.layer, a.point) < std::tie(b.layer, b.point); });
    return c;
  }

 private:
  const ModelConfig& cfg_;
  const CalibOptions& opt_;
  std::map<std::pair<int, std::string>, std::unique_ptr<Observer>> obs_;
  struct Grouped {
    std::vector<int> index;  // column (state element) -> block
    std::vector<int64_t> shape;
    std::vector<float> amax;                    // min-max: the running max per block
    std::vector<std::unique_ptr<Observer>> pct;  // or a percentile observer per block
  };
  std::map<std::pair<int, std::string>, Grouped> grouped_;
  std::vector<float> buf_;

  // Each sequence of the packed batch is one calibration sample.
  void observe_rows(Observer* o, const float* data, int ld, int c0, int c1, bool hadamard, std::span<const int> offs) {
    const int w = c1 - c0;
    for (size_t s = 0; s + 1 < offs.size(); ++s) {
      const int r0 = offs[s], r1 = offs[s + 1];
      buf_.resize(size_t(r1 - r0) * size_t(w));
      for (int r = r0; r < r1; ++r)
        std::copy_n(data + size_t(r) * ld + c0, w, buf_.data() + size_t(r - r0) * w);
      if (hadamard) hadamard_transform(buf_.data(), r1 - r0, w, w);
      o->observe(buf_.data(), buf_.size());
    }
  }
};

}  // namespace

Calibration calibrate(const Model& m, const CalibSamples& cs, const CalibOptions& opt) {
  const auto& c = m.config();
  if (!hadamard_supported(c.d_inner))
    fail("calibration: d_inner {} has no Hadamard transform (needs m * 2^k, m in 1, 12, 20, 28, 40)", c.d_inner);
  size_t total = 0;
  for (const auto& s : cs.samples) total += s.size();
  CalibTap calib_tap(c, opt, total, cs.samples.size());
  TapPair tap(&calib_tap, opt.extra);
  Progress bar("calibration", int64_t(cs.samples.size()), opt.progress);
  Session S(m, {.backend = opt.backend, .mode = ExecMode::FP32});
  for (size_t s0 = 0; s0 < cs.samples.size();) {
    std::vector<int32_t> toks;
    std::vector<int> lens;
    size_t s1 = s0;
    while (s1 < cs.samples.size() && (s1 == s0 || toks.size() + cs.samples[s1].size() <= size_t(opt.batch_tokens))) {
      toks.insert(toks.end(), cs.samples[s1].begin(), cs.samples[s1].end());
      lens.push_back(int(cs.samples[s1].size()));
      ++s1;
    }
    std::vector<SeqState> states;  // with states, the forward pass taps each sample's final SSM state
    for (size_t i = s0; i < s1; ++i) states.push_back(S.new_state());
    std::vector<SeqState*> sp;
    for (auto& st : states) sp.push_back(&st);
    S.forward(toks, lens, sp.data(), nullptr, &tap);
    bar.add(int64_t(s1 - s0));
    s0 = s1;
  }
  bar.finish();
  Calibration res = calib_tap.result();
  res.samples = cs.samples.size();
  if (opt.verbose)
    for (const auto& p : res.points) {
      const auto pa = opt.point_alpha.find({p.layer, p.point});
      const double a = pa != opt.point_alpha.end() ? pa->second : p.observer == "percentile" ? opt.alpha : 1.0;
      std::string clip;
      for (const auto& cl : res.clipping)
        if (cl.layer == p.layer && cl.point == p.point)
          clip = fmt::format("  raw max {:.6g}, clipped {:.4f}%", cl.stats.raw_max, 100 * cl.stats.share_clipped);
      fmt::print(stderr, "calib layer {:>3} {:<22} {:<10} alpha {:<8} max {:.6g} scale {:.6g}{}\n", p.layer, p.point,
                 p.observer, a, p.amax, p.scale, clip);
    }
  return res;
}

}  // namespace mambaq
