#include "quant/head_groups.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "mambaq/error.h"
#include "mambaq/progress.h"
#include "mambaq/session.h"

namespace mambaq {

std::vector<int> ward_clusters(const std::vector<double>& pts, int n, int d, int k) {
  MQ_ASSERT(k >= 1 && n >= k && pts.size() == size_t(n) * d);
  struct Cluster {
    std::vector<double> c;  // centroid
    int size, first;
    std::vector<int> members;
  };
  std::vector<Cluster> cl;
  for (int i = 0; i < n; ++i)
    cl.push_back({std::vector<double>(pts.begin() + std::ptrdiff_t(i) * d, pts.begin() + std::ptrdiff_t(i + 1) * d), 1, i, {i}});
  while (int(cl.size()) > k) {
    // the merge that increases the within-cluster sum of squares least:
    // |A||B| / (|A| + |B|) * ||c_A - c_B||^2; clusters are kept in order of their first point, so
    // the first strict minimum found is the tie-break by lowest indices
    size_t ba = 0, bb = 1;
    double best = INFINITY;
    for (size_t a = 0; a < cl.size(); ++a)
      for (size_t b = a + 1; b < cl.size(); ++b) {
        double s = 0;
        for (int j = 0; j < d; ++j) s += (cl[a].c[size_t(j)] - cl[b].c[size_t(j)]) * (cl[a].c[size_t(j)] - cl[b].c[size_t(j)]);
        const double inc = double(cl[a].size) * cl[b].size / double(cl[a].size + cl[b].size) * s;
        if (inc < best) best = inc, ba = a, bb = b;
      }
    Cluster& A = cl[ba];
    const Cluster& B = cl[bb];
    for (int j = 0; j < d; ++j)
      A.c[size_t(j)] = (A.c[size_t(j)] * A.size + B.c[size_t(j)] * B.size) / double(A.size + B.size);
    A.size += B.size;
    A.members.insert(A.members.end(), B.members.begin(), B.members.end());
    cl.erase(cl.begin() + std::ptrdiff_t(bb));  // A's first point is the lower: the order holds
  }
  std::vector<int> labels(static_cast<size_t>(n));
  for (size_t c = 0; c < cl.size(); ++c)
    for (int i : cl[c].members) labels[size_t(i)] = int(c);
  return labels;
}

std::vector<int> kmeans(const std::vector<double>& pts, int n, int d, std::vector<double> centres, int k) {
  MQ_ASSERT(centres.size() == size_t(k) * d && pts.size() == size_t(n) * d);
  std::vector<int> labels(size_t(n), -1);
  for (int it = 0; it < 300; ++it) {
    bool changed = false;
    for (int i = 0; i < n; ++i) {
      int best = 0;
      double bd = INFINITY;
      for (int c = 0; c < k; ++c) {
        double s = 0;
        for (int j = 0; j < d; ++j) {
          const double v = pts[size_t(i) * d + j] - centres[size_t(c) * d + j];
          s += v * v;
        }
        if (s < bd) bd = s, best = c;  // ties: the lower centre
      }
      changed |= labels[size_t(i)] != best;
      labels[size_t(i)] = best;
    }
    if (!changed) break;
    for (int c = 0; c < k; ++c) {  // an empty cluster keeps its centre
      std::vector<double> m(size_t(d), 0.0);
      int cnt = 0;
      for (int i = 0; i < n; ++i)
        if (labels[size_t(i)] == c) {
          ++cnt;
          for (int j = 0; j < d; ++j) m[size_t(j)] += pts[size_t(i) * d + j];
        }
      if (cnt)
        for (int j = 0; j < d; ++j) centres[size_t(c) * d + j] = m[size_t(j)] / cnt;
    }
  }
  return labels;
}

HeadOrder group_heads(const ModelConfig& cfg, const std::vector<float>& stat, int nhg, int ndg) {
  const int G = cfg.ngroups, H = cfg.nheads, Hg = H / G, P = cfg.headdim;
  MQ_ASSERT(int(stat.size()) == H * P && H % G == 0);
  nhg = std::min(nhg, Hg);
  ndg = std::min(ndg, P);
  // each head's channels sorted by the statistic, and its normalised sorted profile
  std::vector<std::vector<int>> sorted(static_cast<size_t>(H));
  std::vector<double> prof(size_t(H) * P);
  for (int h = 0; h < H; ++h) {
    auto& idx = sorted[size_t(h)];
    idx.resize(size_t(P));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return stat[size_t(h * P + a)] < stat[size_t(h * P + b)]; });
    double nrm = 0;
    for (int p = 0; p < P; ++p) nrm += double(stat[size_t(h * P + idx[size_t(p)])]) * stat[size_t(h * P + idx[size_t(p)])];
    nrm = std::sqrt(nrm);
    for (int p = 0; p < P; ++p) prof[size_t(h) * P + p] = nrm > 0 ? stat[size_t(h * P + idx[size_t(p)])] / nrm : 0.0;
  }
  HeadOrder o;
  o.groups.G = G, o.groups.nhg = nhg, o.groups.ndg = ndg;
  o.groups.head_end.assign(size_t(G) * nhg, 0);
  o.groups.dim_end.assign(size_t(G) * nhg * ndg, 0);
  for (int g = 0; g < G; ++g) {
    const std::vector<double> pts(prof.begin() + std::ptrdiff_t(g) * Hg * P, prof.begin() + std::ptrdiff_t(g + 1) * Hg * P);
    const auto labels = ward_clusters(pts, Hg, P, nhg);
    int end = 0;
    for (int k = 0; k < nhg; ++k) {
      std::vector<int> members;  // heads of cluster k, in their original order
      for (int h = 0; h < Hg; ++h)
        if (labels[size_t(h)] == k) members.push_back(h);
      for (int h : members) o.head.push_back(g * Hg + h);
      end += int(members.size());
      o.groups.head_end[size_t(g * nhg + k)] = end;
      // dim groups: k-means over the sorted positions, features = the members' profiles there
      const int m = int(members.size());
      std::vector<double> fp(size_t(P) * m), init(size_t(ndg) * m);
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < m; ++i) fp[size_t(p) * m + i] = prof[size_t(g * Hg + members[size_t(i)]) * P + p];
      for (int j = 0; j < ndg; ++j)
        for (int i = 0; i < m; ++i) init[size_t(j) * m + i] = fp[size_t(j * P / ndg) * m + i];
      const auto dl = kmeans(fp, P, m, init, ndg);
      bool ok = std::is_sorted(dl.begin(), dl.end());
      std::vector<int> cnt(size_t(ndg), 0);
      for (int v : dl) ++cnt[size_t(v)];
      for (int c : cnt) ok &= c > 0;
      int e = 0;
      for (int j = 0; j < ndg; ++j) {
        e = ok ? e + cnt[size_t(j)] : (j + 1) * P / ndg;
        o.groups.dim_end[size_t((g * nhg + k) * ndg + j)] = e;
      }
    }
  }
  for (int h : o.head)
    for (int p = 0; p < P; ++p) o.channel.push_back(h * P + sorted[size_t(h)][size_t(p)]);
  o.groups.channel.assign(o.channel.begin(), o.channel.end());
  o.groups.head.assign(o.head.begin(), o.head.end());
  return o;
}

namespace {
Weight permuted(const Weight& w, const std::vector<int>& rows_from, int row0, int width) {
  // rows [row0, row0 + n) of a {rows, width} tensor taken from rows row0 + rows_from[i]
  std::vector<float> v(w.data, w.data + w.size());
  for (size_t i = 0; i < rows_from.size(); ++i)
    std::copy_n(w.data + size_t(row0 + rows_from[i]) * width, width, v.data() + (size_t(row0) + i) * width);
  return Weight::from_vector(std::move(v), w.shape);
}
QTensor permuted(const QTensor& t, const std::vector<int>& rows_from, int row0) {
  MQ_ASSERT(t.f32());
  return QTensor::from_weight(permuted(t.as_weight(), rows_from, row0, t.cols()));
}
}  // namespace

void reorder_layer(const ModelConfig& cfg, const HeadOrder& o, LayerWeights& w) {
  const int di = cfg.d_inner, GN = cfg.ngroups * cfg.d_state, dm = cfg.d_model;
  // in_proj rows: z [0, di), x [di, 2 di), dt [2 di + 2 GN, + H)
  QTensor in = permuted(w.in_proj, o.channel, 0);
  in = permuted(in, o.channel, di);
  w.in_proj = permuted(in, o.head, 2 * di + 2 * GN);
  if (w.in_proj_b.data) {
    Weight b = permuted(w.in_proj_b, o.channel, 0, 1);
    b = permuted(b, o.channel, di, 1);
    w.in_proj_b = permuted(b, o.head, 2 * di + 2 * GN, 1);
  }
  w.conv_w = permuted(w.conv_w, o.channel, 0);
  if (w.conv_b.data) w.conv_b = permuted(w.conv_b, o.channel, 0, 1);
  w.A_log = permuted(w.A_log, o.head, 0, 1);
  w.D = permuted(w.D, o.head, 0, 1);
  w.dt_bias = permuted(w.dt_bias, o.head, 0, 1);
  w.gnorm = permuted(w.gnorm, o.channel, 0, 1);
  w.A.resize(size_t(w.A_log.size()));
  for (size_t k = 0; k < w.A.size(); ++k) w.A[k] = -std::exp(w.A_log.data[k]);
  // out_proj columns
  MQ_ASSERT(w.out_proj.f32());
  std::vector<float> v(size_t(w.out_proj.size()));
  const float* s = w.out_proj.f32();
  for (int r = 0; r < dm; ++r)
    for (int c = 0; c < di; ++c) v[size_t(r) * di + c] = s[size_t(r) * di + size_t(o.channel[size_t(c)])];
  w.out_proj = QTensor::from_weight(Weight::from_vector(std::move(v), w.out_proj.shape));
}

namespace {
class StatTap final : public Tap {
 public:
  StatTap(int n_layer, int di) : di_(di), stat(size_t(n_layer), std::vector<float>(size_t(di), 0.f)) {}
  void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int> offs) override {
    if (point != "xBC_conv_out" || layer < 0) return;
    auto& s = stat[size_t(layer)];
    std::vector<double> m(static_cast<size_t>(di_));
    for (size_t q = 0; q + 1 < offs.size(); ++q) {  // one sample per packed sequence
      const int r0 = offs[q], r1 = offs[q + 1];
      if (r1 == r0) continue;
      std::fill(m.begin(), m.end(), 0.0);
      for (int r = r0; r < r1; ++r)
        for (int c = 0; c < di_; ++c) m[size_t(c)] += std::fabs(data[size_t(r) * cols + c]);
      for (int c = 0; c < di_; ++c) s[size_t(c)] = std::max(s[size_t(c)], float(m[size_t(c)] / (r1 - r0)));
    }
    (void)rows;
  }
  int di_;
  std::vector<std::vector<float>> stat;
};
}  // namespace

std::vector<std::vector<float>> channel_stats(const Model& m, const std::vector<std::vector<int32_t>>& samples,
                                              bool progress) {
  const ModelConfig& c = m.config();
  StatTap tap(c.n_layer, c.d_inner);
  Progress bar("head statistics", int64_t(samples.size()), progress);
  Session S(m, {.mode = ExecMode::FP32});
  for (size_t s0 = 0; s0 < samples.size();) {
    std::vector<int32_t> toks;
    std::vector<int> lens;
    size_t s1 = s0;
    while (s1 < samples.size() && (s1 == s0 || toks.size() + samples[s1].size() <= 8192)) {
      toks.insert(toks.end(), samples[s1].begin(), samples[s1].end());
      lens.push_back(int(samples[s1].size()));
      ++s1;
    }
    S.forward(toks, lens, nullptr, nullptr, &tap);
    bar.add(int64_t(s1 - s0));
    s0 = s1;
  }
  bar.finish();
  return tap.stat;
}

}  // namespace mambaq
