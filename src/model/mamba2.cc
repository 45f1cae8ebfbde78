// Mamba2 mixer: in_proj -> [z, xBC, dt] -> causal conv1d + SiLU over xBC -> SSD scan over heads
// (B, C shared by the heads of a group) -> gated RMSNorm with z -> out_proj. The only Mamba2
// forward: fp32, fake and int8 plans all run it.
#include "model/mixers.h"

namespace mambaq {

void mixer_mamba2(Exec& X, const ModelConfig& c, const LayerDev& L, float* x, float* out) {
  const int T = X.T, dm = c.d_model, di = c.d_inner, H = c.nheads, GN = c.ngroups * c.d_state;
  const int cd = c.conv_dim(), pd = c.in_proj_dim();
  const size_t t = size_t(T);
  // h {T, d_model}
  const Act h = X.point("in_proj:input", Act::floats(x, T, dm, dm), kSlotQIn);
  // zxbcdt {T, pd} = h in_proj^T: z = [:, 0:di], xBC = [:, di:di+cd], dt = [:, di+cd:di+cd+H]
  Act zxbcdt = X.linear(kInProj, h, L.in_proj_b, X.scratch(kSlotInProj, t * pd));
  zxbcdt = X.point("in_proj:output", zxbcdt, kSlotQInProj);
  // xbc {T, cd} = SiLU(conv1d(xBC)): x = [:, 0:di], B = [:, di:di+G*N], C = [:, di+G*N:cd]
  Act xbc = X.conv1d_silu(zxbcdt.slice(di, di + cd), L.conv_b, "xBC_conv_out", kSlotConvOut, kSlotQConv);
  xbc = X.point("xBC_conv_out", xbc, kSlotQConv);
  // y {T, di} = SSD(x, softplus(dt + dt_bias), A, B, C) + D x
  float* y = X.scratch(kSlotScanOut, t * di);
  X.ssd_scan(xbc.slice(0, di), zxbcdt.slice(di + cd, di + cd + H), xbc.slice(di, di + GN), xbc.slice(di + GN, di + 2 * GN),
             y);
  // y = RMSNorm_grouped(y * SiLU(z)) * w   (norm_before_gate = false)
  X.gated_rmsnorm(y, zxbcdt.slice(0, di));
  // out {T, d_model} = (H y) (W H^T)^T when the weights hold the Hadamard fusion
  X.rotate(y, di);
  const Act yo = X.point("out_proj:input", Act::floats(y, T, di, di), kSlotQOut);
  X.linear(kOutProj, yo, L.out_proj_b, out);
}

}  // namespace mambaq
