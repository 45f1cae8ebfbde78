// The `cuda` backend, first slice: device memory, a stream and a cuBLAS handle per instance, and
// the float operations of the contract (kernels/backend.h) as plain CUDA kernels — enough for the
// whole fp32 and fake-quant forward, the LM head and scoring on the GPU, and GEMMs over F16/BF16
// weights (--dtype: cuBLAS on the tensor cores, fp32 sums). int8 / 4-bit operands and 16-bit
// activations are declined through `supports` (their kernels are the CUDA issue's later items).
// The kernels here are the simple, obviously-right GPU versions (one thread walks a sequence in
// the scans; float accumulation); the tests compare each with `ref` like every other backend.
//
// Memory transfers from and to the host are synchronous (the caller may reuse its host buffer
// at once); everything else is queued on the instance's stream in order.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/hadamard.h"

namespace mambaq {

// kernels/cuda/fail.cc: a mambaq::Error with this message (fmt stays out of nvcc's way).
[[noreturn]] void cuda_fail(const std::string& message);

namespace cuda_impl {

template <class... A>
[[noreturn]] void failf(const char* f, A... a) {
  char buf[512];
  std::snprintf(buf, sizeof buf, f, a...);
  cuda_fail(buf);
}

#define MQ_CUDA(call)                                                                          \
  do {                                                                                         \
    const cudaError_t e_ = (call);                                                             \
    if (e_ != cudaSuccess) failf("cuda: %s failed: %s", #call, cudaGetErrorString(e_));       \
  } while (0)

struct Ctx {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  unsigned long long* scratch = nullptr;  // check_finite's minimum index
  std::map<int, float*> hadamard;          // the dense orthonormal H_n, by n
  float* tmp = nullptr;                    // the Hadamard's input copy
  size_t tmp_n = 0;
  void* a16 = nullptr;                     // a GEMM's activations rounded to its weights' 16-bit type
  size_t a16_bytes = 0;
  std::string name;
  ~Ctx() {
    for (auto& [n, p] : hadamard) cudaFree(p);
    if (tmp) cudaFree(tmp);
    if (a16) cudaFree(a16);
    if (scratch) cudaFree(scratch);
    if (blas) cublasDestroy(blas);
    if (stream) cudaStreamDestroy(stream);
  }
};
Ctx& C(void* ctx) { return *static_cast<Ctx*>(ctx); }
cudaStream_t S(void* ctx) { return C(ctx).stream; }
void launched() { MQ_CUDA(cudaGetLastError()); }
unsigned blocks(size_t n, unsigned t) { return unsigned((n + t - 1) / t); }

// ---- memory ----
void* c_alloc(void* ctx, size_t bytes) {
  MQ_CUDA(cudaSetDevice(C(ctx).device));
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 64);
  if (e != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    failf("cuda: out of device memory: %zu MiB asked, %zu MiB free of %zu MiB on %s", bytes >> 20, free_b >> 20,
          total_b >> 20, C(ctx).name.c_str());
  }
  return p;
}
void c_free(void*, void* p) { cudaFree(p); }
void c_upload(void* ctx, void* dst, const void* src, size_t n) {
  if (!n) return;
  MQ_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, S(ctx)));
  MQ_CUDA(cudaStreamSynchronize(S(ctx)));
}
void c_download(void* ctx, void* dst, const void* src, size_t n) {
  if (!n) return;
  MQ_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, S(ctx)));
  MQ_CUDA(cudaStreamSynchronize(S(ctx)));
}
void c_copy(void* ctx, void* dst, const void* src, size_t n) {
  if (n) MQ_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, S(ctx)));
}
void c_copy2d(void* ctx, void* dst, size_t ldd, const void* src, size_t lds, size_t rb, size_t rows) {
  if (rb && rows) MQ_CUDA(cudaMemcpy2DAsync(dst, ldd, src, lds, rb, rows, cudaMemcpyDeviceToDevice, S(ctx)));
}
void c_fill(void* ctx, void* dst, int byte, size_t n) {
  if (n) MQ_CUDA(cudaMemsetAsync(dst, byte, n, S(ctx)));
}
void c_sync(void* ctx) { MQ_CUDA(cudaStreamSynchronize(S(ctx))); }
bool c_supports(void*, Op op, OpFormats f) {
  const bool w = f.weight == WFormat::F32 || (op == Op::Gemm && (f.weight == WFormat::F16 || f.weight == WFormat::BF16));
  return f.act == DType::F32 && w && f.state == DType::F32;
}

// ---- device math ----
__device__ inline float silu_f(float x) { return x / (1.f + expf(-x)); }
__device__ inline float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// Block-wide sum (blockDim.x a multiple of 32, at most 1024).
__device__ inline float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x >> 5) ? part[lane] : 0.f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) part[0] = v;
  __syncthreads();
  const float r = part[0];
  __syncthreads();
  return r;
}

// ---- norms ----
__global__ void k_rmsnorm(const float* x, const float* w, float* out, int d, float eps) {
  const float* xr = x + size_t(blockIdx.x) * d;
  float ss = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  const float r = rsqrtf(block_sum(ss) / d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) out[size_t(blockIdx.x) * d + i] = xr[i] * r * w[i];
}
void c_rmsnorm(void* ctx, const float* x, const float* w, float* out, int T, int d, float eps) {
  if (T == 0) return;
  k_rmsnorm<<<T, 256, 0, S(ctx)>>>(x, w, out, d, eps);
  launched();
}
__global__ void k_layernorm(const float* x, const float* w, const float* b, float* out, int d, float eps) {
  const float* xr = x + size_t(blockIdx.x) * d;
  float s = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) s += xr[i];
  const float mean = block_sum(s) / d;
  float v = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const float r = rsqrtf(block_sum(v) / d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) out[size_t(blockIdx.x) * d + i] = (xr[i] - mean) * r * w[i] + b[i];
}
void c_layernorm(void* ctx, const float* x, const float* w, const float* b, float* out, int T, int d, float eps) {
  if (T == 0) return;
  k_layernorm<<<T, 256, 0, S(ctx)>>>(x, w, b, out, d, eps);
  launched();
}
// one block per (row, group)
__global__ void k_gated(float* y, const float* z, int ldz, const float* w, int D, int group, float eps, bool nbg) {
  const int t = blockIdx.x, g0 = blockIdx.y * group;
  float* yr = y + size_t(t) * D;
  const float* zr = z + size_t(t) * ldz;
  float ss = 0;
  for (int i = g0 + threadIdx.x; i < g0 + group; i += blockDim.x) {
    const float v = nbg ? yr[i] : yr[i] * silu_f(zr[i]);
    ss += v * v;
  }
  const float r = rsqrtf(block_sum(ss) / group + eps);
  for (int i = g0 + threadIdx.x; i < g0 + group; i += blockDim.x) {
    const float v = nbg ? yr[i] : yr[i] * silu_f(zr[i]);
    float o = v * r * w[i];
    if (nbg) o *= silu_f(zr[i]);
    yr[i] = o;
  }
}
void c_gated(void* ctx, float* y, const float* z, int ldz, const float* w, int T, int D, int group, float eps,
             bool nbg) {
  if (T == 0) return;
  k_gated<<<dim3(unsigned(T), unsigned(D / group)), 256, 0, S(ctx)>>>(y, z, ldz, w, D, group, eps, nbg);
  launched();
}

// ---- conv1d + SiLU over packed sequences: one thread per (token, channel), then the states ----
// out[t, c] = silu(bias[c] + sum_j w[c, j] in(t - (K-1) + j)), where in(tau) is x[tau] inside the
// token's sequence and the carried state before it (state row i holds the input K-1-i steps back).
// Every output reads the old state, so the states move in a second kernel: thread (s, c) gathers
// its K-1 new values (the last K-1 inputs of state ++ x) into registers, then writes them.
constexpr int kConvMax = 9;
__device__ inline int seq_of(int t, const int* offs, int nseq) {  // the s with offs[s] <= t < offs[s+1]
  int lo = 0, hi = nseq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offs[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}
__device__ inline float conv_in(int tau, int t0, const float* x, int ldx, const float* st, int C, int K, int c) {
  if (tau >= t0) return x[size_t(tau) * ldx + c];
  const int i = (K - 1) + (tau - t0);  // 0 .. K-2 within the state
  return st ? st[size_t(i) * C + c] : 0.f;
}
__global__ void k_conv(int nseq, int T, const int* __restrict__ offs, const float* __restrict__ x, int ldx, int C, int K,
                       const float* __restrict__ w, const float* __restrict__ bias, float* const* states,
                       float* __restrict__ out, int ldo) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float wr[kConvMax];
#pragma unroll
  for (int j = 0; j < kConvMax; ++j) wr[j] = j < K ? w[size_t(c) * K + j] : 0.f;
  const float b = bias ? bias[c] : 0.f;
  for (int t = blockIdx.y; t < T; t += gridDim.y) {
    const int s = seq_of(t, offs, nseq), t0 = offs[s];
    const float* st = states ? states[s] : nullptr;
    float acc = b;
#pragma unroll
    for (int j = 0; j < kConvMax; ++j)
      if (j < K) acc += wr[j] * conv_in(t - (K - 1) + j, t0, x, ldx, st, C, K, c);
    out[size_t(t) * ldo + c] = silu_f(acc);
  }
}
__global__ void k_conv_state(int nseq, const int* __restrict__ offs, const float* __restrict__ x, int ldx, int C, int K,
                             float* const* states) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (c >= C || s >= nseq || !states[s]) return;
  float* st = states[s];
  const int t0 = offs[s], t1 = offs[s + 1];
  float nw[kConvMax - 1];
#pragma unroll
  for (int i = 0; i < kConvMax - 1; ++i)
    if (i < K - 1) nw[i] = conv_in(t1 - (K - 1) + i, t0, x, ldx, st, C, K, c);
#pragma unroll
  for (int i = 0; i < kConvMax - 1; ++i)
    if (i < K - 1) st[size_t(i) * C + c] = nw[i];
}
void c_conv(void* ctx, const ConvArgs& a) {
  if (a.x.dtype != DType::F32 || a.w.format != WFormat::F32) cuda_fail("cuda: conv1d_silu on int8 operands is not built yet");
  if (a.K > kConvMax) failf("cuda: conv1d_silu with d_conv %d (at most %d)", a.K, kConvMax);
  const int T = a.b.nseq ? a.b.rows() : 0;
  if (T == 0) return;
  auto* st = reinterpret_cast<float* const*>(a.st.seq ? a.st.seq_dev : nullptr);
  k_conv<<<dim3(blocks(size_t(a.C), 128), unsigned(std::min(T, 65535))), 128, 0, S(ctx)>>>(
      a.b.nseq, T, a.b.offs_dev, a.x.f(), a.x.ld, a.C, a.K, a.w.f(), a.bias, st, static_cast<float*>(a.out), a.ldo);
  launched();
  if (st && a.K > 1) {
    k_conv_state<<<dim3(blocks(size_t(a.C), 128), unsigned(a.b.nseq)), 128, 0, S(ctx)>>>(a.b.nseq, a.b.offs_dev, a.x.f(),
                                                                                        a.x.ld, a.C, a.K, st);
    launched();
  }
}

// ---- The scans: 16 lanes per output channel, each holding NS of its N states in registers ----
// One thread walking T with all N states (the first slice) had few threads (D per sequence) and its
// state array, indexed in a loop of run-time length, lived in local memory. Here a group of 16
// lanes of one warp shares a channel: lane l holds the states n = l + 16 j (j < NS, fully unrolled,
// so in registers), and the channel's output sum over n is a 4-step butterfly of shuffles within
// the 16 lanes. That is 16x the threads, and loads of B and C rows coalesce across the lanes.
// Order of the sum over n: lane partials in j order, then the butterfly (not ref's n order; the
// tests' bound, 2e-5 relative, covers it). Still sequential in t within a sequence: the parallel
// chunked forms are the next step (issue 20).
constexpr int kScanLanes = 16;
// The mask names only this group's 16 lanes: the warp's other group may have left (past D).
__device__ inline float lanes_sum(float v) {
  const unsigned mask = 0xffffu << (threadIdx.x & 16u);
#pragma unroll
  for (int o = kScanLanes / 2; o > 0; o /= 2) v += __shfl_xor_sync(mask, v, o, kScanLanes);
  return v;
}

// Mamba1: y[t, d] = sum_n C[t, n] h[d, n] (+ Dskip[d] u[t, d]) (* silu(z[t, d])), with
// h[d, n] = exp(dt A[d, n]) h[d, n] + dt B[t, n] u[t, d], dt = softplus(delta[t, d] + bias[d]).
template <int NS>
__global__ void k_scan(int nseq, const int* __restrict__ offs, int D, int N, const float* __restrict__ u, int ldu,
                       const float* __restrict__ delta, int ldd, const float* __restrict__ dbias,
                       const float* __restrict__ A, const float* __restrict__ B, int ldb, const float* __restrict__ Cm,
                       int ldc, const float* __restrict__ Dskip, const float* __restrict__ z, int ldz,
                       float* const* states, float* __restrict__ y, int ldy) {
  const int lane = threadIdx.x % kScanLanes, s = blockIdx.y;
  const int d = (blockIdx.x * blockDim.x + threadIdx.x) / kScanLanes;
  if (d >= D || s >= nseq) return;  // whole 16-lane groups leave together
  float h[NS], a[NS];
  float* st = states ? states[s] : nullptr;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const int n = lane + kScanLanes * j;
    a[j] = n < N ? A[size_t(d) * N + n] : 0.f;
    h[j] = (st && n < N) ? st[size_t(d) * N + n] : 0.f;
  }
  const float bias = dbias ? dbias[d] : 0.f, dsk = Dskip ? Dskip[d] : 0.f;
  const int t1 = offs[s + 1];
  for (int t = offs[s]; t < t1; ++t) {
    const float dt = softplus_f(delta[size_t(t) * ldd + d] + bias);
    const float ut = u[size_t(t) * ldu + d], dtu = dt * ut;
    float acc = 0;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = lane + kScanLanes * j;
      if (n < N) {
        h[j] = expf(dt * a[j]) * h[j] + dtu * B[size_t(t) * ldb + n];
        acc += h[j] * Cm[size_t(t) * ldc + n];
      }
    }
    acc = lanes_sum(acc);
    if (lane == 0) {
      float o = acc + dsk * ut;
      if (z) o *= silu_f(z[size_t(t) * ldz + d]);
      y[size_t(t) * ldy + d] = o;
    }
  }
  if (st)
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = lane + kScanLanes * j;
      if (n < N) st[size_t(d) * N + n] = h[j];
    }
}
void c_scan(void* ctx, const ScanArgs& a) {
  if (a.u.dtype != DType::F32) cuda_fail("cuda: selective_scan on int8 operands is not built yet");
  if (a.N > 64) failf("cuda: selective_scan with d_state %d (at most 64)", a.N);
  if (a.b.nseq == 0) return;
  const int per_block = 128 / kScanLanes;  // channels per block of 128 threads
  const dim3 grid(unsigned((a.D + per_block - 1) / per_block), unsigned(a.b.nseq));
  auto* st = reinterpret_cast<float* const*>(a.st.seq ? a.st.seq_dev : nullptr);
  auto go = [&](auto kernel) {
    kernel<<<grid, 128, 0, S(ctx)>>>(a.b.nseq, a.b.offs_dev, a.D, a.N, a.u.f(), a.u.ld, a.delta.f(), a.delta.ld,
                                     a.delta_bias, a.A, a.B.f(), a.B.ld, a.C.f(), a.C.ld, a.Dskip, a.z.f(), a.z.ld, st,
                                     a.y, a.ldy);
  };
  if (a.N <= 16) go(k_scan<1>);
  else if (a.N <= 32) go(k_scan<2>);
  else go(k_scan<4>);
  launched();
}

// Mamba2 SSD, recurrent form: y[t, (h, p)] = sum_n C[t, g, n] S[h, n, p] + Dskip[h] x[t, (h, p)], with
// S[h, n, p] = exp(dt A[h]) S[h, n, p] + dt B[t, g, n] x[t, (h, p)], dt = softplus(dt[t, h] + bias[h]),
// g = h / (H / G). 16 lanes per (h, p) as above.
template <int NS>
__global__ void k_ssd(int nseq, const int* __restrict__ offs, int H, int P, int G, int N, const float* __restrict__ x,
                      int ldx, const float* __restrict__ dt, int lddt, const float* __restrict__ dbias,
                      const float* __restrict__ A, const float* __restrict__ B, int ldb, const float* __restrict__ Cm,
                      int ldc, const float* __restrict__ Dskip, float* const* states, float* __restrict__ y, int ldy) {
  const int lane = threadIdx.x % kScanLanes, s = blockIdx.y;
  const int hp = (blockIdx.x * blockDim.x + threadIdx.x) / kScanLanes;
  if (hp >= H * P || s >= nseq) return;  // whole 16-lane groups leave together
  const int hd = hp / P, p = hp % P, g = hd / (H / G);
  float h[NS];
  float* st = states ? states[s] : nullptr;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const int n = lane + kScanLanes * j;
    h[j] = (st && n < N) ? st[(size_t(hd) * N + n) * P + p] : 0.f;
  }
  const float ah = A[hd], bias = dbias[hd], dsk = Dskip[hd];
  const int t1 = offs[s + 1];
  for (int t = offs[s]; t < t1; ++t) {
    const float d = softplus_f(dt[size_t(t) * lddt + hd] + bias);
    const float dA = expf(d * ah);
    const float xv = x[size_t(t) * ldx + hp], dx = d * xv;
    const float* Bt = B + size_t(t) * ldb + size_t(g) * N;
    const float* Ct = Cm + size_t(t) * ldc + size_t(g) * N;
    float acc = 0;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = lane + kScanLanes * j;
      if (n < N) {
        h[j] = dA * h[j] + dx * Bt[n];
        acc += h[j] * Ct[n];
      }
    }
    acc = lanes_sum(acc);
    if (lane == 0) y[size_t(t) * ldy + hp] = acc + dsk * xv;
  }
  if (st)
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = lane + kScanLanes * j;
      if (n < N) st[(size_t(hd) * N + n) * P + p] = h[j];
    }
}
void c_ssd(void* ctx, const SsdArgs& a) {
  if (a.x.dtype != DType::F32 || a.st.dtype != DType::F32) cuda_fail("cuda: ssd_scan on int8 operands is not built yet");
  if (a.N > 256) failf("cuda: ssd_scan with d_state %d (at most 256)", a.N);
  if (a.b.nseq == 0) return;
  auto* st = reinterpret_cast<float* const*>(a.st.seq ? a.st.seq_dev : nullptr);
  const int per_block = 128 / kScanLanes;
  const dim3 grid(unsigned((size_t(a.H) * a.P + per_block - 1) / per_block), unsigned(a.b.nseq));
  auto go = [&](auto kernel) {
    kernel<<<grid, 128, 0, S(ctx)>>>(a.b.nseq, a.b.offs_dev, a.H, a.P, a.G, a.N, a.x.f(), a.x.ld, a.dt.f(), a.dt.ld,
                                     a.dt_bias, a.A, a.B.f(), a.B.ld, a.C.f(), a.C.ld, a.Dskip, st, a.y, a.ldy);
  };
  if (a.N <= 16) go(k_ssd<1>);
  else if (a.N <= 32) go(k_ssd<2>);
  else if (a.N <= 64) go(k_ssd<4>);
  else if (a.N <= 128) go(k_ssd<8>);
  else go(k_ssd<16>);
  launched();
}

// ---- GEMM: cuBLAS sgemm in fp32 (no TF32, so fp32 stays comparable with the CPU) ----
__global__ void k_bias(float* C, int ldc, const float* bias, int M, int N) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size_t(M) * N) C[(i / N) * ldc + i % N] += bias[i % N];
}
// A {M, K} (row stride lda) rounded to bf16 / fp16 (round to nearest even, as core/half.h), packed.
template <class H>
__global__ void k_round_half(const float* A, int lda, int M, int K, H* out) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(M) * K) return;
  const float x = A[(i / K) * lda + i % K];
  if constexpr (std::is_same_v<H, __nv_bfloat16>)
    out[i] = __float2bfloat16_rn(x);
  else
    out[i] = __float2half_rn(x);
}

// Decode-sized products (M <= kGemvRows rows): one warp per output column n reads W's row n once
// for all M rows, 16 bytes per lane per step (the product is bound by reading W: cuBLAS's
// tensor-core kernels leave most of the bandwidth unused at M = 1 and need the activations
// rounded by a separate launch). 16-bit weights: each activation rounded to the weights' type in
// registers, as the contract says; sums in float, in a fixed order (lane-strided, then the warp's
// butterfly), whatever M.
constexpr int kGemvRows = 4;
template <class W>
__device__ inline void w_to_f(const uint4& v, float* f) {
  if constexpr (std::is_same_v<W, float>) {
    f[0] = __uint_as_float(v.x), f[1] = __uint_as_float(v.y), f[2] = __uint_as_float(v.z), f[3] = __uint_as_float(v.w);
  } else {
    const W* h = reinterpret_cast<const W*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = float(h[i]);
  }
}
template <class W>
__device__ inline float round_to(float x) {
  if constexpr (std::is_same_v<W, __nv_bfloat16>)
    return __bfloat162float(__float2bfloat16_rn(x));
  else if constexpr (std::is_same_v<W, __half>)
    return __half2float(__float2half_rn(x));
  else
    return x;
}
template <class W, int M>
__global__ void k_gemv(const float* A, int lda, const W* Wt, int N, int K, const float* bias, float* C, int ldc) {
  constexpr int E = 16 / sizeof(W);  // elements per 16-byte load
  const int n = int(blockIdx.x) * (blockDim.x / 32) + int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (n >= N) return;
  const W* w = Wt + size_t(n) * K;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  for (int k = lane * E; k < K; k += 32 * E) {
    float wf[E];
    w_to_f<W>(*reinterpret_cast<const uint4*>(w + k), wf);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float* a = A + size_t(m) * lda + k;
#pragma unroll
      for (int e = 0; e < E; e += 4) {
        const float4 x = *reinterpret_cast<const float4*>(a + e);
        acc[m] = fmaf(round_to<W>(x.x), wf[e], acc[m]);
        acc[m] = fmaf(round_to<W>(x.y), wf[e + 1], acc[m]);
        acc[m] = fmaf(round_to<W>(x.z), wf[e + 2], acc[m]);
        acc[m] = fmaf(round_to<W>(x.w), wf[e + 3], acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) C[size_t(m) * ldc + n] = v + (bias ? bias[n] : 0.f);
  }
}
template <class W>
void gemv(void* ctx, const GemmArgs& a) {
  const unsigned warps = 8, grid = unsigned((a.N + warps - 1) / warps);
  const W* w = static_cast<const W*>(a.W.data);
  switch (a.M) {
    case 1: k_gemv<W, 1><<<grid, 32 * warps, 0, S(ctx)>>>(a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc); break;
    case 2: k_gemv<W, 2><<<grid, 32 * warps, 0, S(ctx)>>>(a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc); break;
    case 3: k_gemv<W, 3><<<grid, 32 * warps, 0, S(ctx)>>>(a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc); break;
    default: k_gemv<W, 4><<<grid, 32 * warps, 0, S(ctx)>>>(a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc); break;
  }
  launched();
}
// The GEMV's alignment needs: 16-byte rows of W and of A.
bool gemv_fits(const GemmArgs& a) {
  const size_t es = a.W.format == WFormat::F32 ? 4 : 2;
  return a.M <= kGemvRows && (size_t(a.K) * es) % 16 == 0 && a.A.ld % 4 == 0 && a.K % 8 == 0 &&
         reinterpret_cast<uintptr_t>(a.A.data) % 16 == 0 && reinterpret_cast<uintptr_t>(a.W.data) % 16 == 0;
}

void c_gemm(void* ctx, const GemmArgs& a) {
  const bool half = a.W.format == WFormat::F16 || a.W.format == WFormat::BF16;
  if (a.A.dtype != DType::F32 || (a.W.format != WFormat::F32 && !half))
    cuda_fail("cuda: gemm on int8 / 4-bit operands is not built yet");
  if (a.M == 0 || a.N == 0) return;
  if (gemv_fits(a)) {
    if (a.W.format == WFormat::BF16)
      return gemv<__nv_bfloat16>(ctx, a);
    else if (a.W.format == WFormat::F16)
      return gemv<__half>(ctx, a);
    else
      return gemv<float>(ctx, a);
  }
  const float one = 1.f, zero = 0.f;
  // row-major C {M, N} = A {M, K} W^T: column-major C^T {N, M} = W^T^T ... = op_T(W {K x N col-major}) * A^T
  cublasStatus_t st;
  if (half) {
    // 16-bit operands on the tensor cores, fp32 sums (the contract: C = round(A) W^T)
    Ctx& c = C(ctx);
    const size_t bytes = size_t(a.M) * a.K * 2;
    if (c.a16_bytes < bytes) {
      if (c.a16) MQ_CUDA(cudaFree(c.a16));
      c.a16 = nullptr;
      MQ_CUDA(cudaMalloc(&c.a16, bytes));
      c.a16_bytes = bytes;
    }
    const bool bf = a.W.format == WFormat::BF16;
    if (bf)
      k_round_half<<<blocks(size_t(a.M) * a.K, 256), 256, 0, S(ctx)>>>(a.A.f(), a.A.ld, a.M, a.K,
                                                                         static_cast<__nv_bfloat16*>(c.a16));
    else
      k_round_half<<<blocks(size_t(a.M) * a.K, 256), 256, 0, S(ctx)>>>(a.A.f(), a.A.ld, a.M, a.K,
                                                                         static_cast<__half*>(c.a16));
    launched();
    const cudaDataType_t t = bf ? CUDA_R_16BF : CUDA_R_16F;
    st = cublasGemmEx(c.blas, CUBLAS_OP_T, CUBLAS_OP_N, a.N, a.M, a.K, &one, a.W.data, t, a.K, c.a16, t, a.K, &zero, a.C,
                      CUDA_R_32F, a.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  } else {
    st = cublasSgemm(C(ctx).blas, CUBLAS_OP_T, CUBLAS_OP_N, a.N, a.M, a.K, &one, a.W.f(), a.K, a.A.f(), a.A.ld, &zero,
                     a.C, a.ldc);
  }
  if (st != CUBLAS_STATUS_SUCCESS) failf("cuda: cuBLAS GEMM failed (status %d) for M=%d N=%d K=%d", int(st), a.M, a.N, a.K);
  if (a.bias) {
    k_bias<<<blocks(size_t(a.M) * a.N, 256), 256, 0, S(ctx)>>>(a.C, a.ldc, a.bias, a.M, a.N);
    launched();
  }
}

__global__ void k_add(float* x, const float* y, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}
void c_add(void* ctx, float* x, const float* y, size_t n) {
  if (!n) return;
  k_add<<<blocks(n, 256), 256, 0, S(ctx)>>>(x, y, n);
  launched();
}
// The orthonormal Hadamard transform of each row as a product with the dense H_n (uploaded once
// per n from kernels/hadamard.h's definition): y = H x per row, or H^T x. O(n) per element where
// the cpu's butterflies are O(log n); a fast transform is the CUDA issue's later work.
void c_hadamard(void* ctx, float* x, int rows, int n, int ld, bool transpose) {
  if (rows == 0) return;
  Ctx& c = C(ctx);
  float*& H = c.hadamard[n];
  if (!H) {
    const std::vector<double> hd = ref::hadamard_dense(n);
    std::vector<float> hf(hd.begin(), hd.end());
    MQ_CUDA(cudaMalloc(&H, hf.size() * sizeof(float)));
    MQ_CUDA(cudaMemcpy(H, hf.data(), hf.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  const size_t need = size_t(rows) * n;
  if (c.tmp_n < need) {
    if (c.tmp) MQ_CUDA(cudaFree(c.tmp));
    MQ_CUDA(cudaMalloc(&c.tmp, need * sizeof(float)));
    c.tmp_n = need;
  }
  MQ_CUDA(cudaMemcpy2DAsync(c.tmp, sizeof(float) * n, x, sizeof(float) * ld, sizeof(float) * n, size_t(rows),
                            cudaMemcpyDeviceToDevice, c.stream));
  const float one = 1.f, zero = 0.f;
  // row-major Y {rows, n} = X H^T (y = H x), or X H (y = H^T x); column-major: Y^T = op(H) X^T, and
  // H stored row-major reads as H^T column-major, so y = H x takes op T
  const cublasStatus_t st = cublasSgemm(c.blas, transpose ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, n, rows, n, &one, H,
                                        n, c.tmp, n, &zero, x, ld);
  if (st != CUBLAS_STATUS_SUCCESS) failf("cuda: cublasSgemm (hadamard %d) failed (status %d)", n, int(st));
}

// ---- embedding gather (float rows, or S8 / S4 rows dequantized) ----
__device__ inline int s4_code(const uint8_t* row, int k) {
  const uint8_t b = row[(k / 32) * 16 + (k % 16)];
  return int((k % 32) < 16 ? (b & 15) : (b >> 4)) - 8;
}
__global__ void k_embed(int T, const int32_t* ids, const void* table, WFormat fmt, int cols, Granularity gran, int group,
                        const float* scales, float* out, int ldo) {
  const int t = blockIdx.x;
  const int64_t id = ids[t];
  const int ng = gran == Granularity::Group ? (cols + group - 1) / group : 1;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float v;
    if (fmt == WFormat::F32) {
      v = static_cast<const float*>(table)[id * cols + c];
    } else {
      const float s = gran == Granularity::Tensor ? scales[0] : gran == Granularity::Channel ? scales[id]
                                                                : scales[id * ng + c / group];
      const int q = fmt == WFormat::S8 ? int(static_cast<const int8_t*>(table)[id * cols + c])
                                       : s4_code(static_cast<const uint8_t*>(table) + id * (cols / 2), c);
      v = float(q) * s;
    }
    out[size_t(t) * ldo + c] = v;
  }
}
void c_embed(void* ctx, const EmbedArgs& a) {
  if (a.T == 0) return;
  k_embed<<<a.T, 256, 0, S(ctx)>>>(a.T, a.ids, a.table.data, a.table.format, a.table.cols, a.table.granularity,
                                   a.table.group, a.table.scales, a.out, a.ldo);
  launched();
}

// ---- scoring: per row, the first argmax and log-softmax at the target ----
__global__ void k_score(const float* logits, int V, int ld, const int32_t* targets, double* logprob, int32_t* argmax) {
  const float* r = logits + size_t(blockIdx.x) * ld;
  __shared__ float bv[256];
  __shared__ int bi[256];
  float m = -INFINITY;
  int mi = 0x7fffffff;
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    if (r[v] > m) m = r[v], mi = v;  // strided: the first maximum of this thread's elements
  bv[threadIdx.x] = m, bi[threadIdx.x] = mi;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      const float v2 = bv[threadIdx.x + o];
      const int i2 = bi[threadIdx.x + o];
      if (v2 > bv[threadIdx.x] || (v2 == bv[threadIdx.x] && i2 < bi[threadIdx.x])) bv[threadIdx.x] = v2, bi[threadIdx.x] = i2;
    }
    __syncthreads();
  }
  const float mx = bv[0];
  const int arg = bi[0];
  __shared__ double ps[256];
  double se = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) se += exp(double(r[v]) - mx);
  ps[threadIdx.x] = se;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) ps[threadIdx.x] += ps[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    logprob[blockIdx.x] = double(r[targets[blockIdx.x]]) - mx - log(ps[0]);
    argmax[blockIdx.x] = arg;
  }
}
void c_score(void* ctx, const ScoreArgs& a) {
  if (a.rows == 0) return;
  k_score<<<a.rows, 256, 0, S(ctx)>>>(a.logits, a.V, a.ld, a.targets, a.logprob, a.argmax);
  launched();
}

__global__ void k_first_nonfinite(const float* x, int64_t n, unsigned long long* first) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(x[i])) atomicMin(first, (unsigned long long)i);
}
__global__ void k_record(const float* x, const unsigned long long* first, int32_t tag, NonFinite* rec) {
  if (rec->index >= 0 || *first == ~0ull) return;
  rec->index = int64_t(*first);
  rec->tag = tag;
  rec->value = x[*first];
}
void c_finite(void* ctx, const float* x, int64_t n, int32_t tag, NonFinite* rec) {
  if (n == 0) return;
  unsigned long long* first = C(ctx).scratch;
  MQ_CUDA(cudaMemsetAsync(first, 0xff, sizeof *first, S(ctx)));
  k_first_nonfinite<<<std::min<unsigned>(blocks(size_t(n), 256), 1024), 256, 0, S(ctx)>>>(x, n, first);
  k_record<<<1, 1, 0, S(ctx)>>>(x, first, tag, rec);
  launched();
}

__global__ void k_gather(const float* src, int lds, const int32_t* idx, int cols, float* dst, int ldd) {
  const float* s = src + size_t(idx[blockIdx.x]) * lds;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[size_t(blockIdx.x) * ldd + c] = s[c];
}
void c_gather(void* ctx, const float* src, int lds, const int32_t* idx, int n, int cols, float* dst, int ldd) {
  if (n == 0) return;
  k_gather<<<n, 256, 0, S(ctx)>>>(src, lds, idx, cols, dst, ldd);
  launched();
}

// ---- int8 codes: round half to even (rint), clamp, NaN -> 0, as ref ----
__device__ inline float fq(float v, float inv, float scale, float qmax) {
  const float q = v * inv;
  return q != q ? 0.f : fminf(fmaxf(rintf(q), -qmax), qmax) * scale;
}
__global__ void k_quantize(const float* x, int rows, int cols, int ldx, float inv, int8_t* q, int ldq) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * cols) return;
  const size_t r = i / cols, c = i % cols;
  const float v = x[r * ldx + c] * inv;
  q[r * ldq + c] = v != v ? 0 : int8_t(fminf(fmaxf(rintf(v), -127.f), 127.f));
}
void c_quantize(void* ctx, const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq) {
  if (!rows || !cols) return;
  k_quantize<<<blocks(size_t(rows) * cols, 256), 256, 0, S(ctx)>>>(x, rows, cols, ldx, 1.0f / scale, q, ldq);
  launched();
}
__global__ void k_dequantize(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * cols) return;
  const size_t r = i / cols, c = i % cols;
  x[r * ldx + c] = float(q[r * ldq + c]) * scale;
}
void c_dequantize(void* ctx, const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) {
  if (!rows || !cols) return;
  k_dequantize<<<blocks(size_t(rows) * cols, 256), 256, 0, S(ctx)>>>(q, rows, cols, ldq, scale, x, ldx);
  launched();
}
__global__ void k_fake(float* x, int rows, int cols, int ldx, float inv, float scale, float qmax) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * cols) return;
  float& v = x[(i / cols) * ldx + i % cols];
  v = fq(v, inv, scale, qmax);
}
void c_fake(void* ctx, float* x, int rows, int cols, int ldx, float scale, int bits) {
  if (!rows || !cols) return;
  k_fake<<<blocks(size_t(rows) * cols, 256), 256, 0, S(ctx)>>>(x, rows, cols, ldx, 1.0f / scale, scale,
                                                                float((1 << (bits - 1)) - 1));
  launched();
}
// The grouped SSM state {H, N, P}: element (h, n, p) uses scale[(h N + n) ndg + j], p in dim group j.
__device__ inline float state_scale(int H, int N, int P, StateScalesView s, size_t i) {
  const int p = int(i % P), hn = int(i / P), h = hn / N;
  int j = 0;
  while (p >= s.dim_end[h * s.ndg + j]) ++j;
  return s.scale[size_t(hn) * s.ndg + j];
}
__global__ void k_sq(const float* x, int8_t* q, int H, int N, int P, StateScalesView s) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(H) * N * P) return;
  const float v = x[i] * (1.0f / state_scale(H, N, P, s, i));
  q[i] = v != v ? 0 : int8_t(fminf(fmaxf(rintf(v), -127.f), 127.f));
}
__global__ void k_sdq(const int8_t* q, float* x, int H, int N, int P, StateScalesView s) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size_t(H) * N * P) x[i] = float(q[i]) * state_scale(H, N, P, s, i);
}
__global__ void k_sfq(float* x, int H, int N, int P, StateScalesView s, float qmax) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(H) * N * P) return;
  const float sc = state_scale(H, N, P, s, i);
  x[i] = fq(x[i], 1.0f / sc, sc, qmax);
}
void c_sq(void* ctx, const float* x, int8_t* q, int H, int N, int P, StateScalesView s) {
  k_sq<<<blocks(size_t(H) * N * P, 256), 256, 0, S(ctx)>>>(x, q, H, N, P, s);
  launched();
}
void c_sdq(void* ctx, const int8_t* q, float* x, int H, int N, int P, StateScalesView s) {
  k_sdq<<<blocks(size_t(H) * N * P, 256), 256, 0, S(ctx)>>>(q, x, H, N, P, s);
  launched();
}
void c_sfq(void* ctx, float* x, int H, int N, int P, StateScalesView s, int bits) {
  k_sfq<<<blocks(size_t(H) * N * P, 256), 256, 0, S(ctx)>>>(x, H, N, P, s, float((1 << (bits - 1)) - 1));
  launched();
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear it
    return 0;
  }
  return n;
}

std::shared_ptr<void> make_ctx(int dev) {
  const int n = device_count();
  if (dev >= n) failf("backend 'cuda:%d': this machine has %d CUDA device(s)", dev, n);
  auto ctx = std::make_shared<Ctx>();
  ctx->device = dev;
  MQ_CUDA(cudaSetDevice(dev));
  cudaDeviceProp prop{};
  MQ_CUDA(cudaGetDeviceProperties(&prop, dev));
  ctx->name = "cuda:" + std::to_string(dev) + " (" + prop.name + ")";
  MQ_CUDA(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  if (cublasCreate(&ctx->blas) != CUBLAS_STATUS_SUCCESS) failf("cuda: cublasCreate failed on %s", ctx->name.c_str());
  cublasSetStream(ctx->blas, ctx->stream);
  cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH);  // no TF32: fp32 products as fp32
  MQ_CUDA(cudaMalloc(&ctx->scratch, sizeof(unsigned long long)));
  return ctx;
}

}  // namespace cuda_impl
}  // namespace mambaq
