// The int8 mixers (Quamba W8A8): the same dataflow as mamba1.cc / mamba2.cc, with every
// calibrated activation carried as int8 codes between integer kernels. Each quantize() below
// sits exactly where the fake-quant simulation's tap quantize-dequantizes, so int8 and fake
// differ only by float rounding (tests/test_quamba.cc states the bound).
#include <vector>

#include "kernels/cpu/ops.h"
#include "mambaq/model.h"
#include "quant/hadamard.h"
#include "quant/quantized.h"

namespace mambaq {

namespace {
// gemm over int8 activations with a QuantizedWeight {N, K}
void qgemm(int M, const int8_t* A, int lda, float a_scale, const QuantizedWeight& W, const float* bias, float* C,
           int ldc) {
  cpu::gemm_s8(M, W.rows, W.cols, A, lda, a_scale, W.codes(), W.scales.data(),
               W.granularity == Granularity::Channel, bias, C, ldc);
}

// The SSM states of the sequences, int8 between calls, float during the scan.
struct FloatStates {
  std::vector<float*> ptrs;
  float* buf = nullptr;
  size_t n = 0;
  FloatStates(int8_t* const* q, int nseq, size_t size, float scale) : ptrs(size_t(nseq), nullptr), n(size) {
    buf = scratch(kSlotQState, size * size_t(nseq));
    for (int s = 0; s < nseq; ++s)
      if (q[s]) {
        ptrs[size_t(s)] = buf + size * size_t(s);
        for (size_t i = 0; i < size; ++i) ptrs[size_t(s)][i] = float(q[s][i]) * scale;
      }
  }
  void store(int8_t* const* q, float scale) const {
    for (size_t s = 0; s < ptrs.size(); ++s)
      if (ptrs[s]) cpu::quantize(ptrs[s], 1, int(n), int(n), scale, q[s], int(n));
  }
};
}  // namespace

void Model::mixer_mamba1_int8(int l, const float* x, float* out, int T, std::span<const int> offs,
                              int8_t* const* conv_st, int8_t* const* ssm_st) const {
  const LayerWeights& L = w_.layers[size_t(l)];
  const QLayer& Q = q_->layers[size_t(l)];
  const int dm = cfg_.d_model, di = cfg_.d_inner, N = cfg_.d_state, R = cfg_.dt_rank, K = cfg_.d_conv;
  const int nseq = int(offs.size()) - 1, W = R + 2 * N;
  // xq {T, d_model} int8
  int8_t* xq = scratch_i8(kSlotQIn, size_t(T) * dm);
  cpu::quantize(x, T, dm, dm, Q.s_in, xq, dm);
  // xz {T, 2*d_inner} = xq in_proj^T, requantized: x part [:, :di], z part [:, di:]
  float* xz = scratch(kSlotInProj, size_t(T) * 2 * di);
  qgemm(T, xq, dm, Q.s_in, Q.in_proj, L.in_proj_b.data, xz, 2 * di);
  int8_t* xzq = scratch_i8(kSlotQInProj, size_t(T) * 2 * di);
  cpu::quantize(xz, T, 2 * di, 2 * di, Q.s_xz, xzq, 2 * di);
  // uq {T, d_inner} = q(SiLU(conv1d(x part)))
  int8_t* uq = scratch_i8(kSlotQConv, size_t(T) * di);
  cpu::conv1d_s8_silu(nseq, offs.data(), xzq, 2 * di, Q.s_xz, di, K, Q.conv.codes(), Q.conv.scales[0],
                      L.conv_b.data, conv_st, Q.conv_out_scale.data(), uq, di);
  // dbcq {T, R + 2N} = q(uq x_proj^T): [dt_low, B, C]
  float* dbc = scratch(kSlotXProj, size_t(T) * W);
  qgemm(T, uq, di, Q.s_u, Q.x_proj, nullptr, dbc, W);
  int8_t* dbcq = scratch_i8(kSlotQXProj, size_t(T) * W);
  cpu::quantize(dbc, T, W, W, Q.s_dbc, dbcq, W);
  // deltaq {T, d_inner} = q(dt_low dt_proj^T) (dt bias added in the scan, before softplus)
  float* delta = scratch(kSlotDelta, size_t(T) * di);
  qgemm(T, dbcq, W, Q.s_dbc, Q.dt_proj, nullptr, delta, di);
  int8_t* deltaq = scratch_i8(kSlotQDelta, size_t(T) * di);
  cpu::quantize(delta, T, di, di, Q.s_delta, deltaq, di);
  // y {T, d_inner} = selective_scan(u, delta, A, B, C, D) * SiLU(z), inputs int8, math fp32
  float* y = scratch(kSlotScanOut, size_t(T) * di);
  FloatStates st(ssm_st, nseq, cfg_.ssm_state_size(), Q.s_state);
  cpu::selective_scan_s8(nseq, offs.data(), di, N, uq, di, Q.s_u, deltaq, di, Q.s_delta, L.dt_proj_b.data,
                         L.A.data(), dbcq + R, W, Q.s_dbc, dbcq + R + N, W, Q.s_dbc, L.D.data, xzq + di, 2 * di, Q.s_xz,
                         st.ptrs.data(), y, di);
  st.store(ssm_st, Q.s_state);
  // out {T, d_model} = q(H y) (out_proj H^T)^T
  hadamard_transform(y, T, di, di);
  int8_t* yq = scratch_i8(kSlotQOut, size_t(T) * di);
  cpu::quantize(y, T, di, di, Q.s_out_in, yq, di);
  qgemm(T, yq, di, Q.s_out_in, Q.out_proj, L.out_proj_b.data, out, dm);
}

void Model::mixer_mamba2_int8(int l, const float* x, float* out, int T, std::span<const int> offs,
                              int8_t* const* conv_st, int8_t* const* ssm_st) const {
  const LayerWeights& L = w_.layers[size_t(l)];
  const QLayer& Q = q_->layers[size_t(l)];
  const int dm = cfg_.d_model, di = cfg_.d_inner, N = cfg_.d_state, G = cfg_.ngroups, H = cfg_.nheads,
            P = cfg_.headdim, K = cfg_.d_conv;
  const int nseq = int(offs.size()) - 1, cd = cfg_.conv_dim(), pd = cfg_.in_proj_dim();
  int8_t* xq = scratch_i8(kSlotQIn, size_t(T) * dm);
  cpu::quantize(x, T, dm, dm, Q.s_in, xq, dm);
  // zxbcdt {T, pd} = xq in_proj^T, requantized per part: z [:, :di], xBC [:, di:di+cd], dt [:, di+cd:]
  float* zxbcdt = scratch(kSlotInProj, size_t(T) * pd);
  qgemm(T, xq, dm, Q.s_in, Q.in_proj, L.in_proj_b.data, zxbcdt, pd);
  int8_t* pq = scratch_i8(kSlotQInProj, size_t(T) * pd);
  cpu::quantize(zxbcdt, T, di, pd, Q.s_z, pq, pd);
  cpu::quantize(zxbcdt + di, T, cd, pd, Q.s_xbc, pq + di, pd);
  cpu::quantize(zxbcdt + di + cd, T, H, pd, Q.s_dt, pq + di + cd, pd);
  // xbcq {T, cd} = q(SiLU(conv1d(xBC))) with the x, B and C scales per channel
  int8_t* xbcq = scratch_i8(kSlotQConv, size_t(T) * cd);
  cpu::conv1d_s8_silu(nseq, offs.data(), pq + di, pd, Q.s_xbc, cd, K, Q.conv.codes(), Q.conv.scales[0],
                      L.conv_b.data, conv_st, Q.conv_out_scale.data(), xbcq, cd);
  // y {T, di} = SSD(x, softplus(dt + dt_bias), A, B, C) + D x, inputs int8, math fp32
  float* y = scratch(kSlotScanOut, size_t(T) * di);
  FloatStates st(ssm_st, nseq, cfg_.ssm_state_size(), Q.s_state);
  cpu::ssd_scan_s8(nseq, offs.data(), H, P, G, N, xbcq, cd, Q.s_x, pq + di + cd, pd, Q.s_dt, L.dt_bias.data,
                   L.A.data(), xbcq + di, cd, Q.s_B, xbcq + di + G * N, cd, Q.s_C, L.D.data, st.ptrs.data(), y, di);
  st.store(ssm_st, Q.s_state);
  // y = RMSNorm_grouped(y * SiLU(z)) * w, z dequantized
  float* z = scratch(kSlotDelta, size_t(T) * di);
  for (size_t i = 0, r = 0; r < size_t(T); ++r)
    for (int c = 0; c < di; ++c, ++i) z[i] = float(pq[r * size_t(pd) + size_t(c)]) * Q.s_z;
  cpu::gated_rmsnorm(y, z, di, L.gnorm.data, T, di, di / G, cfg_.norm_eps, cfg_.norm_before_gate);
  hadamard_transform(y, T, di, di);
  int8_t* yq = scratch_i8(kSlotQOut, size_t(T) * di);
  cpu::quantize(y, T, di, di, Q.s_out_in, yq, di);
  qgemm(T, yq, di, Q.s_out_in, Q.out_proj, L.out_proj_b.data, out, dm);
}

}  // namespace mambaq
