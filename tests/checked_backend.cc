// The test-only `checked` backend: ref's kernels behind a memory that records every buffer it
// allocates, and a check of every pointer each operation receives. A pointer into none of its
// buffers (a host vector, an mmap'd weight, a thread-local scratch) fails the call, naming the op
// and the argument: the property a device backend depends on. Its memory is not the host's
// (host_memory = false), so sessions upload weights and move activations as for a GPU.
#include <cstring>
#include <map>
#include <mutex>

#include "dev.h"
#include "kernels/host_memory.h"
#include "mambaq/error.h"

namespace mqtest {

using namespace mambaq;

namespace {

struct Checked {
  std::mutex mu;
  std::map<uintptr_t, size_t> live;  // start -> bytes
  size_t checks = 0;
  BackendRef inner = open_backend("ref");
  const Backend& r() const { return inner->get(); }
};
Checked& G() {
  static Checked* c = new Checked;
  return *c;
}

void check(const void* p, const char* op, const char* what) {
  if (!p) return;
  Checked& g = G();
  std::lock_guard<std::mutex> lk(g.mu);
  const auto a = uintptr_t(p);
  auto it = g.live.upper_bound(a);
  if (it == g.live.begin() || a >= std::prev(it)->first + std::prev(it)->second)
    fail("checked backend: {} received {} = {}, which it did not allocate (a host pointer reached a kernel)", op, what,
         p);
  ++g.checks;
}
void check_act(const ActView& a, const char* op, const char* what) {
  check(a.data, op, what);
  check(a.col_scale, op, what);
}
void check_w(const WeightView& w, const char* op, const char* what) {
  check(w.data, op, what);
  check(w.scales, op, what);
}
void check_batch(const Batch& b, const char* op) {
  check(b.offs_dev, op, "batch offsets");
  if (std::memcmp(b.offs_dev, b.offs, sizeof(int) * size_t(b.nseq + 1)) != 0)
    fail("checked backend: {}: the batch offsets in backend memory differ from the host's", op);
}
void check_states(const StateView& s, int nseq, const char* op) {
  if (!s.seq) return;
  check(s.seq_dev, op, "state pointer array");
  if (std::memcmp(s.seq_dev, s.seq, sizeof(void*) * size_t(nseq)) != 0)
    fail("checked backend: {}: the state pointers in backend memory differ from the host's", op);
  for (int i = 0; i < nseq; ++i) check(s.seq[i], op, "a sequence state");
}

void* c_alloc(void*, size_t bytes) {
  void* p = host_memory::alloc(nullptr, bytes);
  std::lock_guard<std::mutex> lk(G().mu);
  G().live[uintptr_t(p)] = bytes ? bytes : 1;
  return p;
}
void c_free(void*, void* p) {
  {
    std::lock_guard<std::mutex> lk(G().mu);
    if (!G().live.erase(uintptr_t(p))) fail("checked backend: free of a pointer it did not allocate");
  }
  host_memory::release(nullptr, p);
}
void c_upload(void*, void* dst, const void* src, size_t n) {
  check(dst, "upload", "destination");
  std::memcpy(dst, src, n);
}
void c_download(void*, void* dst, const void* src, size_t n) {
  check(src, "download", "source");
  std::memcpy(dst, src, n);
}
void c_copy(void*, void* dst, const void* src, size_t n) {
  check(dst, "copy", "destination"), check(src, "copy", "source");
  std::memmove(dst, src, n);
}
void c_copy2d(void*, void* dst, size_t ldd, const void* src, size_t lds, size_t rb, size_t rows) {
  check(dst, "copy2d", "destination"), check(src, "copy2d", "source");
  host_memory::copy2d(nullptr, dst, ldd, src, lds, rb, rows);
}
void c_fill(void*, void* dst, int byte, size_t n) {
  check(dst, "fill", "destination");
  std::memset(dst, byte, n);
}

const Backend& R() { return G().r(); }

void c_rmsnorm(void*, const float* x, const float* w, float* out, int T, int d, float eps) {
  check(x, "rmsnorm", "x"), check(w, "rmsnorm", "w"), check(out, "rmsnorm", "out");
  R().rmsnorm(nullptr, x, w, out, T, d, eps);
}
void c_layernorm(void*, const float* x, const float* w, const float* b, float* out, int T, int d, float eps) {
  check(x, "layernorm", "x"), check(w, "layernorm", "w"), check(b, "layernorm", "b"), check(out, "layernorm", "out");
  R().layernorm(nullptr, x, w, b, out, T, d, eps);
}
void c_conv(void*, const ConvArgs& a) {
  const char* op = "conv1d_silu";
  check_batch(a.b, op), check_act(a.x, op, "x"), check_w(a.w, op, "w"), check(a.bias, op, "bias");
  check_states(a.st, a.b.nseq, op), check(a.out, op, "out"), check(a.out_scale, op, "out_scale");
  R().conv1d_silu(nullptr, a);
}
void c_scan(void*, const ScanArgs& a) {
  const char* op = "selective_scan";
  check_batch(a.b, op);
  check_act(a.u, op, "u"), check_act(a.delta, op, "delta"), check_act(a.B, op, "B"), check_act(a.C, op, "C");
  check_act(a.z, op, "z"), check(a.delta_bias, op, "delta_bias"), check(a.A, op, "A"), check(a.Dskip, op, "D");
  check_states(a.st, a.b.nseq, op), check(a.y, op, "y");
  R().selective_scan(nullptr, a);
}
void c_ssd(void*, const SsdArgs& a) {
  const char* op = "ssd_scan";
  check_batch(a.b, op);
  check_act(a.x, op, "x"), check_act(a.dt, op, "dt"), check_act(a.B, op, "B"), check_act(a.C, op, "C");
  check(a.dt_bias, op, "dt_bias"), check(a.A, op, "A"), check(a.Dskip, op, "D");
  check_states(a.st, a.b.nseq, op), check(a.qs.scale, op, "state scales"), check(a.qs.dim_end, op, "state dim_end");
  check(a.y, op, "y");
  R().ssd_scan(nullptr, a);
}
void c_gated(void*, float* y, const float* z, int ldz, const float* w, int T, int D, int g, float eps, bool nbg) {
  check(y, "gated_rmsnorm", "y"), check(z, "gated_rmsnorm", "z"), check(w, "gated_rmsnorm", "w");
  R().gated_rmsnorm(nullptr, y, z, ldz, w, T, D, g, eps, nbg);
}
void c_gemm(void*, const GemmArgs& a) {
  check_act(a.A, "gemm", "A"), check_w(a.W, "gemm", "W"), check(a.bias, "gemm", "bias"), check(a.C, "gemm", "C");
  R().gemm(nullptr, a);
}
void c_add(void*, float* x, const float* y, size_t n) {
  check(x, "add", "x"), check(y, "add", "y");
  R().add(nullptr, x, y, n);
}
void c_hadamard(void*, float* x, int rows, int n, int ld, bool tr) {
  check(x, "hadamard", "x");
  R().hadamard(nullptr, x, rows, n, ld, tr);
}
void c_embed(void*, const EmbedArgs& a) {
  check(a.ids, "embed", "ids"), check_w(a.table, "embed", "table"), check(a.out, "embed", "out");
  R().embed(nullptr, a);
}
void c_score(void*, const ScoreArgs& a) {
  check(a.logits, "score_rows", "logits"), check(a.targets, "score_rows", "targets");
  check(a.logprob, "score_rows", "logprob"), check(a.argmax, "score_rows", "argmax");
  R().score_rows(nullptr, a);
}
void c_finite(void*, const float* x, int64_t n, int32_t tag, NonFinite* rec) {
  check(x, "check_finite", "x"), check(rec, "check_finite", "record");
  R().check_finite(nullptr, x, n, tag, rec);
}
void c_add_norm(void*, const AddNormArgs& a) {
  check(a.r, "add_norm", "r"), check(a.w, "add_norm", "w"), check(a.out, "add_norm", "out"), check(a.rec, "add_norm", "record");
  if (a.y) check(a.y, "add_norm", "y");
  if (a.b) check(a.b, "add_norm", "b");
  R().add_norm(nullptr, a);
}
void c_gather(void*, const float* src, int lds, const int32_t* idx, int n, int cols, float* dst, int ldd) {
  check(src, "gather_rows", "src"), check(idx, "gather_rows", "idx"), check(dst, "gather_rows", "dst");
  R().gather_rows(nullptr, src, lds, idx, n, cols, dst, ldd);
}
void c_quantize(void*, const float* x, int rows, int cols, int ldx, float s, int8_t* q, int ldq) {
  check(x, "quantize", "x"), check(q, "quantize", "q");
  R().quantize(nullptr, x, rows, cols, ldx, s, q, ldq);
}
void c_dequantize(void*, const int8_t* q, int rows, int cols, int ldq, float s, float* x, int ldx) {
  check(q, "dequantize", "q"), check(x, "dequantize", "x");
  R().dequantize(nullptr, q, rows, cols, ldq, s, x, ldx);
}
void c_fake(void*, float* x, int rows, int cols, int ldx, float s, int bits) {
  check(x, "fake_quantize", "x");
  R().fake_quantize(nullptr, x, rows, cols, ldx, s, bits);
}
void c_sq(void*, const float* x, int8_t* q, int H, int N, int P, StateScalesView s) {
  check(x, "state_quantize", "x"), check(q, "state_quantize", "q"), check(s.scale, "state_quantize", "scale");
  check(s.dim_end, "state_quantize", "dim_end");
  R().state_quantize(nullptr, x, q, H, N, P, s);
}
void c_sdq(void*, const int8_t* q, float* x, int H, int N, int P, StateScalesView s) {
  check(x, "state_dequantize", "x"), check(q, "state_dequantize", "q"), check(s.scale, "state_dequantize", "scale");
  check(s.dim_end, "state_dequantize", "dim_end");
  R().state_dequantize(nullptr, q, x, H, N, P, s);
}
void c_sfq(void*, float* x, int H, int N, int P, StateScalesView s, int bits) {
  check(x, "state_fake_quantize", "x"), check(s.scale, "state_fake_quantize", "scale");
  check(s.dim_end, "state_fake_quantize", "dim_end");
  R().state_fake_quantize(nullptr, x, H, N, P, s, bits);
}

const Backend kChecked{
    .name = "checked",
    .isa = "scalar (ref), every pointer checked",
    .device = "checked host memory",
    .host_memory = false,
    .alloc = c_alloc,
    .free = c_free,
    .upload = c_upload,
    .download = c_download,
    .copy = c_copy,
    .copy2d = c_copy2d,
    .fill = c_fill,
    .synchronize = host_memory::synchronize,
    .supports = host_memory::supports,
    .rmsnorm = c_rmsnorm,
    .layernorm = c_layernorm,
    .conv1d_silu = c_conv,
    .selective_scan = c_scan,
    .ssd_scan = c_ssd,
    .gated_rmsnorm = c_gated,
    .gemm = c_gemm,
    .add = c_add,
    .hadamard = c_hadamard,
    .embed = c_embed,
    .score_rows = c_score,
    .check_finite = c_finite,
    .add_norm = c_add_norm,
    .gather_rows = c_gather,
    .quantize = c_quantize,
    .dequantize = c_dequantize,
    .fake_quantize = c_fake,
    .state_quantize = c_sq,
    .state_dequantize = c_sdq,
    .state_fake_quantize = c_sfq,
};

}  // namespace

std::string checked_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_backend({.name = "checked",
                      .description = "test only: ref behind a memory that refuses pointers it did not allocate",
                      .available = [] { return std::string(); },
                      .open = [](const std::string&) -> BackendRef {
                        static const BackendRef b = std::make_shared<BackendHandle>(kChecked, nullptr);
                        return b;
                      },
                      .rank = -1});
  });
  return "checked";
}

std::vector<std::string> test_backends() {
  checked_backend();
  return backend_names();
}

size_t checked_pointer_count() {
  std::lock_guard<std::mutex> lk(G().mu);
  return G().checks;
}

}  // namespace mqtest
