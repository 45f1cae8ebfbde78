// Micro-benchmarks of the CPU kernels at mamba-130m / mamba2-130m shapes (Google Benchmark).
//   build/bench/mambaq_bench_kernels --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <oneapi/dnnl/dnnl.h>

#include <random>
#include <vector>

#include "core/threads.h"
#include "kernels/backend.h"

using namespace mambaq;

// The kernels runs use: the widest cpu variant this CPU has (kernels/backend.h).
// The default backend (cpu: the widest variant this CPU runs); its memory is the host's.
static const Backend& cpu() {
  static const BackendRef b = default_backend();
  return b->get();
}
static void* cx() { return cpu().ctx; }
static GemmArgs gemm_args(int M, int N, int K, ActView A, WeightView W, float* C) {
  GemmArgs g;
  g.M = M, g.N = N, g.K = K, g.A = A, g.W = W, g.C = C, g.ldc = N;
  return g;
}

static std::vector<float> rnd(size_t n, float mean = 0.f, float sd = 1.f) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// args: M, N, K
static void BM_Gemm(benchmark::State& s) {
  const int M = int(s.range(0)), N = int(s.range(1)), K = int(s.range(2));
  auto A = rnd(size_t(M) * K), W = rnd(size_t(N) * K);
  std::vector<float> C(size_t(M) * N);
  const GemmArgs g = gemm_args(M, N, K, act_f32(A.data(), K), w_f32(W.data(), N, K), C.data());
  for (auto _ : s) cpu().gemm(cx(), g);
  s.counters["GFLOPS"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                            benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Gemm)->Args({1024, 3072, 768})->Args({1024, 768, 1536})->Args({1024, 48, 1536})->Args({1, 3072, 768})
    ->Args({16, 50280, 768})->Args({1, 50280, 768})->UseRealTime();
// The peer: oneDNN's sgemm on the same shapes (what the fp32 GEMM was before kernels/cpu/gemm.cc,
// which gives every row the same result whatever the row and thread count; oneDNN does not).
static void BM_GemmOneDnnPeer(benchmark::State& s) {
  const int M = int(s.range(0)), N = int(s.range(1)), K = int(s.range(2));
  auto A = rnd(size_t(M) * K), W = rnd(size_t(N) * K);
  std::vector<float> C(size_t(M) * N);
  for (auto _ : s) dnnl_sgemm('N', 'T', M, N, K, 1.0f, A.data(), K, W.data(), K, 0.0f, C.data(), N);
  s.counters["GFLOPS"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                            benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GemmOneDnnPeer)->Args({1024, 3072, 768})->Args({1024, 768, 1536})->Args({1024, 48, 1536})->Args({1, 3072, 768})
    ->Args({16, 50280, 768})->Args({1, 50280, 768})->UseRealTime();

// int8 GEMM (Quamba W8A8), same shapes plus dt_proj's small K; args: M, N, K
static void BM_GemmS8(benchmark::State& s) {
  const int M = int(s.range(0)), N = int(s.range(1)), K = int(s.range(2));
  std::mt19937 rng(2);
  std::vector<int8_t> A(size_t(M) * K), W(size_t(N) * K);
  for (auto& x : A) x = int8_t(int(rng() % 255) - 127);
  for (auto& x : W) x = int8_t(int(rng() % 255) - 127);
  std::vector<float> C(size_t(M) * N);
  const float ws = 0.01f;
  const GemmArgs g = gemm_args(M, N, K, act_s8(A.data(), K, 0.02f), w_s8(W.data(), N, K, &ws, false, ws), C.data());
  for (auto _ : s) cpu().gemm(cx(), g);
  s.counters["GOPS"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate,
                                          benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GemmS8)->Args({1024, 3072, 768})->Args({1024, 768, 1536})->Args({1024, 1536, 48})->Args({1, 3072, 768})
    ->UseRealTime();
BENCHMARK(BM_Gemm)->Args({1024, 1536, 48})->UseRealTime();

// 4-bit weights (Quamba2), groups of 128: W4A16 (float activations) and W4A8 (int8 activations);
// args: M, N, K. The decode shapes stream N * K / 2 bytes of codes (+ N * K / 128 * 4 of scales).
static std::vector<uint8_t> rnd_s4(size_t n) {
  std::mt19937 rng(3);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(rng());
  return v;
}
static void BM_GemmW4A16(benchmark::State& s) {
  const int M = int(s.range(0)), N = int(s.range(1)), K = int(s.range(2));
  auto A = rnd(size_t(M) * K);
  auto W = rnd_s4(size_t(N) * K / 2);
  auto ws = rnd(size_t(N) * K / 128, 0.02f, 0.001f);
  std::vector<float> C(size_t(M) * N);
  const GemmArgs g = gemm_args(M, N, K, act_f32(A.data(), K), w_s4(W.data(), N, K, 128, ws.data()), C.data());
  for (auto _ : s) cpu().gemm(cx(), g);
  s.counters["GB/s"] = benchmark::Counter(double(N) * K / 2 + double(N) * K / 32, benchmark::Counter::kIsIterationInvariantRate,
                                          benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GemmW4A16)->Args({1024, 3072, 768})->Args({1, 3072, 768})->Args({1, 50280, 768})->UseRealTime();
static void BM_GemmW4A8(benchmark::State& s) {
  const int M = int(s.range(0)), N = int(s.range(1)), K = int(s.range(2));
  std::mt19937 rng(4);
  std::vector<int8_t> A(size_t(M) * K);
  for (auto& x : A) x = int8_t(int(rng() % 255) - 127);
  auto W = rnd_s4(size_t(N) * K / 2);
  auto ws = rnd(size_t(N) * K / 128, 0.02f, 0.001f);
  std::vector<float> C(size_t(M) * N);
  const GemmArgs g = gemm_args(M, N, K, act_s8(A.data(), K, 0.02f), w_s4(W.data(), N, K, 128, ws.data()), C.data());
  for (auto _ : s) cpu().gemm(cx(), g);
  s.counters["GB/s"] = benchmark::Counter(double(N) * K / 2 + double(N) * K / 32, benchmark::Counter::kIsIterationInvariantRate,
                                          benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GemmW4A8)->Args({1024, 3072, 768})->Args({1, 3072, 768})->Args({1, 50280, 768})->UseRealTime();

// int8 conv1d + SiLU + requantization, mamba-130m: C = 1536, K = 4
static void BM_Conv1dS8(benchmark::State& s) {
  const int T = int(s.range(0)), C = 1536, K = 4;
  std::mt19937 rng(3);
  std::vector<int8_t> x(size_t(T) * C), w(size_t(C) * K), out(size_t(T) * C);
  for (auto& v : x) v = int8_t(int(rng() % 255) - 127);
  for (auto& v : w) v = int8_t(int(rng() % 255) - 127);
  auto b = rnd(size_t(C));
  std::vector<float> os(size_t(C), 0.02f);
  const int offs[2] = {0, T};
  const float wsc = 0.01f;
  ConvArgs a;
  a.b = host_batch(1, offs), a.C = C, a.K = K, a.x = act_s8(x.data(), C, 0.02f);
  a.w = w_s8(w.data(), C, K, &wsc, false, wsc), a.bias = b.data(), a.st.dtype = DType::I8;
  a.out = out.data(), a.ldo = C, a.out_scale = os.data();
  for (auto _ : s) cpu().conv1d_silu(cx(), a);
  s.SetItemsProcessed(int64_t(s.iterations()) * T);
}
BENCHMARK(BM_Conv1dS8)->Arg(1024)->UseRealTime();

// Mamba1 scan, mamba-130m: D = 1536, N = 16; T tokens, one sequence
static void BM_SelectiveScan(benchmark::State& s) {
  const int T = int(s.range(0)), D = 1536, N = 16;
  auto u = rnd(size_t(T) * D), dl = rnd(size_t(T) * D, -3.f), z = rnd(size_t(T) * D), bc = rnd(size_t(T) * 2 * N);
  auto A = rnd(size_t(D) * N, -4.f, 1.f);
  std::vector<float> y(size_t(T) * D);
  const int offs[2] = {0, T};
  ScanArgs a;
  a.b = host_batch(1, offs), a.D = D, a.N = N;
  a.u = act_f32(u.data(), D), a.delta = act_f32(dl.data(), D), a.B = act_f32(bc.data(), 2 * N);
  a.C = act_f32(bc.data() + N, 2 * N), a.z = act_f32(z.data(), D), a.A = A.data();
  a.y = y.data(), a.ldy = D;
  for (auto _ : s) cpu().selective_scan(cx(), a);
  s.SetItemsProcessed(int64_t(s.iterations()) * T);
}
BENCHMARK(BM_SelectiveScan)->Arg(1)->Arg(1024)->UseRealTime();

// Mamba2 scan, mamba2-130m: 24 heads x 64, N = 128
static void BM_SsdScan(benchmark::State& s) {
  const int T = int(s.range(0)), H = 24, P = 64, N = 128;
  auto x = rnd(size_t(T) * H * P), dt = rnd(size_t(T) * H, -3.f), bc = rnd(size_t(T) * 2 * N), A = rnd(size_t(H), -4.f);
  auto bias = rnd(size_t(H)), Dk = rnd(size_t(H));
  std::vector<float> y(size_t(T) * H * P);
  const int offs[2] = {0, T};
  SsdArgs a;
  a.b = host_batch(1, offs), a.H = H, a.P = P, a.G = 1, a.N = N;
  a.x = act_f32(x.data(), H * P), a.dt = act_f32(dt.data(), H), a.B = act_f32(bc.data(), 2 * N);
  a.C = act_f32(bc.data() + N, 2 * N), a.dt_bias = bias.data(), a.A = A.data(), a.Dskip = Dk.data();
  a.y = y.data(), a.ldy = H * P;
  for (auto _ : s) cpu().ssd_scan(cx(), a);
  s.SetItemsProcessed(int64_t(s.iterations()) * T);
}
BENCHMARK(BM_SsdScan)->Arg(1)->Arg(1024)->UseRealTime();

static void BM_Conv1d(benchmark::State& s) {
  const int T = int(s.range(0)), C = 1536, K = 4;
  auto x = rnd(size_t(T) * C), w = rnd(size_t(C) * K), b = rnd(size_t(C));
  std::vector<float> y(size_t(T) * C);
  const int offs[2] = {0, T};
  ConvArgs a;
  a.b = host_batch(1, offs), a.C = C, a.K = K, a.x = act_f32(x.data(), C), a.w = w_f32(w.data(), C, K);
  a.bias = b.data(), a.out = y.data(), a.ldo = C;
  for (auto _ : s) cpu().conv1d_silu(cx(), a);
  s.SetItemsProcessed(int64_t(s.iterations()) * T);
}
BENCHMARK(BM_Conv1d)->Arg(1024)->UseRealTime();

static void BM_ScoreRow(benchmark::State& s) {
  const int V = 50280;
  auto l = rnd(size_t(V));
  double lp;
  int32_t arg;
  const int32_t target = 17;
  ScoreArgs a;
  a.rows = 1, a.V = V, a.ld = V, a.logits = l.data(), a.targets = &target, a.logprob = &lp, a.argmax = &arg;
  for (auto _ : s) {
    cpu().score_rows(cx(), a);
    benchmark::DoNotOptimize(lp);
  }
}
BENCHMARK(BM_ScoreRow);
