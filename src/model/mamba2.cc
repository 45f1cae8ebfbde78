// Mamba2 mixer: in_proj -> [z, xBC, dt] -> causal conv1d + SiLU over xBC -> SSD scan over heads
// (B, C shared by the heads of a group) -> gated RMSNorm with z -> out_proj.
#include <vector>

#include "kernels/cpu/ops.h"
#include "mambaq/model.h"
#include "quant/hadamard.h"

namespace mambaq {

void Model::mixer_mamba2(int l, float* x, float* out, int T, std::span<const int> offs,
                         float* const* conv_st, float* const* ssm_st, Tap* tap) const {
  const LayerWeights& L = w_.layers[size_t(l)];
  const int dm = cfg_.d_model, di = cfg_.d_inner, N = cfg_.d_state, G = cfg_.ngroups, H = cfg_.nheads,
            P = cfg_.headdim, K = cfg_.d_conv;
  const int nseq = int(offs.size()) - 1;
  const int cd = cfg_.conv_dim(), pd = cfg_.in_proj_dim();
  // zxbcdt {T, pd}: z = [:, 0:di], xBC = [:, di:di+cd], dt = [:, di+cd:di+cd+H]
  float* zxbcdt = scratch(kSlotInProj, size_t(T) * pd);
  if (tap) tap->on(l, "in_proj:input", x, T, dm, offs);
  cpu::gemm(T, pd, dm, x, dm, L.in_proj.data, L.in_proj_b.data, zxbcdt, pd);
  if (tap) tap->on(l, "in_proj:output", zxbcdt, T, pd, offs);
  // xbc {T, cd} = SiLU(conv1d(xBC)): x = [:, 0:di], B = [:, di:di+G*N], C = [:, di+G*N:cd]
  float* xbc = scratch(kSlotConvOut, size_t(T) * cd);
  cpu::conv1d_silu(nseq, offs.data(), zxbcdt + di, pd, cd, K, L.conv_w.data, L.conv_b.data, conv_st,
                   xbc, cd);
  if (tap) tap->on(l, "xBC_conv_out", xbc, T, cd, offs);
  // y {T, di} = SSD(x, softplus(dt + dt_bias), A, B, C) + D x
  float* y = scratch(kSlotScanOut, size_t(T) * di);
  cpu::ssd_scan(nseq, offs.data(), H, P, G, N, xbc, cd, zxbcdt + di + cd, pd, L.dt_bias.data,
                L.A.data(), xbc + di, cd, xbc + di + G * N, cd, L.D.data, ssm_st, y, di);
  // y = RMSNorm_grouped(y * SiLU(z)) * w   (norm_before_gate = false)
  cpu::gated_rmsnorm(y, zxbcdt, pd, L.gnorm.data, T, di, di / G, cfg_.norm_eps, cfg_.norm_before_gate);
  if (hadamard_out_proj) hadamard_transform(y, T, di, di);
  if (tap) tap->on(l, "out_proj:input", y, T, di, offs);
  cpu::gemm(T, dm, di, y, di, L.out_proj.data, L.out_proj_b.data, out, dm);
}

}  // namespace mambaq
