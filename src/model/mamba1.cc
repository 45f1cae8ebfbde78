// Mamba1 mixer: in_proj -> causal conv1d + SiLU -> x_proj -> dt_proj + softplus -> selective scan
// -> gate with SiLU(z) -> out_proj.
#include <algorithm>
#include <vector>

#include "kernels/cpu/ops.h"
#include "mambaq/model.h"
#include "quant/hadamard.h"

namespace mambaq {

void Model::mixer_mamba1(int l, float* x, float* out, int T, std::span<const int> offs,
                         float* const* conv_st, float* const* ssm_st, Tap* tap) const {
  const LayerWeights& L = w_.layers[size_t(l)];
  const int dm = cfg_.d_model, di = cfg_.d_inner, N = cfg_.d_state, R = cfg_.dt_rank, K = cfg_.d_conv;
  const int nseq = int(offs.size()) - 1;
  // xz {T, 2*d_inner} = x {T, d_model} in_proj^T; x part = [:, :di], z part = [:, di:]
  float* xz = scratch(kSlotInProj, size_t(T) * 2 * di);
  if (tap) tap->on(l, "in_proj:input", x, T, dm, offs);
  cpu::gemm(T, 2 * di, dm, x, dm, L.in_proj.data, L.in_proj_b.data, xz, 2 * di);
  if (tap) tap->on(l, "in_proj:output", xz, T, 2 * di, offs);
  // u {T, d_inner} = SiLU(conv1d(x part))
  float* u = scratch(kSlotConvOut, size_t(T) * di);
  cpu::conv1d_silu(nseq, offs.data(), xz, 2 * di, di, K, L.conv_w.data, L.conv_b.data, conv_st,
                   u, di);
  // The scan reads its own copy of u when tapped, so x_proj's input and the SSM input can be
  // quantized independently (--fp-ops); both taps see the same values.
  float* u_ssm = u;
  if (tap) {
    u_ssm = scratch(kSlotUssm, size_t(T) * di);
    std::copy_n(u, size_t(T) * di, u_ssm);
    tap->on(l, "x_proj:input", u, T, di, offs);
    tap->on(l, "ssm:input", u_ssm, T, di, offs);
  }
  // dbc {T, R + 2N} = u x_proj^T: [dt_low {R}, B {N}, C {N}]
  float* dbc = scratch(kSlotXProj, size_t(T) * (R + 2 * N));
  cpu::gemm(T, R + 2 * N, di, u, di, L.x_proj.data, nullptr, dbc, R + 2 * N);
  if (tap) tap->on(l, "x_proj:output", dbc, T, R + 2 * N, offs);
  // delta {T, d_inner} = dt_low dt_proj^T (its bias is added inside the scan, before softplus)
  float* delta = scratch(kSlotDelta, size_t(T) * di);
  cpu::gemm(T, di, R, dbc, R + 2 * N, L.dt_proj_w.data, nullptr, delta, di);
  if (tap) tap->on(l, "dt_proj:output", delta, T, di, offs);
  // y {T, d_inner} = selective_scan(u, delta, A, B, C, D) * SiLU(z)
  float* y = scratch(kSlotScanOut, size_t(T) * di);
  cpu::selective_scan(nseq, offs.data(), di, N, u_ssm, di, delta, di, L.dt_proj_b.data, L.A.data(),
                      dbc + R, R + 2 * N, dbc + R + N, R + 2 * N, L.D.data, xz + di, 2 * di,
                      ssm_st, y, di);
  if (hadamard_out_proj) hadamard_transform(y, T, di, di);
  if (tap) tap->on(l, "out_proj:input", y, T, di, offs);
  // out {T, d_model} = y out_proj^T
  cpu::gemm(T, dm, di, y, di, L.out_proj.data, L.out_proj_b.data, out, dm);
}

}  // namespace mambaq
