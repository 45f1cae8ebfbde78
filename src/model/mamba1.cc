// Mamba1 mixer: in_proj -> causal conv1d + SiLU -> x_proj -> dt_proj (+ bias, softplus in the scan)
// -> selective scan gated by SiLU(z) -> out_proj. The only Mamba1 forward: fp32, fake and int8
// plans all run it; each point() is where a plan quantizes (see model/points.h).
#include "model/mixers.h"

namespace mambaq {

void mixer_mamba1(Exec& X, const ModelConfig& c, const LayerDev& L, float* x, float* out) {
  const int T = X.T, dm = c.d_model, di = c.d_inner, N = c.d_state, R = c.dt_rank;
  const size_t t = size_t(T);
  // h {T, d_model}
  const Act h = X.point("in_proj:input", Act::floats(x, T, dm, dm), kSlotQIn);
  // xz {T, 2*d_inner} = h in_proj^T: x = [:, :di], z = [:, di:]
  Act xz = X.linear(kInProj, h, L.in_proj_b, X.scratch(kSlotInProj, t * 2 * di));
  xz = X.point("in_proj:output", xz, kSlotQInProj);
  // u {T, d_inner} = SiLU(conv1d(x)); x_proj and the scan each read it (the scan its own copy,
  // so that --fp-ops can keep one of them in float)
  Act u = X.conv1d_silu(xz.slice(0, di), L.conv_b, "x_proj:input", kSlotConvOut, kSlotQConv);
  Act u_ssm = X.fork(u, kSlotUssm);
  u = X.point("x_proj:input", u, kSlotQConv);
  u_ssm = X.point("ssm:input", u_ssm, kSlotQConv);
  // dbc {T, R + 2N} = u x_proj^T: [dt_low {R}, B {N}, C {N}]
  Act dbc = X.linear(kXProj, u, {}, X.scratch(kSlotXProj, t * (R + 2 * N)));
  dbc = X.point("x_proj:output", dbc, kSlotQXProj);
  // delta {T, d_inner} = dt_low dt_proj^T (its bias is added inside the scan, before softplus)
  Act delta = X.linear(kDtProj, dbc.slice(0, R), {}, X.scratch(kSlotDelta, t * di));
  delta = X.point("dt_proj:output", delta, kSlotQDelta);
  // y {T, d_inner} = selective_scan(u, delta, A, B, C, D) * SiLU(z)
  float* y = X.scratch(kSlotScanOut, t * di);
  X.selective_scan(u_ssm, delta, dbc.slice(R, R + N), dbc.slice(R + N, R + 2 * N), xz.slice(di, 2 * di), y);
  // out {T, d_model} = (H y) (W H^T)^T when the weights hold the Hadamard fusion
  X.rotate(y, di);
  const Act yo = X.point("out_proj:input", Act::floats(y, T, di, di), kSlotQOut);
  X.linear(kOutProj, yo, L.out_proj_b, out);
}

}  // namespace mambaq
