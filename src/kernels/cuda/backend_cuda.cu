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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
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

constexpr size_t kBlasWorkspace = size_t(32) << 20;
struct Ctx {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  unsigned long long* scratch = nullptr;  // check_finite's and add_norm's words (make_ctx)
  std::map<int, float*> hadamard;          // the dense orthonormal H_n, by n
  float* tmp = nullptr;                    // the Hadamard's input copy
  size_t tmp_n = 0;
  void* a16 = nullptr;                     // a GEMM's activations rounded to its weights' 16-bit type
  size_t a16_bytes = 0;
  void* scan = nullptr;                    // the scans' chunk list and chunked-pass states
  size_t scan_bytes = 0;
  bool capturing = false;                  // a graph is being captured: no allocation, no host copy
  void* blas_ws = nullptr;                 // cuBLAS's workspace (kBlasWorkspace bytes)
  std::string name;
  // $MAMBAQ_CUDA_PROFILE: each op between two events, summed by op at the end (stderr)
  struct Timed {
    cudaEvent_t a, b;
    const char* op;
  };
  std::vector<Timed> timed;
  void print_profile();
  ~Ctx() {
    if (!timed.empty()) print_profile();
    if (blas_ws) cudaFree(blas_ws);
    for (auto& [n, p] : hadamard) cudaFree(p);
    if (tmp) cudaFree(tmp);
    if (a16) cudaFree(a16);
    if (scan) cudaFree(scan);
    if (scratch) cudaFree(scratch);
    if (blas) cublasDestroy(blas);
    if (stream) cudaStreamDestroy(stream);
  }
};
Ctx& C(void* ctx) { return *static_cast<Ctx*>(ctx); }

void Ctx::print_profile() {
  cudaStreamSynchronize(stream);
  std::map<std::string, std::pair<int, double>> by_op;
  double total = 0;
  for (const Timed& t : timed) {
    float ms = 0;
    cudaEventElapsedTime(&ms, t.a, t.b);
    auto& e = by_op[t.op];
    ++e.first, e.second += ms, total += ms;
    cudaEventDestroy(t.a), cudaEventDestroy(t.b);
  }
  timed.clear();
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [op, e] : by_op) order.push_back({e.second, op});
  std::sort(order.rbegin(), order.rend());
  std::fprintf(stderr, "cuda profile (%s): GPU time by op, summed over the run\n%-20s %8s %10s %6s\n", name.c_str(), "op",
               "calls", "ms", "%");
  for (const auto& [ms, op] : order)
    std::fprintf(stderr, "%-20s %8d %10.3f %6.1f\n", op.c_str(), by_op[op].first, ms, 100.0 * ms / total);
}
void prof_begin(void* ctx) {
  Ctx& c = C(ctx);
  c.timed.push_back({});
  cudaEventCreate(&c.timed.back().a);
  cudaEventCreate(&c.timed.back().b);
  cudaEventRecord(c.timed.back().a, c.stream);
}
void prof_end(void* ctx, const char* op) {
  Ctx& c = C(ctx);
  c.timed.back().op = op;
  cudaEventRecord(c.timed.back().b, c.stream);
}
cudaStream_t S(void* ctx) { return C(ctx).stream; }
void launched() { MQ_CUDA(cudaGetLastError()); }
unsigned blocks(size_t n, unsigned t) { return unsigned((n + t - 1) / t); }

// ---- memory ----
void no_capture(void* ctx, const char* what);
void* c_alloc(void* ctx, size_t bytes) {
  no_capture(ctx, "an allocation");
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
void no_capture(void* ctx, const char* what) {
  if (C(ctx).capturing) failf("cuda: internal error: %s while a graph is being captured", what);
}
void c_upload(void* ctx, void* dst, const void* src, size_t n) {
  if (!n) return;
  no_capture(ctx, "a host copy");
  MQ_CUDA(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, S(ctx)));
  MQ_CUDA(cudaStreamSynchronize(S(ctx)));
}
void c_download(void* ctx, void* dst, const void* src, size_t n) {
  if (!n) return;
  no_capture(ctx, "a host copy");
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
void c_sync(void* ctx) {
  no_capture(ctx, "a synchronization");
  MQ_CUDA(cudaStreamSynchronize(S(ctx)));
}

// ---- graphs: stream capture into an instantiated graph ----
void c_graph_begin(void* ctx) {
  Ctx& c = C(ctx);
  no_capture(ctx, "a second capture");
  MQ_CUDA(cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal));
  c.capturing = true;
}
void* c_graph_end(void* ctx) {
  Ctx& c = C(ctx);
  c.capturing = false;
  cudaGraph_t g = nullptr;
  if (cudaStreamEndCapture(c.stream, &g) != cudaSuccess || !g) {
    cudaGetLastError();
    return nullptr;
  }
  cudaGraphExec_t x = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&x, g, 0);
  cudaGraphDestroy(g);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return x;
}
void c_graph_launch(void* ctx, void* g) { MQ_CUDA(cudaGraphLaunch(static_cast<cudaGraphExec_t>(g), S(ctx))); }
void c_graph_free(void*, void* g) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(g)); }
bool c_supports(void*, Op op, OpFormats f) {
  const bool w = f.weight == WFormat::F32 || (op == Op::Gemm && (f.weight == WFormat::F16 || f.weight == WFormat::BF16));
  return f.act == DType::F32 && w && f.state == DType::F32;
}

// ---- launches: programmatic dependent launch (sm_90) ----
// Every kernel here starts with pdl_enter(): it lets the next kernel in the stream be scheduled
// now and waits until the kernel before it has finished and its writes are visible. With
// $MAMBAQ_CUDA_PDL=1 kernels are launched with the attribute that allows that overlap; off by
// default: measured on the H200 it made graph-replayed decode slower (BENCHMARKS.md, session 11),
// while the kernels stay correct either way (the GPU tests pass both ways).
__device__ inline void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
bool pdl_on() {
  static const bool on = [] {
    const char* e = std::getenv("MAMBAQ_CUDA_PDL");
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    return major >= 9 && e && std::string(e) == "1";
  }();
  return on;
}
template <class... P, class... A>
void launch_smem(void* ctx, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = S(ctx);
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at, cfg.numAttrs = pdl_on() ? 1 : 0;
  MQ_CUDA(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...));
}
template <class... P, class... A>
void launch(void* ctx, void (*kernel)(P...), dim3 grid, dim3 block, A&&... args) {
  launch_smem(ctx, kernel, grid, block, 0, std::forward<A>(args)...);
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
  pdl_enter();
  const float* xr = x + size_t(blockIdx.x) * d;
  float ss = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  const float r = rsqrtf(block_sum(ss) / d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) out[size_t(blockIdx.x) * d + i] = xr[i] * r * w[i];
}
void c_rmsnorm(void* ctx, const float* x, const float* w, float* out, int T, int d, float eps) {
  if (T == 0) return;
  launch(ctx, k_rmsnorm, T, 256, x, w, out, d, eps);
  launched();
}
__global__ void k_layernorm(const float* x, const float* w, const float* b, float* out, int d, float eps) {
  pdl_enter();
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
  launch(ctx, k_layernorm, T, 256, x, w, b, out, d, eps);
  launched();
}
// one block per (row, group)
__global__ void k_gated(float* y, const float* z, int ldz, const float* w, int D, int group, float eps, bool nbg) {
  pdl_enter();
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
  // few blocks (decode): wider ones, so one row's group is not walked by 256 threads alone
  const int threads = size_t(T) * (D / group) < 64 ? 1024 : 256;
  launch(ctx, k_gated, dim3(unsigned(T), unsigned(D / group)), threads, y, z, ldz, w, D, group, eps, nbg);
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
  pdl_enter();
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
  pdl_enter();
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
// Short sequences (decode steps: at most kConvShort tokens each): one launch, thread (s, c) reads
// its window (state ++ tokens) once, writes the outputs and then the new state.
constexpr int kConvShort = 4;
__global__ void k_conv_short(int nseq, const int* __restrict__ offs, const float* __restrict__ x, int ldx, int C, int K,
                             const float* __restrict__ w, const float* __restrict__ bias, float* const* states,
                             float* __restrict__ out, int ldo) {
  pdl_enter();
  const int c = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (c >= C || s >= nseq) return;
  float* st = states ? states[s] : nullptr;
  const int t0 = offs[s], len = offs[s + 1] - t0;
  float win[kConvMax - 1 + kConvShort];  // inputs K-1 steps before the first token, then the tokens
#pragma unroll
  for (int i = 0; i < kConvMax - 1; ++i)
    if (i < K - 1) win[i] = st ? st[size_t(i) * C + c] : 0.f;
#pragma unroll
  for (int i = 0; i < kConvShort; ++i)
    if (i < len) win[K - 1 + i] = x[size_t(t0 + i) * ldx + c];
  float wr[kConvMax];
#pragma unroll
  for (int j = 0; j < kConvMax; ++j) wr[j] = j < K ? w[size_t(c) * K + j] : 0.f;
  const float b = bias ? bias[c] : 0.f;
#pragma unroll
  for (int i = 0; i < kConvShort; ++i)
    if (i < len) {
      float acc = b;
#pragma unroll
      for (int j = 0; j < kConvMax; ++j)
        if (j < K) acc += wr[j] * win[i + j];
      out[size_t(t0 + i) * ldo + c] = silu_f(acc);
    }
  if (st)
#pragma unroll
    for (int i = 0; i < kConvMax - 1; ++i)
      if (i < K - 1) st[size_t(i) * C + c] = win[len + i];
}
void c_conv(void* ctx, const ConvArgs& a) {
  if (a.x.dtype != DType::F32 || a.w.format != WFormat::F32) cuda_fail("cuda: conv1d_silu on int8 operands is not built yet");
  if (a.K > kConvMax) failf("cuda: conv1d_silu with d_conv %d (at most %d)", a.K, kConvMax);
  const int T = a.b.nseq ? a.b.rows() : 0;
  if (T == 0) return;
  auto* st = reinterpret_cast<float* const*>(a.st.seq ? a.st.seq_dev : nullptr);
  int longest = 0;
  for (int s = 0; s < a.b.nseq; ++s) longest = std::max(longest, a.b.len(s));
  if (longest <= kConvShort) {
    launch(ctx, k_conv_short, dim3(blocks(size_t(a.C), 128), unsigned(a.b.nseq)), 128, 
        a.b.nseq, a.b.offs_dev, a.x.f(), a.x.ld, a.C, a.K, a.w.f(), a.bias, st, static_cast<float*>(a.out), a.ldo);
    return launched();
  }
  launch(ctx, k_conv, dim3(blocks(size_t(a.C), 128), unsigned(std::min(T, 65535))), 128, 
      a.b.nseq, T, a.b.offs_dev, a.x.f(), a.x.ld, a.C, a.K, a.w.f(), a.bias, st, static_cast<float*>(a.out), a.ldo);
  launched();
  if (st && a.K > 1) {
    launch(ctx, k_conv_state, dim3(blocks(size_t(a.C), 128), unsigned(a.b.nseq)), 128, a.b.nseq, a.b.offs_dev, a.x.f(),
                                                                                        a.x.ld, a.C, a.K, st);
    launched();
  }
}

// ---- The scans: 16 lanes per output channel, each holding NS of its N states in registers ----
// A group of 16 lanes of one warp shares a channel: lane l holds the states n = l + 16 j (j < NS,
// fully unrolled, so in registers), and the channel's output sum over n is a 4-step butterfly of
// shuffles within the 16 lanes; loads of B and C rows coalesce across the lanes. Order of the sum
// over n: lane partials in j order, then the butterfly (not ref's n order; the tests' bound, 2e-5
// relative, covers it).
//
// Time is cut into chunks (per sequence: at most kChunksMax chunks of at least kChunkMin tokens,
// so a sequence's numbers depend on it alone, never on the batch around it). A sequence of one
// chunk (every decode step) is one walk, as ref. A longer one runs in two launches:
//   pass 0: chunk 0 walks from the carried state and writes its outputs and its end state
//           hloc[k0]; every middle chunk walks from a zero state without outputs, writing its end
//           state hloc[k] and the sum of its steps dt, dtsum[k];
//   pass 1: chunk c >= 1 starts from h = hloc[k0], then h = exp(A dtsum[j]) h + hloc[j] for the
//           middle chunks j before it (the state recurrence is linear: a chunk's effect on the
//           state is its decay, exp(A sum dt), and its zero-start end state), and walks its
//           chunk with outputs; the last chunk writes the carried state.
// Only pass 0 reads a multi-chunk sequence's carried state and only pass 1 writes it: no races.
// Walks load U steps' operands into registers before using them (the loop-carried work is only
// the state update; the loads of the next steps no longer wait behind it).
constexpr int kScanLanes = 16, kChunkMin = 64, kChunksMax = 32;
__host__ __device__ inline int chunk_len(int len) {
  const int L = (len + kChunksMax - 1) / kChunksMax;
  return L < kChunkMin ? kChunkMin : L;
}
__host__ __device__ inline int chunks_of(int len) { return len <= 0 ? 0 : (len + chunk_len(len) - 1) / chunk_len(len); }
struct Chunk {
  int s, c, n, t0, t1;  // sequence, index in it, the sequence's chunk count, tokens [t0, t1)
};
// Every sequence's chunks in order (one block: each thread counts a run of sequences, thread 0
// prefix-sums the 256 counts, each thread lists its run's chunks). Q = 0: the scans' chunk_len
// rule; Q > 0: chunks of Q tokens. first (may be null): first[s] = sequence s's first chunk,
// first[nseq] = all chunks.
template <int Q>
__global__ void k_chunks(int nseq, const int* __restrict__ offs, Chunk* out, int* first) {
  pdl_enter();
  auto len_of = [](int len) { return Q > 0 ? Q : chunk_len(len); };
  auto count = [&](int len) { return Q > 0 ? (len + Q - 1) / Q : chunks_of(len); };
  __shared__ int base[257];
  const int per = (nseq + 255) / 256, s0 = int(threadIdx.x) * per, s1 = min(nseq, s0 + per);
  int cnt = 0;
  for (int s = s0; s < s1; ++s) cnt += count(offs[s + 1] - offs[s]);
  base[threadIdx.x + 1] = cnt;
  __syncthreads();
  if (threadIdx.x == 0) {
    base[0] = 0;
    for (int i = 1; i <= 256; ++i) base[i] += base[i - 1];
    if (first) first[nseq] = base[256];
  }
  __syncthreads();
  int k = base[threadIdx.x];
  for (int s = s0; s < s1; ++s) {
    const int t0 = offs[s], len = offs[s + 1] - t0, L = len_of(len), n = count(len);
    if (first) first[s] = k;
    for (int c = 0; c < n; ++c) out[k++] = {s, c, n, t0 + c * L, min(t0 + len, t0 + (c + 1) * L)};
  }
}
// Chunk k: from the list, or without one (every sequence one chunk, e.g. decode) sequence k whole.
__device__ inline Chunk chunk_at(const Chunk* chunks, int k, const int* offs) {
  if (chunks) return chunks[k];
  return {k, 0, 1, offs[k], offs[k + 1]};
}
// The sum over a group of L lanes (L a power of two up to 32); the mask names only this group's
// lanes: the warp's other groups may have left (past D).
template <int L = kScanLanes>
__device__ inline float lanes_sum(float v) {
  const unsigned mask = (L == 32 ? 0xffffffffu : ((1u << L) - 1u)) << (threadIdx.x & 31u & ~unsigned(L - 1));
#pragma unroll
  for (int o = L / 2; o > 0; o /= 2) v += __shfl_xor_sync(mask, v, o, L);
  return v;
}

// Mamba1: y[t, d] = sum_n C[t, n] h[d, n] (+ Dskip[d] u[t, d]) (* silu(z[t, d])), with
// h[d, n] = exp(dt A[d, n]) h[d, n] + dt B[t, n] u[t, d], dt = softplus(delta[t, d] + bias[d]).
struct ScanOps {
  const int* offs;
  const float *u, *delta, *dbias, *A, *B, *C, *Dskip, *z;
  int ldu, ldd, ldb, ldc, ldz, D, N;
  float* y;
  int ldy;
};
// One walk of channel d over tokens [t0, t1); OUT: write y; returns the sum of dt. L lanes per
// channel, lane l holding the states n = l + L j (j < NS).
template <int NS, int U, bool OUT, int L>
__device__ inline float scan_walk(const ScanOps& o, int d, int lane, int t0, int t1, float (&h)[NS],
                                  const float (&a)[NS]) {
  const float bias = o.dbias ? o.dbias[d] : 0.f, dsk = o.Dskip ? o.Dskip[d] : 0.f;
  float dsum = 0.f;
  for (int t = t0; t < t1; t += U) {
    float dl[U], uu[U], zz[U], bb[U][NS], cc[U][NS];
#pragma unroll
    for (int i = 0; i < U; ++i)
      if (t + i < t1) {
        const size_t tt = size_t(t + i);
        dl[i] = o.delta[tt * o.ldd + d];
        uu[i] = o.u[tt * o.ldu + d];
        zz[i] = OUT && o.z ? o.z[tt * o.ldz + d] : 0.f;
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          const int n = lane + L * j;
          bb[i][j] = n < o.N ? o.B[tt * o.ldb + n] : 0.f;
          cc[i][j] = OUT && n < o.N ? o.C[tt * o.ldc + n] : 0.f;
        }
      }
#pragma unroll
    for (int i = 0; i < U; ++i)
      if (t + i < t1) {
        const float dt = softplus_f(dl[i] + bias), dtu = dt * uu[i];
        dsum += dt;
        float acc = 0;
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          h[j] = expf(dt * a[j]) * h[j] + dtu * bb[i][j];
          acc += h[j] * cc[i][j];
        }
        if (OUT) {
          acc = lanes_sum<L>(acc);
          if (lane == 0) {
            float v = acc + dsk * uu[i];
            if (o.z) v *= silu_f(zz[i]);
            o.y[size_t(t + i) * o.ldy + d] = v;
          }
        }
      }
  }
  return dsum;
}
// The state of channel d entering chunk ch (chunk k of the list) and its A row, for the lane's
// states n = idx(j): from the sequence's state (the first chunk), from the chunks before it
// (pass 1: their end states and dt sums), or zero (pass 0).
template <int NS, int PASS, class Idx>
__device__ inline void scan_enter(const ScanOps& o, const Chunk& ch, int k, int d, const float* st,
                                  const float* __restrict__ hloc, const float* __restrict__ dtsum, Idx idx,
                                  float (&h)[NS], float (&a)[NS]) {
  const int N = o.N;
  const bool from_state = ch.c == 0;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const int n = idx(j);
    a[j] = n < N ? o.A[size_t(d) * N + n] : 0.f;
    h[j] = (from_state && st && n < N) ? st[size_t(d) * N + n] : 0.f;
  }
  if (PASS == 1 && !from_state) {
    const int k0 = k - ch.c;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = idx(j);
      h[j] = n < N ? hloc[(size_t(k0) * o.D + d) * N + n] : 0.f;
    }
    for (int i = k0 + 1; i < k; ++i) {
      const float S = dtsum[size_t(i) * o.D + d];
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        const int n = idx(j);
        if (n < N) h[j] = expf(S * a[j]) * h[j] + hloc[(size_t(i) * o.D + d) * N + n];
      }
    }
  }
}
// After the walk: pass 0 keeps the chunk's end state and dt sum S for pass 1; pass 1 writes the
// sequence's state after its last chunk.
template <int NS, int PASS, class Idx>
__device__ inline void scan_leave(const ScanOps& o, const Chunk& ch, int k, int d, int lane, float* st,
                                  float* __restrict__ hloc, float* __restrict__ dtsum, float S, Idx idx,
                                  const float (&h)[NS]) {
  const int N = o.N;
  float* dst = nullptr;
  if (PASS == 0) {
    dst = hloc + size_t(k) * o.D * N + size_t(d) * N;
    if (lane == 0) dtsum[size_t(k) * o.D + d] = S;
  } else if (st && ch.c == ch.n - 1) {
    dst = st + size_t(d) * N;
  }
  if (dst)
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = idx(j);
      if (n < N) dst[n] = h[j];
    }
}
// PASS 0 / 1 as above; grid (channel blocks, chunks). hloc {chunks, D, N}, dtsum {chunks, D}.
template <int NS, int PASS, int L>
__global__ void k_scan(ScanOps o, const Chunk* __restrict__ chunks, float* const* states, float* __restrict__ hloc,
                       float* __restrict__ dtsum) {
  pdl_enter();
  const int lane = threadIdx.x % L, k = blockIdx.y;
  const int d = (blockIdx.x * blockDim.x + threadIdx.x) / L;
  if (d >= o.D) return;  // whole L-lane groups leave together
  const Chunk ch = chunk_at(chunks, k, o.offs);
  if (PASS == 0 ? (ch.n == 1 || ch.c == ch.n - 1) : (ch.n > 1 && ch.c == 0)) return;  // the other pass's chunk
  float h[NS], a[NS];
  float* st = states ? states[ch.s] : nullptr;
  scan_enter<NS, PASS>(o, ch, k, d, st, hloc, dtsum, [lane](int j) { return lane + L * j; }, h, a);
  float S;
  if (PASS == 1 || ch.c == 0)
    S = scan_walk<NS, 8, true, L>(o, d, lane, ch.t0, ch.t1, h, a);
  else
    S = scan_walk<NS, 8, false, L>(o, d, lane, ch.t0, ch.t1, h, a);
  scan_leave<NS, PASS>(o, ch, k, d, lane, st, hloc, dtsum, S, [lane](int j) { return lane + L * j; }, h);
}

// The same passes with each block's operands staged in shared memory kScanTile tokens at a time:
// the block's 128 / L channels read delta, u, z and write y through coalesced tile copies, and B /
// C rows (shared by every channel) are read once per block instead of once per channel. Lane l
// holds the states n = l NS + j (contiguous: one float4 read of B and of C per token).
constexpr int kScanTile = 32;
template <int NS, int PASS, int L>
__global__ void __launch_bounds__(128) k_scan_tiled(ScanOps o, const Chunk* __restrict__ chunks, float* const* states,
                                                    float* __restrict__ hloc, float* __restrict__ dtsum) {
  pdl_enter();
  constexpr int CH = 128 / L, NMAX = L * NS;  // channels per block, states per channel (at most)
  __shared__ float sd[kScanTile][CH], su[kScanTile][CH], sz[kScanTile][CH], sy[kScanTile][CH];
  __shared__ __align__(16) float sb[kScanTile][NMAX], sc[kScanTile][NMAX];
  const int lane = threadIdx.x % L, ci = threadIdx.x / L, k = blockIdx.y;
  const int d0 = blockIdx.x * CH, d = d0 + ci;
  const bool live = d < o.D;
  const Chunk ch = chunk_at(chunks, k, o.offs);
  if (PASS == 0 ? (ch.n == 1 || ch.c == ch.n - 1) : (ch.n > 1 && ch.c == 0)) return;  // the whole block
  const bool out = PASS == 1 || ch.c == 0;
  float h[NS] = {}, a[NS] = {};
  float* st = states ? states[ch.s] : nullptr;
  const auto idx = [lane](int j) { return lane * NS + j; };  // contiguous: float4 reads below
  if (live) scan_enter<NS, PASS>(o, ch, k, d, st, hloc, dtsum, idx, h, a);
  const float bias = live && o.dbias ? o.dbias[d] : 0.f, dsk = live && o.Dskip ? o.Dskip[d] : 0.f;
  float dsum = 0.f;
  for (int t0 = ch.t0; t0 < ch.t1; t0 += kScanTile) {
    const int nt = min(kScanTile, ch.t1 - t0);
    __syncthreads();  // the previous tile's reads (and y's copy out) are done
    for (int i = threadIdx.x; i < nt * CH; i += 128) {
      const int t = i / CH, c = i % CH;
      const size_t tt = size_t(t0 + t);
      const bool ok = d0 + c < o.D;
      sd[t][c] = ok ? o.delta[tt * o.ldd + d0 + c] : 0.f;
      su[t][c] = ok ? o.u[tt * o.ldu + d0 + c] : 0.f;
      if (out && o.z) sz[t][c] = ok ? o.z[tt * o.ldz + d0 + c] : 0.f;
    }
    for (int i = threadIdx.x; i < nt * NMAX; i += 128) {
      const int t = i / NMAX, n = i % NMAX;
      const size_t tt = size_t(t0 + t);
      sb[t][n] = n < o.N ? o.B[tt * o.ldb + n] : 0.f;
      if (out) sc[t][n] = n < o.N ? o.C[tt * o.ldc + n] : 0.f;
    }
    __syncthreads();
    for (int t = 0; t < nt; ++t) {
      const float dt = softplus_f(sd[t][ci] + bias), uu = su[t][ci], dtu = dt * uu;
      dsum += dt;
      float bb[NS], cc[NS];
#pragma unroll
      for (int j = 0; j < NS; j += 4) {
        const float4 b4 = *reinterpret_cast<const float4*>(&sb[t][lane * NS + j]);
        bb[j] = b4.x, bb[j + 1] = b4.y, bb[j + 2] = b4.z, bb[j + 3] = b4.w;
        if (out) {
          const float4 c4 = *reinterpret_cast<const float4*>(&sc[t][lane * NS + j]);
          cc[j] = c4.x, cc[j + 1] = c4.y, cc[j + 2] = c4.z, cc[j + 3] = c4.w;
        }
      }
      float acc = 0.f;
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        h[j] = expf(dt * a[j]) * h[j] + dtu * bb[j];
        if (out) acc += h[j] * cc[j];
      }
      if (out) {
        acc = lanes_sum<L>(acc);
        if (lane == 0) {
          float v = acc + dsk * uu;
          if (o.z) v *= silu_f(sz[t][ci]);
          sy[t][ci] = v;
        }
      }
    }
    if (out) {
      __syncthreads();
      for (int i = threadIdx.x; i < nt * CH; i += 128) {
        const int t = i / CH, c = i % CH;
        if (d0 + c < o.D) o.y[size_t(t0 + t) * o.ldy + d0 + c] = sy[t][c];
      }
    }
  }
  if (live) scan_leave<NS, PASS>(o, ch, k, d, lane, st, hloc, dtsum, dsum, idx, h);
}

// The chunk list and the chunked passes' buffers of one scan launch (grow-only, in the context).
struct ChunkPlan {
  int chunks = 0;     // total
  bool multi = false;  // some sequence has more than one chunk
};
ChunkPlan plan_chunks(const Batch& b) {
  ChunkPlan p;
  for (int s = 0; s < b.nseq; ++s) {
    const int n = chunks_of(b.len(s));
    p.chunks += n;
    p.multi |= n > 1;
  }
  return p;
}

// Mamba2 SSD, recurrent form: y[t, (h, p)] = sum_n C[t, g, n] S[h, n, p] + Dskip[h] x[t, (h, p)], with
// S[h, n, p] = exp(dt A[h]) S[h, n, p] + dt B[t, g, n] x[t, (h, p)], dt = softplus(dt[t, h] + bias[h]),
// g = h / (H / G). 16 lanes per (h, p), chunked in time as the Mamba1 scan (the decay of a chunk is
// exp(A[h] sum dt), one per head).
struct SsdOps {
  const int* offs;
  const float *x, *dt, *dbias, *A, *B, *C, *Dskip;
  int ldx, lddt, ldb, ldc, H, P, G, N;
  float* y;
  int ldy;
};
template <int NS, int U, bool OUT>
__device__ inline float ssd_walk(const SsdOps& o, int hd, int p, int g, int lane, int t0, int t1, float (&h)[NS]) {
  const int hp = hd * o.P + p;
  const float ah = o.A[hd], bias = o.dbias[hd], dsk = o.Dskip[hd];
  float dsum = 0.f;
  for (int t = t0; t < t1; t += U) {
    float dl[U], xx[U], bb[U][NS], cc[U][NS];
#pragma unroll
    for (int i = 0; i < U; ++i)
      if (t + i < t1) {
        const size_t tt = size_t(t + i);
        dl[i] = o.dt[tt * o.lddt + hd];
        xx[i] = o.x[tt * o.ldx + hp];
        const float* Bt = o.B + tt * o.ldb + size_t(g) * o.N;
        const float* Ct = o.C + tt * o.ldc + size_t(g) * o.N;
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          const int n = lane + kScanLanes * j;
          bb[i][j] = n < o.N ? Bt[n] : 0.f;
          cc[i][j] = OUT && n < o.N ? Ct[n] : 0.f;
        }
      }
#pragma unroll
    for (int i = 0; i < U; ++i)
      if (t + i < t1) {
        const float d = softplus_f(dl[i] + bias), dA = expf(d * ah), dx = d * xx[i];
        dsum += d;
        float acc = 0;
#pragma unroll
        for (int j = 0; j < NS; ++j) {
          h[j] = dA * h[j] + dx * bb[i][j];
          acc += h[j] * cc[i][j];
        }
        if (OUT) {
          acc = lanes_sum(acc);
          if (lane == 0) o.y[size_t(t + i) * o.ldy + hp] = acc + dsk * xx[i];
        }
      }
  }
  return dsum;
}
// hloc {chunks, H, N, P} (the states' layout), dtsum {chunks, H}.
template <int NS, int PASS>
__global__ void k_ssd(SsdOps o, const Chunk* __restrict__ chunks, float* const* states, float* __restrict__ hloc,
                      float* __restrict__ dtsum) {
  pdl_enter();
  constexpr int U = NS <= 4 ? 8 : NS <= 8 ? 4 : 2;
  const int lane = threadIdx.x % kScanLanes, k = blockIdx.y;
  const int hp = (blockIdx.x * blockDim.x + threadIdx.x) / kScanLanes;
  const int H = o.H, P = o.P, N = o.N;
  if (hp >= H * P) return;  // whole 16-lane groups leave together
  const Chunk ch = chunk_at(chunks, k, o.offs);
  if (PASS == 0 ? (ch.n == 1 || ch.c == ch.n - 1) : (ch.n > 1 && ch.c == 0)) return;
  const int hd = hp / P, p = hp % P, g = hd / (H / o.G);
  const size_t per = size_t(H) * N * P;  // one state
  float h[NS];
  float* st = states ? states[ch.s] : nullptr;
  const bool from_state = ch.c == 0;
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const int n = lane + kScanLanes * j;
    h[j] = (from_state && st && n < N) ? st[(size_t(hd) * N + n) * P + p] : 0.f;
  }
  if (PASS == 1 && !from_state) {
    const int k0 = k - ch.c;
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = lane + kScanLanes * j;
      h[j] = n < N ? hloc[size_t(k0) * per + (size_t(hd) * N + n) * P + p] : 0.f;
    }
    for (int i = k0 + 1; i < k; ++i) {
      const float dA = expf(dtsum[size_t(i) * H + hd] * o.A[hd]);
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        const int n = lane + kScanLanes * j;
        if (n < N) h[j] = dA * h[j] + hloc[size_t(i) * per + (size_t(hd) * N + n) * P + p];
      }
    }
  }
  float S;
  if (PASS == 1 || ch.c == 0)
    S = ssd_walk<NS, U, true>(o, hd, p, g, lane, ch.t0, ch.t1, h);
  else
    S = ssd_walk<NS, U, false>(o, hd, p, g, lane, ch.t0, ch.t1, h);
  float* dst = nullptr;
  if (PASS == 0) {
    dst = hloc + size_t(k) * per;
    if (lane == 0 && p == 0) dtsum[size_t(k) * H + hd] = S;
  } else if (st && ch.c == ch.n - 1) {
    dst = st;
  }
  if (dst)
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int n = lane + kScanLanes * j;
      if (n < N) dst[(size_t(hd) * N + n) * P + p] = h[j];
    }
}

// The context's grow-only buffer for a scan's chunk list and chunked-pass states (never asked
// for by decode steps, which are one chunk: nothing grows while a graph is being captured).
void* scan_buffer(void* ctx, size_t bytes) {
  Ctx& c = C(ctx);
  if (c.scan_bytes < bytes) {
    if (c.capturing) cuda_fail("cuda: internal error: a scan's buffer would grow during graph capture");
    if (c.scan) MQ_CUDA(cudaFree(c.scan));
    c.scan = nullptr, c.scan_bytes = 0;
    c.scan = c_alloc(ctx, bytes);
    c.scan_bytes = bytes;
  }
  return c.scan;
}

// Runs the passes a batch needs: one launch and no chunk list when every sequence is one chunk
// (decode), the list and two passes otherwise; `go(pass, chunks, hloc, dtsum)` launches one pass.
template <class Go>
void run_chunked(void* ctx, const Batch& b, size_t state_floats, size_t sum_floats, Go go) {
  const ChunkPlan p = plan_chunks(b);
  if (p.chunks == 0) return;
  if (!p.multi) return go(1, b.nseq, nullptr, nullptr, nullptr);  // one chunk each: no list
  if (p.chunks > 65535) failf("cuda: a scan over %d chunks of time (at most 65535: fewer sequences per batch)", p.chunks);
  const size_t list = (size_t(p.chunks) * sizeof(Chunk) + 255) / 256 * 256;
  const size_t need = list + size_t(p.chunks) * (state_floats + sum_floats) * sizeof(float);
  char* buf = static_cast<char*>(scan_buffer(ctx, need));
  auto* chunks = reinterpret_cast<Chunk*>(buf);
  launch(ctx, k_chunks<0>, 1, 256, b.nseq, b.offs_dev, chunks, (int*)nullptr);
  launched();
  float* hloc = reinterpret_cast<float*>(buf + list);
  float* dtsum = hloc + size_t(p.chunks) * state_floats;
  go(0, p.chunks, chunks, hloc, dtsum);
  go(1, p.chunks, chunks, hloc, dtsum);
}

void c_scan(void* ctx, const ScanArgs& a) {
  if (a.u.dtype != DType::F32) cuda_fail("cuda: selective_scan on int8 operands is not built yet");
  if (a.N > 64) failf("cuda: selective_scan with d_state %d (at most 64)", a.N);
  if (a.b.nseq == 0) return;
  const ScanOps o{a.b.offs_dev, a.u.f(), a.delta.f(), a.delta_bias, a.A, a.B.f(), a.C.f(), a.Dskip, a.z.f(), a.u.ld, a.delta.ld,
                  a.B.ld, a.C.ld, a.z.ld, a.D, a.N, a.y, a.ldy};
  // 4 states per lane, N/4 lanes per channel (Mamba1's d_state 16: 4 lanes, two shuffle rounds
  // per output; with time chunked there is parallelism enough without spreading a channel wider)
  auto* st = reinterpret_cast<float* const*>(a.st.seq ? a.st.seq_dev : nullptr);
  const int lanes = a.N <= 16 ? 4 : a.N <= 32 ? 8 : 16, per_block = 128 / lanes;  // channels per block of 128
  // prefill: operands staged in shared memory by tiles of tokens; decode steps: the direct walk
  int longest = 0;
  for (int s = 0; s < a.b.nseq; ++s) longest = std::max(longest, a.b.len(s));
  const bool tiled = longest > 4;
  run_chunked(ctx, a.b, size_t(a.D) * a.N, size_t(a.D), [&](int pass, int n, const Chunk* ch, float* hl, float* ds) {
    const dim3 grid(unsigned((a.D + per_block - 1) / per_block), unsigned(n));
    auto go = [&](auto k0, auto k1) { launch(ctx, pass == 0 ? k0 : k1, grid, 128, o, ch, st, hl, ds); };
    if (tiled) {
      if (lanes == 4) go(k_scan_tiled<4, 0, 4>, k_scan_tiled<4, 1, 4>);
      else if (lanes == 8) go(k_scan_tiled<4, 0, 8>, k_scan_tiled<4, 1, 8>);
      else go(k_scan_tiled<4, 0, 16>, k_scan_tiled<4, 1, 16>);
    } else if (lanes == 4) go(k_scan<4, 0, 4>, k_scan<4, 1, 4>);
    else if (lanes == 8) go(k_scan<4, 0, 8>, k_scan<4, 1, 8>);
    else go(k_scan<4, 0, 16>, k_scan<4, 1, 16>);
    launched();
  });
}

// ---- Mamba2 SSD in chunks (the state-space-duality form) ----
// Each sequence is cut into chunks of kSsdQ tokens from its own start (its numbers depend on it
// alone). Within a chunk, with a_t = dt_t A[h] and cum(t) = sum_{r <= t} a_r (summed in double, so
// the differences below keep their digits):
//   A (k_ssd_state): the chunk's own end state  S_c[n, p] = sum_s exp(cum(Q-1) - cum(s)) dt_s B[s, n] x[s, p]
//   B (k_ssd_pass):  the state entering chunk c S_in[c] = exp(cum_{c-1}(Q-1)) S_in[c-1] + S_c[c-1],
//                    S_in[0] = the sequence's state; the state after the last chunk is written back
//   C (k_ssd_out):   y[t, p] = sum_{s <= t} exp(cum(t) - cum(s)) dt_s (C_t . B_s) x[s, p]
//                              + exp(cum(t)) sum_n C[t, n] S_in[n, p] + Dskip x[t, p]
// which is k_ssd's recurrence regrouped into products of 4x4 register tiles over shared memory (one
// thread per state walking time reads B and C once per state and step; here each operand is read
// from shared memory once per 16 products). C_t . B_s is shared by the heads of a group: each block
// of k_ssd_out computes it once for kSsdHeads heads.
constexpr int kSsdQ = 64, kSsdLdT = kSsdQ + 4;  // chunk length; row stride of the transposed tiles
constexpr int kSsdThreads = 256;                // (kSsdQ / 4)^2: one 4x4 tile of C.B^T per thread

// acc[i][j] += a[i] b[j] for four consecutive a and b (16-byte aligned, in shared memory): one
// step of a 4x4 register tile's product.
__device__ inline void tile_fma(float (&acc)[4][4], const float* a, const float* b) {
  const float4 a4 = *reinterpret_cast<const float4*>(a), b4 = *reinterpret_cast<const float4*>(b);
  const float aa[4] = {a4.x, a4.y, a4.z, a4.w}, bb[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(aa[i], bb[j], acc[i][j]);
}

// dt_s (s < Q, else 0) and cum(s) of head hd over the chunk's tokens [t0, t0 + Q), by warp 0 (two
// tokens per lane, an inclusive scan over the lanes); the caller synchronises.
__device__ inline void ssd_chunk_dt(const SsdOps& o, int hd, int t0, int Q, float* dtv, double* cum) {
  if (threadIdx.x >= 32) return;
  const int l = int(threadIdx.x), s = 2 * l;
  const float bias = o.dbias[hd];
  const double ah = o.A[hd];
  const float d0 = s < Q ? softplus_f(o.dt[size_t(t0 + s) * o.lddt + hd] + bias) : 0.f;
  const float d1 = s + 1 < Q ? softplus_f(o.dt[size_t(t0 + s + 1) * o.lddt + hd] + bias) : 0.f;
  dtv[s] = d0, dtv[s + 1] = d1;
  const double a0 = double(d0) * ah, pair = a0 + double(d1) * ah;
  double incl = pair;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const double v = __shfl_up_sync(0xffffffffu, incl, off);
    if (l >= off) incl += v;
  }
  cum[s] = incl - pair + a0, cum[s + 1] = incl;
}

// A: grid (chunks, H); dynamic shared memory (kSsdQ * (N + P)) floats. hst {chunks, H, N, P}, cend {chunks, H}.
__global__ void __launch_bounds__(kSsdThreads) k_ssd_state(SsdOps o, const Chunk* __restrict__ chunks,
                                                           float* __restrict__ hst, float* __restrict__ cend) {
  pdl_enter();
  extern __shared__ float4 ssd_smem[];
  __shared__ float dtv[kSsdQ];
  __shared__ double cum[kSsdQ];
  const int N = o.N, P = o.P, H = o.H, k = blockIdx.x, hd = blockIdx.y, g = hd / (H / o.G), tid = threadIdx.x;
  const Chunk ch = chunks[k];
  const int Q = ch.t1 - ch.t0;
  float* Bw = reinterpret_cast<float*>(ssd_smem);  // [kSsdQ][N]: exp(cum(Q-1) - cum(s)) dt_s B[s, n]
  float* X = Bw + kSsdQ * N;                        // [kSsdQ][P]
  ssd_chunk_dt(o, hd, ch.t0, Q, dtv, cum);
  __syncthreads();
  for (int i = tid; i < kSsdQ * N; i += kSsdThreads) {
    const int t = i / N, n = i % N;
    Bw[i] = t < Q ? expf(float(cum[Q - 1] - cum[t])) * dtv[t] * o.B[size_t(ch.t0 + t) * o.ldb + size_t(g) * N + n] : 0.f;
  }
  for (int i = tid; i < kSsdQ * P; i += kSsdThreads) {
    const int t = i / P, p = i % P;
    X[i] = t < Q ? o.x[size_t(ch.t0 + t) * o.ldx + size_t(hd) * P + p] : 0.f;
  }
  __syncthreads();
  const int tp = P / 4;
  float* dst = hst + (size_t(k) * H + hd) * size_t(N) * P;
  for (int tile = tid; tile < (N / 4) * tp; tile += kSsdThreads) {
    const int n0 = tile / tp * 4, p0 = tile % tp * 4;
    float acc[4][4] = {};
    for (int t = 0; t < Q; ++t) tile_fma(acc, Bw + t * N + n0, X + t * P + p0);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      *reinterpret_cast<float4*>(dst + size_t(n0 + i) * P + p0) = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
  }
  if (tid == 0) cend[size_t(k) * H + hd] = float(cum[Q - 1]);
}

// B: grid (ceil(N P / (4 kPassThreads)), H, nseq): each thread walks four state elements (one
// float4) of one head through its sequence's chunks, replacing each chunk's own end state by the
// state entering it. A sequence without a state enters its first chunk with zeros, which k_ssd_out
// knows from the chunk list (that entry is left alone), and keeps no final state, so the own end
// state of its last chunk is not read: a one-chunk sequence without a state costs nothing here.
// (One thread per element and every entry rewritten spent 5.3 ms on 100 lambada documents of the
// Mamba2-2.7B shape, as much as the rest of the SSD; the loads below are issued a chunk ahead.)
constexpr int kPassThreads = 128;
__global__ void k_ssd_pass(int H, int NP, const int* __restrict__ first, float* const* states, float* __restrict__ hst,
                           const float* __restrict__ cend) {
  pdl_enter();
  const int e = 4 * int(blockIdx.x * blockDim.x + threadIdx.x), hd = blockIdx.y, s = blockIdx.z;
  if (e >= NP) return;
  const int k0 = first[s], k1 = first[s + 1];
  float* st = states ? states[s] : nullptr;
  if (k1 - k0 < (st ? 1 : 2)) return;
  const size_t off = size_t(hd) * NP + size_t(e), per = size_t(H) * NP;
  const int klast = st ? k1 : k1 - 1;  // the chunks whose own end state is read
  float4 h = st ? *reinterpret_cast<const float4*>(st + off) : make_float4(0.f, 0.f, 0.f, 0.f);
  float4 own = *reinterpret_cast<const float4*>(hst + size_t(k0) * per + off);
  for (int k = k0; k < k1; ++k) {
    const float4 next = k + 1 < klast ? *reinterpret_cast<const float4*>(hst + size_t(k + 1) * per + off) : own;
    if (k > k0 || st) *reinterpret_cast<float4*>(hst + size_t(k) * per + off) = h;
    if (k < klast) {
      const float d = expf(cend[size_t(k) * H + hd]);
      h = make_float4(fmaf(d, h.x, own.x), fmaf(d, h.y, own.y), fmaf(d, h.z, own.z), fmaf(d, h.w, own.w));
    }
    own = next;
  }
  if (st) *reinterpret_cast<float4*>(st + off) = h;
}
// Whether chunk ch enters with zeros (the first chunk of a sequence without a state): its entry in
// the chunk states is not written by k_ssd_pass, and the products with it are skipped.
__device__ inline bool enters_empty(const Chunk& ch, float* const* states) {
  return ch.c == 0 && !(states && states[ch.s]);
}

// C: grid (chunks, H / heads); the heads of one block belong to one group. Dynamic shared memory:
// CT [N][kSsdLdT], BT [N][kSsdLdT] (then S_in [N][P] in its place), MT [kSsdQ][kSsdLdT], X [kSsdQ][P].
size_t ssd_out_floats(int N, int P) {
  return size_t(N) * kSsdLdT + std::max(size_t(N) * kSsdLdT, size_t(N) * P) + size_t(kSsdQ) * kSsdLdT + size_t(kSsdQ) * P;
}
__global__ void __launch_bounds__(kSsdThreads) k_ssd_out(SsdOps o, const Chunk* __restrict__ chunks,
                                                         float* const* states, const float* __restrict__ hst, int heads) {
  pdl_enter();
  extern __shared__ float4 ssd_smem[];
  __shared__ float dtv[kSsdQ];
  __shared__ double cum[kSsdQ];
  const int N = o.N, P = o.P, H = o.H, k = blockIdx.x, tid = threadIdx.x;
  const int h0 = blockIdx.y * heads, g = h0 / (H / o.G);
  const Chunk ch = chunks[k];
  const int Q = ch.t1 - ch.t0;
  const bool empty = enters_empty(ch, states);
  float* CT = reinterpret_cast<float*>(ssd_smem);        // [N][kSsdLdT]: C[t, n] at n * kSsdLdT + t
  float* BT = CT + size_t(N) * kSsdLdT;                  // [N][kSsdLdT]
  float* Sin = BT;                                       // [N][P] once C.B^T is in registers
  float* MT = BT + max(N * kSsdLdT, N * P);              // [kSsdQ][kSsdLdT]: M[t, s] at s * kSsdLdT + t
  float* X = MT + kSsdQ * kSsdLdT;                       // [kSsdQ][P]
  for (int i = tid; i < kSsdQ * N; i += kSsdThreads) {
    const int t = i / N, n = i % N;
    const size_t row = size_t(ch.t0 + t);
    CT[n * kSsdLdT + t] = t < Q ? o.C[row * o.ldc + size_t(g) * N + n] : 0.f;
    BT[n * kSsdLdT + t] = t < Q ? o.B[row * o.ldb + size_t(g) * N + n] : 0.f;
  }
  __syncthreads();
  // this thread's tile of C.B^T: rows t0..t0+3, columns s0..s0+3 (above the diagonal: not needed)
  const int t0 = tid / (kSsdQ / 4) * 4, s0 = tid % (kSsdQ / 4) * 4;
  float cb[4][4] = {};
  if (s0 <= t0 + 3 && t0 < Q)
    for (int n = 0; n < N; ++n) tile_fma(cb, CT + n * kSsdLdT + t0, BT + n * kSsdLdT + s0);
  const int tp = P / 4;
  for (int hd = h0; hd < h0 + heads; ++hd) {
    __syncthreads();  // BT read (first head) / the previous head's Sin, MT, X read
    ssd_chunk_dt(o, hd, ch.t0, Q, dtv, cum);
    const float* src = hst + (size_t(k) * H + hd) * size_t(N) * P;
    if (!empty)
      for (int i = tid * 4; i < N * P; i += kSsdThreads * 4)
        *reinterpret_cast<float4*>(Sin + i) = *reinterpret_cast<const float4*>(src + i);
    for (int i = tid; i < kSsdQ * P; i += kSsdThreads) {
      const int t = i / P, p = i % P;
      X[i] = t < Q ? o.x[size_t(ch.t0 + t) * o.ldx + size_t(hd) * P + p] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int t = t0 + i, s = s0 + j;
        MT[s * kSsdLdT + t] = (s <= t && t < Q) ? cb[i][j] * expf(float(cum[t] - cum[s])) * dtv[s] : 0.f;
      }
    __syncthreads();
    const float dsk = o.Dskip[hd];
    for (int tile = tid; tile < (kSsdQ / 4) * tp; tile += kSsdThreads) {
      const int r0 = tile / tp * 4, p0 = tile % tp * 4;
      if (r0 >= Q) continue;
      // the state entering the chunk, decayed to each row; then the chunk's own tokens added in
      float acc[4][4] = {};
      if (!empty)
        for (int n = 0; n < N; ++n) tile_fma(acc, CT + n * kSsdLdT + r0, Sin + n * P + p0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float decay = r0 + i < Q ? expf(float(cum[r0 + i])) : 0.f;
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] *= decay;
      }
      const int send = min(r0 + 4, Q);
      for (int s = 0; s < send; ++s) tile_fma(acc, MT + s * kSsdLdT + r0, X + s * P + p0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int t = r0 + i;
        if (t >= Q) break;
        float* yr = o.y + size_t(ch.t0 + t) * o.ldy + size_t(hd) * P + p0;
#pragma unroll
        for (int j = 0; j < 4; ++j) yr[j] = acc[i][j] + dsk * X[t * P + p0 + j];
      }
    }
  }
}

// The chunked form where its tiles fit (N and P multiples of 4, shared memory within the device's
// limit); false: the caller runs the recurrent k_ssd.
bool ssd_chunked(void* ctx, const SsdArgs& a, const SsdOps& o, float* const* st) {
  if (a.N % 4 || a.P % 4) return false;
  for (int s = 0; a.st.seq && s < a.b.nseq; ++s)  // k_ssd_pass reads and writes the states by float4
    if (reinterpret_cast<uintptr_t>(a.st.seq[s]) % 16) return false;
  // per device: the shared memory a block may opt into, and the kernels' attribute set once
  static std::mutex mu;
  static std::map<int, int> optin_of;
  int optin = 0;
  {
    std::lock_guard<std::mutex> g(mu);
    auto it = optin_of.find(C(ctx).device);
    if (it == optin_of.end()) {
      int v = 0;
      MQ_CUDA(cudaSetDevice(C(ctx).device));  // function attributes belong to the current device
      MQ_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, C(ctx).device));
      const int dyn = v - int(kSsdQ * (sizeof(float) + sizeof(double)));
      MQ_CUDA(cudaFuncSetAttribute(k_ssd_state, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn));
      MQ_CUDA(cudaFuncSetAttribute(k_ssd_out, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn));
      it = optin_of.emplace(C(ctx).device, v).first;
    }
    optin = it->second;
  }
  const size_t smem_a = size_t(kSsdQ) * (a.N + a.P) * sizeof(float), smem_c = ssd_out_floats(a.N, a.P) * sizeof(float);
  const size_t statics = kSsdQ * (sizeof(float) + sizeof(double));
  if (smem_c + statics > size_t(optin) || smem_a + statics > size_t(optin)) return false;
  int chunks = 0;
  for (int s = 0; s < a.b.nseq; ++s) chunks += (a.b.len(s) + kSsdQ - 1) / kSsdQ;
  if (chunks == 0) return true;
  if (a.H > 65535 || a.b.nseq > 65535) return false;
  const size_t per = size_t(a.H) * a.N * a.P;
  const size_t list = (size_t(chunks) * sizeof(Chunk) + size_t(a.b.nseq + 1) * sizeof(int) + 255) / 256 * 256;
  char* buf = static_cast<char*>(scan_buffer(ctx, list + size_t(chunks) * (per + size_t(a.H)) * sizeof(float)));
  auto* list_dev = reinterpret_cast<Chunk*>(buf);
  auto* first = reinterpret_cast<int*>(buf + size_t(chunks) * sizeof(Chunk));
  float* hst = reinterpret_cast<float*>(buf + list);
  float* cend = hst + size_t(chunks) * per;
  launch(ctx, k_chunks<kSsdQ>, 1, 256, a.b.nseq, a.b.offs_dev, list_dev, first);
  launch_smem(ctx, k_ssd_state, dim3(unsigned(chunks), unsigned(a.H)), kSsdThreads, smem_a, o, (const Chunk*)list_dev, hst, cend);
  const int NP = a.N * a.P;
  launch(ctx, k_ssd_pass, dim3(blocks(size_t(NP / 4), kPassThreads), unsigned(a.H), unsigned(a.b.nseq)), kPassThreads,
         a.H, NP, (const int*)first, st, hst, (const float*)cend);
  int heads = 1;  // the most heads of one group, at most 8, per block
  for (int d = 1; d <= 8; ++d)
    if ((a.H / a.G) % d == 0) heads = d;
  launch_smem(ctx, k_ssd_out, dim3(unsigned(chunks), unsigned(a.H / heads)), kSsdThreads, smem_c, o,
              (const Chunk*)list_dev, st, (const float*)hst, heads);
  launched();
  return true;
}

void c_ssd(void* ctx, const SsdArgs& a) {
  if (a.x.dtype != DType::F32 || a.st.dtype != DType::F32) cuda_fail("cuda: ssd_scan on int8 operands is not built yet");
  if (a.N > 256) failf("cuda: ssd_scan with d_state %d (at most 256)", a.N);
  if (a.b.nseq == 0) return;
  const SsdOps o{a.b.offs_dev, a.x.f(), a.dt.f(), a.dt_bias, a.A, a.B.f(), a.C.f(), a.Dskip, a.x.ld, a.dt.ld, a.B.ld, a.C.ld,
                 a.H, a.P, a.G, a.N, a.y, a.ldy};
  auto* st = reinterpret_cast<float* const*>(a.st.seq ? a.st.seq_dev : nullptr);
  // prefill: the chunked form; decode steps and batches of short sequences only (the tokens
  // after a shared prefix): the recurrence, whose cost does not round up to whole chunks
  int longest = 0;
  for (int s = 0; s < a.b.nseq; ++s) longest = std::max(longest, a.b.len(s));
  if (longest > kSsdQ / 4 && ssd_chunked(ctx, a, o, st)) return;
  const int per_block = 128 / kScanLanes;
  const size_t hp = size_t(a.H) * a.P;
  run_chunked(ctx, a.b, hp * a.N, size_t(a.H), [&](int pass, int n, const Chunk* ch, float* hl, float* ds) {
    const dim3 grid(unsigned((hp + per_block - 1) / per_block), unsigned(n));
    auto go = [&](auto k0, auto k1) { launch(ctx, pass == 0 ? k0 : k1, grid, 128, o, ch, st, hl, ds); };
    if (a.N <= 16) go(k_ssd<1, 0>, k_ssd<1, 1>);
    else if (a.N <= 32) go(k_ssd<2, 0>, k_ssd<2, 1>);
    else if (a.N <= 64) go(k_ssd<4, 0>, k_ssd<4, 1>);
    else if (a.N <= 128) go(k_ssd<8, 0>, k_ssd<8, 1>);
    else go(k_ssd<16, 0>, k_ssd<16, 1>);
    launched();
  });
}

// ---- GEMM: cuBLAS sgemm in fp32 (no TF32, so fp32 stays comparable with the CPU) ----
__global__ void k_bias(float* C, int ldc, const float* bias, int M, int N) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size_t(M) * N) C[(i / N) * ldc + i % N] += bias[i % N];
}
// A {M, K} (row stride lda) rounded to bf16 / fp16 (round to nearest even, as core/half.h), packed.
template <class H>
__global__ void k_round_half(const float* A, int lda, int M, int K, H* out) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(M) * K) return;
  const float x = A[(i / K) * lda + i % K];
  if constexpr (std::is_same_v<H, __nv_bfloat16>)
    out[i] = __float2bfloat16_rn(x);
  else
    out[i] = __float2half_rn(x);
}

// Decode-sized products (M <= kGemvRows rows): W's row n is read once for all M rows, 16 bytes
// per lane per load, four loads in flight per lane (the product is bound by reading W: cuBLAS's
// tensor-core kernels leave most of the bandwidth unused at M = 1 and need the activations
// rounded by a separate launch). A row is shared by `split` warps of a block (1, 2, 4 or 8,
// chosen from N and K alone: enough warps to keep the memory busy when N is small, e.g. x_proj's
// 160 rows of 4096), each taking every split-th 16-byte chunk. 16-bit weights: each activation
// rounded to the weights' type in registers, as the contract says. Sums in float in one fixed
// order for a shape, whatever M: each lane's chunks in k order, the warp's butterfly, then the
// split warps' partials in warp order.
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
__global__ void k_gemv(const float* A, int lda, const W* Wt, int N, int K, const float* bias, float* C, int ldc,
                       int split) {
  pdl_enter();
  constexpr int E = 16 / sizeof(W), U = 4;  // elements per 16-byte load, loads in flight
  __shared__ float part[8][M];
  const int warp = int(threadIdx.x / 32), lane = int(threadIdx.x % 32);
  const int n = int(blockIdx.x) * (8 / split) + warp / split, p = warp % split;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  if (n < N) {
    const W* w = Wt + size_t(n) * K;
    const int stride = split * 32 * E;
    for (int k0 = (p * 32 + lane) * E; k0 < K; k0 += U * stride) {
      uint4 wv[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (k0 + u * stride < K) wv[u] = __ldcs(reinterpret_cast<const uint4*>(w + k0 + u * stride));
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int k = k0 + u * stride;
        if (k >= K) break;
        float wf[E];
        w_to_f<W>(wv[u], wf);
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
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    acc[m] = v;
  }
  if (split == 1) {
    if (lane == 0 && n < N)
#pragma unroll
      for (int m = 0; m < M; ++m) C[size_t(m) * ldc + n] = acc[m] + (bias ? bias[n] : 0.f);
    return;
  }
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < M; ++m) part[warp][m] = acc[m];
  __syncthreads();
  if (lane == 0 && p == 0 && n < N)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float v = part[warp][m];
      for (int q = 1; q < split; ++q) v += part[warp + q][m];
      C[size_t(m) * ldc + n] = v + (bias ? bias[n] : 0.f);
    }
}
// Warps per row: more while N rows alone would leave the GPU's warps idle (about 8192 resident on
// an H200) and each warp still gets at least two rounds of loads.
int gemv_split(int N, int K, int E) {
  int split = 1;
  while (split < 8 && size_t(N) * split < 8192 && K >= split * 4 * 32 * E) split *= 2;
  return split;
}
template <class W>
void gemv(void* ctx, const GemmArgs& a) {
  const int split = gemv_split(a.N, a.K, 16 / int(sizeof(W))), rows = 8 / split;
  const unsigned grid = unsigned((a.N + rows - 1) / rows);
  const W* w = static_cast<const W*>(a.W.data);
  switch (a.M) {
    case 1: launch(ctx, k_gemv<W, 1>, grid, 256, a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc, split); break;
    case 2: launch(ctx, k_gemv<W, 2>, grid, 256, a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc, split); break;
    case 3: launch(ctx, k_gemv<W, 3>, grid, 256, a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc, split); break;
    default: launch(ctx, k_gemv<W, 4>, grid, 256, a.A.f(), a.A.ld, w, a.N, a.K, a.bias, a.C, a.ldc, split); break;
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
      no_capture(ctx, "an allocation");
      if (c.a16) MQ_CUDA(cudaFree(c.a16));
      c.a16 = nullptr;
      MQ_CUDA(cudaMalloc(&c.a16, bytes));
      c.a16_bytes = bytes;
    }
    const bool bf = a.W.format == WFormat::BF16;
    if (bf)
      launch(ctx, k_round_half<__nv_bfloat16>, blocks(size_t(a.M) * a.K, 256), 256, a.A.f(), a.A.ld, a.M, a.K,
             static_cast<__nv_bfloat16*>(c.a16));
    else
      launch(ctx, k_round_half<__half>, blocks(size_t(a.M) * a.K, 256), 256, a.A.f(), a.A.ld, a.M, a.K,
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
    launch(ctx, k_bias, blocks(size_t(a.M) * a.N, 256), 256, a.C, a.ldc, a.bias, a.M, a.N);
    launched();
  }
}

__global__ void k_add(float* x, const float* y, size_t n) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}
void c_add(void* ctx, float* x, const float* y, size_t n) {
  if (!n) return;
  launch(ctx, k_add, blocks(n, 256), 256, x, y, n);
  launched();
}

// The end of a kernel whose threads noted the first non-finite index of x in *first (atomicMin):
// the last block to finish records it, if `rec` holds none yet, as check_finite does, and resets
// the scratch words (*first all ones, *done zero) for the next launch. Every thread calls it.
__device__ inline void record_first_nonfinite(const float* x, int32_t tag, NonFinite* rec, unsigned long long* first,
                                              unsigned* done) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x != 0 || atomicAdd(done, 1u) != gridDim.x - 1) return;
  __threadfence();
  const unsigned long long f = atomicExch(first, ~0ull);
  *done = 0;
  if (f != ~0ull && rec->index < 0) {
    rec->index = int64_t(f);
    rec->tag = tag;
    rec->value = __ldcg(x + f);
  }
}

// The block boundary in one launch (AddNormArgs): block t adds row t, notes its first non-finite
// element (atomicMin over the whole tensor), and normalizes the row with the loops of k_rmsnorm /
// k_layernorm (so the same numbers as add, then the norm); the last block to finish records the
// first non-finite element, as k_record, and resets the scratch words for the next use.
__global__ void k_add_norm(float* r, const float* y, const float* w, const float* b, float* out, int d, float eps,
                           bool ln, int32_t tag, NonFinite* rec, unsigned long long* first, unsigned* done) {
  pdl_enter();
  float* xr = r + size_t(blockIdx.x) * d;
  const float* yr = y ? y + size_t(blockIdx.x) * d : nullptr;
  float s = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = yr ? xr[i] + yr[i] : xr[i];
    if (yr) xr[i] = v;
    if (!isfinite(v)) atomicMin(first, (unsigned long long)(size_t(blockIdx.x) * d + i));
    s += ln ? v : v * v;
  }
  if (!ln) {
    const float q = rsqrtf(block_sum(s) / d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[size_t(blockIdx.x) * d + i] = xr[i] * q * w[i];
  } else {
    const float mean = block_sum(s) / d;
    float v = 0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
    const float q = rsqrtf(block_sum(v) / d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[size_t(blockIdx.x) * d + i] = (xr[i] - mean) * q * w[i] + b[i];
  }
  record_first_nonfinite(r, tag, rec, first, done);
}
void c_add_norm(void* ctx, const AddNormArgs& a) {
  if (a.T == 0) return;
  auto* first = C(ctx).scratch + 1;
  launch(ctx, k_add_norm, a.T, 256, a.r, a.y, a.w, a.b, a.out, a.d, a.eps, a.layer_norm, a.tag, a.rec, first,
                                      reinterpret_cast<unsigned*>(first + 1));
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
    no_capture(ctx, "an upload");
    const std::vector<double> hd = ref::hadamard_dense(n);
    std::vector<float> hf(hd.begin(), hd.end());
    MQ_CUDA(cudaMalloc(&H, hf.size() * sizeof(float)));
    MQ_CUDA(cudaMemcpy(H, hf.data(), hf.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  const size_t need = size_t(rows) * n;
  if (c.tmp_n < need) {
    no_capture(ctx, "an allocation");
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
  pdl_enter();
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
  launch(ctx, k_embed, a.T, 256, a.T, a.ids, a.table.data, a.table.format, a.table.cols, a.table.granularity,
                                   a.table.group, a.table.scales, a.out, a.ldo);
  launched();
}

// ---- scoring: per row, the first argmax and log-softmax at the target ----
__global__ void k_score(const float* logits, int V, int ld, const int32_t* targets, double* logprob, int32_t* argmax) {
  pdl_enter();
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
  launch(ctx, k_score, a.rows, 256, a.logits, a.V, a.ld, a.targets, a.logprob, a.argmax);
  launched();
}

// One launch: each thread notes its elements' first non-finite index (atomicMin); the last block
// to finish records it if `rec` holds none (as add_norm), and resets the scratch words.
__global__ void k_finite(const float* x, int64_t n, int32_t tag, NonFinite* rec, unsigned long long* first,
                         unsigned* done) {
  pdl_enter();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(x[i])) atomicMin(first, (unsigned long long)i);
  record_first_nonfinite(x, tag, rec, first, done);
}
void c_finite(void* ctx, const float* x, int64_t n, int32_t tag, NonFinite* rec) {
  if (n == 0) return;
  unsigned long long* first = C(ctx).scratch;  // words 0 (index) and 3 (count)
  launch(ctx, k_finite, std::min<unsigned>(blocks(size_t(n), 256), 1024), 256, x, n, tag, rec, first,
         reinterpret_cast<unsigned*>(first + 3));
}

__global__ void k_gather(const float* src, int lds, const int32_t* idx, int cols, float* dst, int ldd) {
  pdl_enter();
  const float* s = src + size_t(idx[blockIdx.x]) * lds;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[size_t(blockIdx.x) * ldd + c] = s[c];
}
void c_gather(void* ctx, const float* src, int lds, const int32_t* idx, int n, int cols, float* dst, int ldd) {
  if (n == 0) return;
  launch(ctx, k_gather, n, 256, src, lds, idx, cols, dst, ldd);
  launched();
}

// ---- int8 codes: round half to even (rint), clamp, NaN -> 0, as ref ----
__device__ inline float fq(float v, float inv, float scale, float qmax) {
  const float q = v * inv;
  return q != q ? 0.f : fminf(fmaxf(rintf(q), -qmax), qmax) * scale;
}
__global__ void k_quantize(const float* x, int rows, int cols, int ldx, float inv, int8_t* q, int ldq) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * cols) return;
  const size_t r = i / cols, c = i % cols;
  const float v = x[r * ldx + c] * inv;
  q[r * ldq + c] = v != v ? 0 : int8_t(fminf(fmaxf(rintf(v), -127.f), 127.f));
}
void c_quantize(void* ctx, const float* x, int rows, int cols, int ldx, float scale, int8_t* q, int ldq) {
  if (!rows || !cols) return;
  launch(ctx, k_quantize, blocks(size_t(rows) * cols, 256), 256, x, rows, cols, ldx, 1.0f / scale, q, ldq);
  launched();
}
__global__ void k_dequantize(const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * cols) return;
  const size_t r = i / cols, c = i % cols;
  x[r * ldx + c] = float(q[r * ldq + c]) * scale;
}
void c_dequantize(void* ctx, const int8_t* q, int rows, int cols, int ldq, float scale, float* x, int ldx) {
  if (!rows || !cols) return;
  launch(ctx, k_dequantize, blocks(size_t(rows) * cols, 256), 256, q, rows, cols, ldq, scale, x, ldx);
  launched();
}
__global__ void k_fake(float* x, int rows, int cols, int ldx, float inv, float scale, float qmax) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(rows) * cols) return;
  float& v = x[(i / cols) * ldx + i % cols];
  v = fq(v, inv, scale, qmax);
}
void c_fake(void* ctx, float* x, int rows, int cols, int ldx, float scale, int bits) {
  if (!rows || !cols) return;
  launch(ctx, k_fake, blocks(size_t(rows) * cols, 256), 256, x, rows, cols, ldx, 1.0f / scale, scale,
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
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(H) * N * P) return;
  const float v = x[i] * (1.0f / state_scale(H, N, P, s, i));
  q[i] = v != v ? 0 : int8_t(fminf(fmaxf(rintf(v), -127.f), 127.f));
}
__global__ void k_sdq(const int8_t* q, float* x, int H, int N, int P, StateScalesView s) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size_t(H) * N * P) x[i] = float(q[i]) * state_scale(H, N, P, s, i);
}
__global__ void k_sfq(float* x, int H, int N, int P, StateScalesView s, float qmax) {
  pdl_enter();
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(H) * N * P) return;
  const float sc = state_scale(H, N, P, s, i);
  x[i] = fq(x[i], 1.0f / sc, sc, qmax);
}
void c_sq(void* ctx, const float* x, int8_t* q, int H, int N, int P, StateScalesView s) {
  launch(ctx, k_sq, blocks(size_t(H) * N * P, 256), 256, x, q, H, N, P, s);
  launched();
}
void c_sdq(void* ctx, const int8_t* q, float* x, int H, int N, int P, StateScalesView s) {
  launch(ctx, k_sdq, blocks(size_t(H) * N * P, 256), 256, q, x, H, N, P, s);
  launched();
}
void c_sfq(void* ctx, float* x, int H, int N, int P, StateScalesView s, int bits) {
  launch(ctx, k_sfq, blocks(size_t(H) * N * P, 256), 256, x, H, N, P, s, float((1 << (bits - 1)) - 1));
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
  // scratch: check_finite's and add_norm's first index (all ones when unset), add_norm's and
  // check_finite's counts of finished blocks (zero)
  MQ_CUDA(cudaMalloc(&ctx->scratch, 4 * sizeof(unsigned long long)));
  MQ_CUDA(cudaMemset(ctx->scratch, 0xff, 2 * sizeof(unsigned long long)));
  MQ_CUDA(cudaMemset(ctx->scratch + 2, 0, 2 * sizeof(unsigned long long)));
  // cuBLAS's own workspace, so that a captured GEMM allocates nothing
  MQ_CUDA(cudaMalloc(&ctx->blas_ws, kBlasWorkspace));
  if (cublasSetWorkspace(ctx->blas, ctx->blas_ws, kBlasWorkspace) != CUBLAS_STATUS_SUCCESS)
    failf("cuda: cublasSetWorkspace failed on %s", ctx->name.c_str());
  return ctx;
}

}  // namespace cuda_impl
}  // namespace mambaq
