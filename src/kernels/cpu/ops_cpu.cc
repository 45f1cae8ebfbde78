// Fast CPU kernels: OpenMP threads over (sequence, channel block), SIMD over channels.
// Reductions run in a fixed order per output element, so results do not depend on the
// thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vmath.h"
#include "kernels/hadamard.h"
#include "mambaq/error.h"

namespace mambaq::MAMBAQ_CPU_NS {

void rmsnorm(const float* x, const float* w, float* out, int T, int d, float eps) {
#pragma omp parallel for schedule(static) if (T > 4)
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * d;
    float* o = out + size_t(t) * d;
    float ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < d; ++i) ss += xr[i] * xr[i];
    const float r = 1.0f / std::sqrt(ss / float(d) + eps);
#pragma omp simd
    for (int i = 0; i < d; ++i) o[i] = xr[i] * r * w[i];
  }
}

void layernorm(const float* x, const float* w, const float* b, float* out, int T, int d, float eps) {
#pragma omp parallel for schedule(static) if (T > 4)
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * d;
    float* o = out + size_t(t) * d;
    float sum = 0, ss = 0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < d; ++i) sum += xr[i];
    const float mean = sum / float(d);
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < d; ++i) ss += (xr[i] - mean) * (xr[i] - mean);  // two passes: no cancellation
    const float r = 1.0f / std::sqrt(ss / float(d) + eps);
#pragma omp simd
    for (int i = 0; i < d; ++i) o[i] = (xr[i] - mean) * r * w[i] + b[i];
  }
}

namespace {
constexpr int kBlock = 64;  // channels per work item
}

void conv1d_silu(int nseq, const int* offs, const float* x, int ldx, int C, int K, const float* w, const float* b,
                 float* const* states, float* out, int ldo) {
  MQ_ASSERT(K >= 1 && K <= 8);
  const int nblk = (C + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) schedule(static)
  for (int s = 0; s < nseq; ++s)
    for (int blk = 0; blk < nblk; ++blk) {
      const int c0 = blk * kBlock, nc = std::min(C, c0 + kBlock) - c0;
      const int T = offs[s + 1] - offs[s];
      const float* xs = x + size_t(offs[s]) * ldx + c0;
      float* os = out + size_t(offs[s]) * ldo + c0;
      float* st = states ? states[s] : nullptr;
      // head {K-1, nc}: the carried inputs before the sequence (zeros without a state)
      float head[8][kBlock] = {};
      if (st)
        for (int k = 0; k < K - 1; ++k)
          for (int j = 0; j < nc; ++j) head[k][j] = st[size_t(k) * C + c0 + j];
      float wt[8][kBlock], bias[kBlock];
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < nc; ++j) wt[k][j] = w[size_t(c0 + j) * K + k];
      for (int j = 0; j < nc; ++j) bias[j] = b ? b[c0 + j] : 0.f;
      for (int t = 0; t < T; ++t) {
        float acc[kBlock];
        for (int j = 0; j < nc; ++j) acc[j] = bias[j];
        for (int k = 0; k < K; ++k) {
          const int src = t - (K - 1) + k;  // input row feeding tap k
          const float* xr = src >= 0 ? xs + size_t(src) * ldx : head[K - 1 + src];
          const float* wk = wt[k];
#pragma omp simd
          for (int j = 0; j < nc; ++j) acc[j] += wk[j] * xr[j];
        }
        float* o = os + size_t(t) * ldo;
#pragma omp simd
        for (int j = 0; j < nc; ++j) o[j] = fast_silu(acc[j]);
      }
      if (st) {  // new state: the last K-1 inputs of (state ++ x)
        for (int k = 0; k < K - 1; ++k) {
          const int src = T - (K - 1) + k;
          const float* xr = src >= 0 ? xs + size_t(src) * ldx : head[K - 1 + src];  // never aliases st
          std::copy_n(xr, nc, st + size_t(k) * C + c0);
        }
      }
    }
}

void selective_scan(int nseq, const int* offs, int D, int N, const float* u, int ldu, const float* delta, int ldd,
                    const float* delta_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                    const float* Dskip, const float* z, int ldz, float* const* states, float* y, int ldy) {
  constexpr int L = 16;  // channels per vector block; state kept as h[n][lane]
  MQ_ASSERT(D % L == 0 && N <= 256);
  const int nblk = D / L;
#pragma omp parallel for collapse(2) schedule(static)
  for (int s = 0; s < nseq; ++s)
    for (int blk = 0; blk < nblk; ++blk) {
      const int d0 = blk * L;
      const int t0 = offs[s], T = offs[s + 1] - offs[s];
      float* st = states ? states[s] : nullptr;
      std::vector<float> hbuf(size_t(N) * L), abuf(size_t(N) * L);
      float* h = hbuf.data();
      float* An = abuf.data();
      for (int n = 0; n < N; ++n)
        for (int j = 0; j < L; ++j) {
          h[n * L + j] = st ? st[size_t(d0 + j) * N + n] : 0.f;
          An[n * L + j] = A[size_t(d0 + j) * N + n];
        }
      float bias[L], dsk[L];
      for (int j = 0; j < L; ++j) {
        bias[j] = delta_bias ? delta_bias[d0 + j] : 0.f;
        dsk[j] = Dskip ? Dskip[d0 + j] : 0.f;
      }
      for (int t = t0; t < t0 + T; ++t) {
        float dt[L], uu[L], dtu[L], acc[L];
        const float* dr = delta + size_t(t) * ldd + d0;
        const float* ur = u + size_t(t) * ldu + d0;
#pragma omp simd
        for (int j = 0; j < L; ++j) {
          dt[j] = softplus(dr[j] + bias[j]);
          uu[j] = ur[j];
          dtu[j] = dt[j] * uu[j];
          acc[j] = 0.f;
        }
        const float* Br = B + size_t(t) * ldb;
        const float* Cr = C + size_t(t) * ldc;
        for (int n = 0; n < N; ++n) {
          const float bn = Br[n], cn = Cr[n];
          float* hn = h + n * L;
          const float* an = An + n * L;
#pragma omp simd
          for (int j = 0; j < L; ++j) {
            hn[j] = fast_exp(dt[j] * an[j]) * hn[j] + dtu[j] * bn;
            acc[j] += hn[j] * cn;
          }
        }
        float* yr = y + size_t(t) * ldy + d0;
        const float* zr = z ? z + size_t(t) * ldz + d0 : nullptr;
#pragma omp simd
        for (int j = 0; j < L; ++j) {
          float o = acc[j] + dsk[j] * uu[j];
          if (zr) o *= fast_silu(zr[j]);
          yr[j] = o;
        }
      }
      if (st)
        for (int n = 0; n < N; ++n)
          for (int j = 0; j < L; ++j) st[size_t(d0 + j) * N + n] = h[n * L + j];
    }
}

void ssd_scan(int nseq, const int* offs, int H, int P, int G, int N, const float* x, int ldx, const float* dt,
              int lddt, const float* dt_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
              const float* Dskip, float* const* states, float* y, int ldy) {
  constexpr int kMaxHeadDim = 512;
  MQ_ASSERT(P <= kMaxHeadDim && G > 0 && H % G == 0);
  const int hpg = H / G;
#pragma omp parallel for collapse(2) schedule(static)
  for (int s = 0; s < nseq; ++s)
    for (int hd = 0; hd < H; ++hd) {
      const int g = hd / hpg;
      const int t0 = offs[s], T = offs[s + 1] - offs[s];
      float* st = states && states[s] ? states[s] + size_t(hd) * N * P : nullptr;
      // state {N, P} of this head: updated in place when carried, else a zeroed local buffer
      std::vector<float> local(st ? 0 : size_t(N) * P, 0.f);
      float* h = st ? st : local.data();
      float acc[kMaxHeadDim], dx[kMaxHeadDim];
      const float Ah = A[hd], Dh = Dskip[hd], bh = dt_bias[hd];
      for (int t = t0; t < t0 + T; ++t) {
        const float d = softplus(dt[size_t(t) * lddt + hd] + bh);
        const float dA = std::exp(d * Ah);
        const float* xr = x + size_t(t) * ldx + size_t(hd) * P;
        const float* Br = B + size_t(t) * ldb + size_t(g) * N;
        const float* Cr = C + size_t(t) * ldc + size_t(g) * N;
#pragma omp simd
        for (int p = 0; p < P; ++p) {
          dx[p] = d * xr[p];
          acc[p] = 0.f;
        }
        for (int n = 0; n < N; ++n) {
          const float bn = Br[n], cn = Cr[n];
          float* hn = h + size_t(n) * P;
#pragma omp simd
          for (int p = 0; p < P; ++p) {
            hn[p] = dA * hn[p] + dx[p] * bn;
            acc[p] += hn[p] * cn;
          }
        }
        float* yr = y + size_t(t) * ldy + size_t(hd) * P;
#pragma omp simd
        for (int p = 0; p < P; ++p) yr[p] = acc[p] + Dh * xr[p];
      }
    }
}

void gated_rmsnorm(float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
                   bool norm_before_gate) {
#pragma omp parallel for schedule(static) if (T > 4)
  for (int t = 0; t < T; ++t) {
    float* yr = y + size_t(t) * D;
    const float* zr = z + size_t(t) * ldz;
    if (!norm_before_gate) {
#pragma omp simd
      for (int i = 0; i < D; ++i) yr[i] *= fast_silu(zr[i]);
    }
    for (int g0 = 0; g0 < D; g0 += group) {
      float ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int i = g0; i < g0 + group; ++i) ss += yr[i] * yr[i];
      const float r = 1.0f / std::sqrt(ss / float(group) + eps);
      if (norm_before_gate) {
#pragma omp simd
        for (int i = g0; i < g0 + group; ++i) yr[i] = yr[i] * r * w[i] * fast_silu(zr[i]);
      } else {
#pragma omp simd
        for (int i = g0; i < g0 + group; ++i) yr[i] = yr[i] * r * w[i];
      }
    }
  }
}

void log_softmax_at(const float* l, int V, int target, double* logprob, int* argmax) {
  float mx = l[0];
#pragma omp simd reduction(max : mx)
  for (int v = 0; v < V; ++v) mx = std::max(mx, l[v]);
  int arg = 0;
  while (l[arg] != mx) ++arg;  // first index of the maximum, as the reference
  double se = 0;  // fp32 exponentials, fp64 accumulation
#pragma omp simd reduction(+ : se)
  for (int v = 0; v < V; ++v) se += double(fast_exp(l[v] - mx));
  *logprob = double(l[target]) - mx - std::log(se);
  *argmax = arg;
}

void hadamard(float* x, int rows, int n, int ld, bool transpose) { hadamard_transform(x, rows, n, ld, transpose); }

}  // namespace mambaq::MAMBAQ_CPU_NS
