#include "model/points.h"

#include "mambaq/error.h"
#include "model/quant_state.h"

namespace mambaq {

namespace {
using enum OpKind;
using enum Cols;

constexpr ScalePoint kMamba1Points[] = {
    // name                   saved tensor             pct    hadam  tap               cols  head
    {"in_proj:input",        "in_proj.input_scale",   false, false, "in_proj:input",  All, false},
    {"in_proj:output",       "in_proj.output_scale",  false, false, "in_proj:output", All, false},
    {"x_proj:input",         "conv1d.output_scale",   true,  false, "x_proj:input",   All, false},
    {"x_proj:output",        "x_proj.output_scale",   false, false, "x_proj:output",  All, false},
    {"dt_proj:output",       "dt_proj.output_scale",  false, false, "dt_proj:output", All, false},
    {"ssm_state_act:input",  "ssm_state_scale",       true,  false, "ssm_state",      All, false},
    {"out_proj:input",       "out_proj.input_scale",  false, true,  "out_proj:input", All, false},
    {"lm_head:input",        "lm_head.input_scale",   false, false, "lm_head:input",  All, true},
};
constexpr PointUse kMamba1Uses[] = {
    {"in_proj:input", All, "in_proj:input", Linear},
    {"in_proj:output", M1X, "in_proj:output", Conv},        // x: the conv's input
    {"in_proj:output", M1Z, "in_proj:output", Ssm},         // z: the scan's gate
    {"x_proj:input", All, "x_proj:input", Linear},          // u, read by x_proj ...
    {"ssm:input", All, "x_proj:input", Ssm},                // ... and by the scan (its own copy)
    {"x_proj:output", M1Dt, "x_proj:output", Linear},       // dt_low: dt_proj's input
    {"x_proj:output", M1BC, "x_proj:output", Ssm},          // B, C
    {"dt_proj:output", All, "dt_proj:output", Ssm},
    {"ssm_state", All, "ssm_state_act:input", Ssm},
    {"out_proj:input", All, "out_proj:input", Linear},
    {"lm_head:input", All, "lm_head:input", Head},
};

constexpr ScalePoint kMamba2Points[] = {
    {"in_proj:input",        "in_proj.input_scale",   false, false, "in_proj:input",  All, false},
    {"z",                    "in_proj.z_scale",       false, false, "in_proj:output", M2Z, false},
    {"xBC",                  "in_proj.xBC_scale",     false, false, "in_proj:output", M2XBC, false},
    {"dt",                   "in_proj.dt_scale",      false, false, "in_proj:output", M2Dt, false},
    {"x_conv_out",           "conv1d.x_scale",        true,  false, "xBC_conv_out",   M2X, false},
    {"B_conv_out",           "conv1d.B_scale",        false, false, "xBC_conv_out",   M2B, false},
    {"C_conv_out",           "conv1d.C_scale",        false, false, "xBC_conv_out",   M2C, false},
    {"ssm_state_act:input",  "ssm_state_scale",       true,  false, "ssm_state",      All, false},
    {"out_proj:input",       "out_proj.input_scale",  false, true,  "out_proj:input", All, false},
    {"lm_head:input",        "lm_head.input_scale",   false, false, "lm_head:input",  All, true},
};
constexpr PointUse kMamba2Uses[] = {
    {"in_proj:input", All, "in_proj:input", Linear},
    {"in_proj:output", M2Z, "z", Norm},                     // the gated norm's gate
    {"in_proj:output", M2XBC, "xBC", Conv},
    {"in_proj:output", M2Dt, "dt", Ssm},
    {"xBC_conv_out", M2X, "x_conv_out", Ssm},
    {"xBC_conv_out", M2B, "B_conv_out", Ssm},
    {"xBC_conv_out", M2C, "C_conv_out", Ssm},
    {"ssm_state", All, "ssm_state_act:input", Ssm},
    {"out_proj:input", All, "out_proj:input", Linear},
    {"lm_head:input", All, "lm_head:input", Head},
};
}  // namespace

Grouping point_grouping(Arch a, std::string_view p) {
  if (a != Arch::Mamba2) return Grouping::None;
  if (p == "x_conv_out") return Grouping::XHeads;
  if (p == "B_conv_out" || p == "C_conv_out") return Grouping::SsdGroup;
  if (p == "ssm_state_act:input") return Grouping::State;
  return Grouping::None;
}

std::vector<int64_t> grouped_scale_shape(const ModelConfig& c, const HeadGroups& g, Grouping kind) {
  switch (kind) {
    case Grouping::XHeads: return {g.G, g.nhg, g.ndg};
    case Grouping::SsdGroup: return {g.G};
    case Grouping::State: return {g.G, g.nhg, g.ndg, c.d_state};
    case Grouping::None: break;
  }
  return {1};
}

std::vector<int> grouped_scale_index(const ModelConfig& c, const HeadGroups& g, Grouping kind) {
  const int H = c.nheads, P = c.headdim, N = c.d_state, Hg = H / c.ngroups;
  std::vector<int> idx;
  switch (kind) {
    case Grouping::XHeads:  // channel h * P + p
      for (int h = 0; h < H; ++h) {
        const int gi = h / Hg, k = g.head_group(gi, h % Hg);
        for (int p = 0; p < P; ++p) idx.push_back((gi * g.nhg + k) * g.ndg + g.dim_group(gi, k, p));
      }
      break;
    case Grouping::SsdGroup:  // column gi * N + n
      for (int gi = 0; gi < c.ngroups; ++gi)
        for (int n = 0; n < N; ++n) idx.push_back(gi);
      break;
    case Grouping::State:  // element (h, n, p) of {H, N, P}
      for (int h = 0; h < H; ++h) {
        const int gi = h / Hg, k = g.head_group(gi, h % Hg);
        for (int n = 0; n < N; ++n)
          for (int p = 0; p < P; ++p) idx.push_back(((gi * g.nhg + k) * g.ndg + g.dim_group(gi, k, p)) * N + n);
      }
      break;
    case Grouping::None: break;
  }
  return idx;
}

const char* op_kind_name(OpKind k) {
  static const char* names[] = {"linear", "conv", "ssm", "norm", "hadamard", "head"};
  return names[unsigned(k)];
}

std::pair<int, int> col_range(const ModelConfig& c, Cols k, int cols) {
  const int di = c.d_inner, R = c.dt_rank, N = c.d_state, GN = c.ngroups * c.d_state, cd = c.conv_dim();
  switch (k) {
    case All: return {0, cols};
    case M1X: return {0, di};
    case M1Z: return {di, 2 * di};
    case M1Dt: return {0, R};
    case M1BC: return {R, R + 2 * N};
    case M2Z: return {0, di};
    case M2XBC: return {di, di + cd};
    case M2Dt: return {di + cd, di + cd + c.nheads};
    case M2X: return {0, di};
    case M2B: return {di, di + GN};
    case M2C: return {di + GN, di + 2 * GN};
  }
  return {0, 0};
}

std::span<const ScalePoint> scale_points(Arch a) {
  if (a == Arch::Mamba1) return kMamba1Points;
  return kMamba2Points;
}

std::span<const PointUse> point_uses(Arch a) {
  if (a == Arch::Mamba1) return kMamba1Uses;
  return kMamba2Uses;
}

const ScalePoint* find_scale_point(Arch a, std::string_view name) {
  for (const auto& p : scale_points(a))
    if (name == p.name) return &p;
  return nullptr;
}

std::string scale_tensor_name(Arch a, int layer, std::string_view point) {
  const ScalePoint* p = find_scale_point(a, point);
  if (!p || p->head != (layer < 0)) return "";
  if (p->head) return p->tensor;
  return "backbone.layers." + std::to_string(layer) + ".mixer." + p->tensor;
}

}  // namespace mambaq

namespace mambaq {
int tap_width(const ModelConfig& c, std::string_view tap) {
  if (tap == "in_proj:input" || tap == "lm_head:input" || tap == kTapMixerOut || tap == kTapBlockOut) return c.d_model;
  if (tap == "in_proj:output") return c.in_proj_dim();
  if (tap == "x_proj:input" || tap == "ssm:input" || tap == "dt_proj:output" || tap == "out_proj:input") return c.d_inner;
  if (tap == "x_proj:output") return c.dt_rank + 2 * c.d_state;
  if (tap == "xBC_conv_out") return c.conv_dim();
  if (tap == "ssm_state") return int(c.ssm_state_size());
  fail("internal error: unknown tap '{}'", tap);
}
}  // namespace mambaq
