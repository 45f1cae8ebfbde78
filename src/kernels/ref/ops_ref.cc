// Reference kernels: straight loops in double where it costs nothing, one sequence at a time.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/ref/ops.h"

namespace mambaq::ref {

static double silu(double x) { return x / (1.0 + std::exp(-x)); }
static double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

void rmsnorm(const float* x, const float* w, float* out, int T, int d, float eps) {
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < d; ++i) ss += double(x[size_t(t) * d + i]) * x[size_t(t) * d + i];
    const double r = 1.0 / std::sqrt(ss / d + eps);
    for (int i = 0; i < d; ++i) out[size_t(t) * d + i] = float(x[size_t(t) * d + i] * r * w[i]);
  }
}

void layernorm(const float* x, const float* w, const float* b, float* out, int T, int d, float eps) {
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * d;
    double mean = 0, var = 0;
    for (int i = 0; i < d; ++i) mean += xr[i];
    mean /= d;
    for (int i = 0; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const double r = 1.0 / std::sqrt(var / d + eps);
    for (int i = 0; i < d; ++i) out[size_t(t) * d + i] = float((xr[i] - mean) * r * w[i] + b[i]);
  }
}

// The causal conv's window {K-1+T, C}: the carried state (or zeros) followed by the inputs.
template <class V>
static std::vector<V> conv_window(const V* x, int ldx, int T, int C, int K, const V* state) {
  std::vector<V> win(size_t(K - 1 + T) * C, V(0));
  if (state)
    for (int i = 0; i < (K - 1) * C; ++i) win[size_t(i)] = state[i];
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) win[size_t(K - 1 + t) * C + c] = x[size_t(t) * ldx + c];
  return win;
}

void conv1d_silu(const float* x, int ldx, int T, int C, int K, const float* w, const float* b, float* state,
                 float* out, int ldo) {
  const std::vector<float> win = conv_window(x, ldx, T, C, K, state);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) {
      double acc = b ? b[c] : 0.0;
      for (int k = 0; k < K; ++k) acc += double(w[size_t(c) * K + k]) * win[size_t(t + k) * C + c];
      out[size_t(t) * ldo + c] = float(silu(acc));
    }
  if (state)
    for (int i = 0; i < (K - 1) * C; ++i) state[i] = win[size_t(T) * C + i];
}

void selective_scan(int T, int D, int N, const float* u, int ldu, const float* delta, int ldd,
                    const float* delta_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
                    const float* Dskip, const float* z, int ldz, float* state, float* y, int ldy) {
  std::vector<double> h(size_t(D) * N, 0.0);
  if (state)
    for (size_t i = 0; i < h.size(); ++i) h[i] = state[i];
  for (int t = 0; t < T; ++t)
    for (int d = 0; d < D; ++d) {
      const double dt = softplus(double(delta[size_t(t) * ldd + d]) + (delta_bias ? delta_bias[d] : 0.f));
      const double ut = u[size_t(t) * ldu + d];
      double acc = 0;
      for (int n = 0; n < N; ++n) {
        double& hn = h[size_t(d) * N + n];
        hn = std::exp(dt * A[size_t(d) * N + n]) * hn + dt * B[size_t(t) * ldb + n] * ut;
        acc += hn * C[size_t(t) * ldc + n];
      }
      double out = acc + (Dskip ? Dskip[d] * ut : 0.0);
      if (z) out *= silu(z[size_t(t) * ldz + d]);
      y[size_t(t) * ldy + d] = float(out);
    }
  if (state)
    for (size_t i = 0; i < h.size(); ++i) state[i] = float(h[i]);
}

void ssd_scan(int T, int H, int P, int G, int N, const float* x, int ldx, const float* dt, int lddt,
              const float* dt_bias, const float* A, const float* B, int ldb, const float* C, int ldc,
              const float* Dskip, float* state, float* y, int ldy) {
  std::vector<double> h(size_t(H) * P * N, 0.0);
  if (state)
    for (size_t i = 0; i < h.size(); ++i) h[i] = state[i];
  const int heads_per_group = H / G;
  for (int t = 0; t < T; ++t)
    for (int hd = 0; hd < H; ++hd) {
      const int g = hd / heads_per_group;
      const double d = softplus(double(dt[size_t(t) * lddt + hd]) + dt_bias[hd]);
      const double dA = std::exp(d * A[hd]);
      for (int p = 0; p < P; ++p) {
        const double xv = x[size_t(t) * ldx + size_t(hd) * P + p];
        double acc = 0;
        for (int n = 0; n < N; ++n) {
          double& hn = h[(size_t(hd) * N + n) * P + p];
          hn = dA * hn + d * B[size_t(t) * ldb + size_t(g) * N + n] * xv;
          acc += hn * C[size_t(t) * ldc + size_t(g) * N + n];
        }
        y[size_t(t) * ldy + size_t(hd) * P + p] = float(acc + Dskip[hd] * xv);
      }
    }
  if (state)
    for (size_t i = 0; i < h.size(); ++i) state[i] = float(h[i]);
}

void gated_rmsnorm(float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
                   bool norm_before_gate) {
  std::vector<double> v(static_cast<size_t>(D));
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < D; ++i) {
      v[size_t(i)] = y[size_t(t) * D + i];
      if (!norm_before_gate) v[size_t(i)] *= silu(z[size_t(t) * ldz + i]);
    }
    for (int g0 = 0; g0 < D; g0 += group) {
      double ss = 0;
      for (int i = g0; i < g0 + group; ++i) ss += v[size_t(i)] * v[size_t(i)];
      const double r = 1.0 / std::sqrt(ss / group + eps);
      for (int i = g0; i < g0 + group; ++i) {
        double o = v[size_t(i)] * r * w[i];
        if (norm_before_gate) o *= silu(z[size_t(t) * ldz + i]);
        y[size_t(t) * D + i] = float(o);
      }
    }
  }
}

void gemm(int M, int N, int K, const float* A, int lda, const float* W, const float* bias, float* C, int ldc) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; ++k) acc += double(A[size_t(m) * lda + k]) * W[size_t(n) * K + k];
      C[size_t(m) * ldc + n] = float(acc);
    }
}

void log_softmax_at(const float* logits, int V, int target, double* logprob, int* argmax) {
  int arg = 0;
  for (int v = 1; v < V; ++v)
    if (logits[v] > logits[arg]) arg = v;
  double se = 0;
  for (int v = 0; v < V; ++v) se += std::exp(double(logits[v]) - logits[arg]);
  *logprob = double(logits[target]) - logits[arg] - std::log(se);
  *argmax = arg;
}

// ---- int8 ----

static int8_t code(double v) {
  if (v != v) return 0;  // NaN: as the fast kernel (no undefined float-to-int conversion)
  return int8_t(std::clamp(std::nearbyint(v), -127.0, 127.0));  // round half to even, as torch.round
}

void quantize(const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) q[size_t(r) * ldq + c] = code(double(x[size_t(r) * ldx + c] * (1.0f / scale)));
}

void dequantize(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) x[size_t(r) * ldx + c] = float(q[size_t(r) * ldq + c]) * scale;
}

void fake_quantize(float* x, int rows, int cols, int ldx, float scale, int bits) {
  const double qmax = double((1 << (bits - 1)) - 1);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      float& v = x[size_t(r) * ldx + c];
      const double q = double(v * (1.0f / scale));
      v = q != q ? 0.f : float(std::clamp(std::nearbyint(q), -qmax, qmax)) * scale;
    }
}

void add(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

void gemm_s8(int M, int N, int K, const int8_t* A, int lda, float a_scale, const int8_t* W, const float* w_scale,
             bool w_per_row, const float* bias, float* C, int ldc) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      int64_t acc = 0;
      for (int k = 0; k < K; ++k) acc += int(A[size_t(m) * lda + k]) * int(W[size_t(n) * K + k]);
      const double s = double(a_scale) * w_scale[w_per_row ? n : 0];
      C[size_t(m) * ldc + n] = float(double(acc) * s + (bias ? bias[n] : 0.0));
    }
}

void conv1d_s8_silu(const int8_t* x, int ldx, float x_scale, int T, int C, int K, const int8_t* w, float w_scale,
                    const float* b, int8_t* state, const float* out_scale, int8_t* out, int ldo) {
  const std::vector<int8_t> win = conv_window(x, ldx, T, C, K, static_cast<const int8_t*>(state));
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c) {
      int acc = 0;
      for (int k = 0; k < K; ++k) acc += int(w[size_t(c) * K + k]) * int(win[size_t(t + k) * C + c]);
      const double v = double(acc) * x_scale * w_scale + (b ? b[c] : 0.0);
      out[size_t(t) * ldo + c] = code(silu(v) / out_scale[c]);
    }
  if (state)
    for (int i = 0; i < (K - 1) * C; ++i) state[i] = win[size_t(T) * C + i];
}

// The scans on int8 inputs: dequantize (code * scale), then the float reference scan.
static std::vector<float> deq(const int8_t* q, int T, int cols, int ld, float s) {
  std::vector<float> v(size_t(T) * cols);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < cols; ++c) v[size_t(t) * cols + c] = float(q[size_t(t) * ld + c]) * s;
  return v;
}
static std::vector<float> deq(const int8_t* q, int T, int cols, int ld, const float* s) {  // per column
  std::vector<float> v(size_t(T) * cols);
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < cols; ++c) v[size_t(t) * cols + c] = float(q[size_t(t) * ld + c]) * s[c];
  return v;
}

void selective_scan_s8(int T, int D, int N, const int8_t* u, int ldu, float su, const int8_t* delta, int ldd,
                       float sd, const float* delta_bias, const float* A, const int8_t* B, int ldb, float sB,
                       const int8_t* C, int ldc, float sC, const float* Dskip, const int8_t* z, int ldz, float sz,
                       float* state, float* y, int ldy) {
  const auto uf = deq(u, T, D, ldu, su), df = deq(delta, T, D, ldd, sd), bf = deq(B, T, N, ldb, sB),
             cf = deq(C, T, N, ldc, sC), zf = deq(z, T, D, ldz, sz);
  selective_scan(T, D, N, uf.data(), D, df.data(), D, delta_bias, A, bf.data(), N, cf.data(), N, Dskip, zf.data(), D,
                 state, y, ldy);
}

void ssd_scan_s8(int T, int H, int P, int G, int N, const int8_t* x, int ldx, const float* sx, const int8_t* dt, int lddt,
                 float sdt, const float* dt_bias, const float* A, const int8_t* B, int ldb, const float* sB, const int8_t* C,
                 int ldc, const float* sC, const float* Dskip, float* state, float* y, int ldy) {
  const auto xf = deq(x, T, H * P, ldx, sx), df = deq(dt, T, H, lddt, sdt), bf = deq(B, T, G * N, ldb, sB),
             cf = deq(C, T, G * N, ldc, sC);
  ssd_scan(T, H, P, G, N, xf.data(), H * P, df.data(), H, dt_bias, A, bf.data(), G * N, cf.data(), G * N, Dskip,
           state, y, ldy);
}

void gemm_w4(int M, int N, int K, const float* A, int lda, const uint8_t* W, const float* ws, int group,
             const float* bias, float* C, int ldc) {
  const int ng = (K + group - 1) / group;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      const uint8_t* w = W + size_t(n) * (K / 2);
      double acc = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; ++k) acc += double(A[size_t(m) * lda + k]) * s4_at(w, k) * ws[size_t(n) * ng + k / group];
      C[size_t(m) * ldc + n] = float(acc);
    }
}

void gemm_s8w4(int M, int N, int K, const int8_t* A, int lda, float a_scale, const uint8_t* W, const float* ws,
               int group, const float* bias, float* C, int ldc) {
  const int ng = (K + group - 1) / group;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      const uint8_t* w = W + size_t(n) * (K / 2);
      double acc = 0;
      for (int g = 0; g < ng; ++g) {
        int32_t dot = 0;
        for (int k = g * group; k < std::min(K, (g + 1) * group); ++k) dot += int32_t(A[size_t(m) * lda + k]) * s4_at(w, k);
        acc += double(ws[size_t(n) * ng + g]) * dot;
      }
      C[size_t(m) * ldc + n] = float(acc * a_scale + (bias ? bias[n] : 0.0));
    }
}

namespace {
template <class F>
void state_each(int H, int N, int P, int ndg, const float* scale, const int* dim_end, F f) {
  for (int h = 0; h < H; ++h)
    for (int n = 0; n < N; ++n)
      for (int p = 0; p < P; ++p) {
        int j = 0;
        while (p >= dim_end[h * ndg + j]) ++j;
        f((size_t(h) * N + n) * P + size_t(p), scale[(size_t(h) * N + n) * ndg + size_t(j)]);
      }
}
}  // namespace

void state_quantize(const float* x, int8_t* q, int H, int N, int P, int ndg, const float* scale, const int* dim_end) {
  state_each(H, N, P, ndg, scale, dim_end, [&](size_t i, float s) { quantize(x + i, 1, 1, 1, s, q + i, 1); });
}
void state_dequantize(const int8_t* q, float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end) {
  state_each(H, N, P, ndg, scale, dim_end, [&](size_t i, float s) { x[i] = float(q[i]) * s; });
}
void state_fake_quantize(float* x, int H, int N, int P, int ndg, const float* scale, const int* dim_end, int bits) {
  state_each(H, N, P, ndg, scale, dim_end, [&](size_t i, float s) { fake_quantize(x + i, 1, 1, 1, s, bits); });
}

}  // namespace mambaq::ref
