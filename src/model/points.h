// The quantization points of each architecture, as data. Calibration, the execution plans (fake
// quantization and int8 codes), activation snapshots, saving and loading, `scales` and `--fp-ops`
// all read these two tables; nothing else lists the points.
//
// A *scale point* is one calibrated activation scale: where the forward pass taps it, which
// columns of that tensor it covers, the observer that calibrates it and the tensor it is saved as.
// A *use* is one op reading (part of) a tapped tensor quantized with a scale point's scale; the op
// kind of the use is what `--fp-ops` keeps in float. One scale can have several uses (Mamba1's u
// is read by x_proj and by the scan; in_proj's output by the conv (x) and the scan's gate (z)).
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mambaq/config.h"

namespace mambaq {

// Op kinds that consume quantized activations; the bit of each is its FpOps mask bit.
enum class OpKind : unsigned { Linear, Conv, Ssm, Norm, Hadamard, Head };
constexpr int kOpKinds = 6;
const char* op_kind_name(OpKind k);
constexpr unsigned op_bit(OpKind k) { return 1u << unsigned(k); }

// Column ranges of the tapped tensors, resolved against a config by col_range().
enum class Cols {
  All,
  M1X, M1Z,           // Mamba1 in_proj output {T, 2*d_inner}: x | z
  M1Dt, M1BC,         // Mamba1 x_proj output {T, dt_rank + 2*d_state}: dt_low | B C
  M2Z, M2XBC, M2Dt,   // Mamba2 in_proj output {T, in_proj_dim}: z | xBC | dt
  M2X, M2B, M2C,      // Mamba2 conv output {T, conv_dim}: x | B | C
};
// [c0, c1) of `c` in a tensor `cols` wide
std::pair<int, int> col_range(const ModelConfig& cfg, Cols c, int cols);

struct ScalePoint {
  const char* name;    // as logged and in the scale table, e.g. "x_proj:input"
  const char* tensor;  // saved as backbone.layers.N.mixer.<tensor> (the head's: <tensor> as is)
  bool percentile;     // observer: percentile (the SSM input and state) or min-max
  bool hadamard;       // observed (and quantized) after the online Hadamard transform
  const char* tap;     // the forward's tap carrying it; "ssm_state": each sequence's state after a call
  Cols cols;
  bool head;           // layer -1: the LM head's input
};

struct PointUse {
  const char* tap;
  Cols cols;
  const char* scale;   // a ScalePoint name
  OpKind kind;         // the op reading it
};

std::span<const ScalePoint> scale_points(Arch a);
std::span<const PointUse> point_uses(Arch a);
const ScalePoint* find_scale_point(Arch a, std::string_view name);  // null if none

// The saved tensor of a point's scale, e.g. (Mamba1, 3, "x_proj:input") ->
// "backbone.layers.3.mixer.conv1d.output_scale"; "" if the architecture has no such point.
std::string scale_tensor_name(Arch a, int layer, std::string_view point);

// Quamba2's grouped scales (Mamba2 with grouped heads, model/quant_state.h HeadGroups): x after
// the conv has one scale per (SSD group, head group, dim group) {G, nhg, ndg}; B and C one per SSD
// group {G}; the SSM state one per (SSD group, head group, dim group, state index) {G, nhg, ndg, N}.
enum class Grouping { None, XHeads, SsdGroup, State };
Grouping point_grouping(Arch a, std::string_view point);
struct HeadGroups;
// For each column of the point's columns (x: d_inner; B, C: G*N) or each element of the state
// {H, N, P}: the index of its scale in the grouped scale tensor.
std::vector<int> grouped_scale_index(const ModelConfig& cfg, const HeadGroups& g, Grouping kind);
std::vector<int64_t> grouped_scale_shape(const ModelConfig& cfg, const HeadGroups& g, Grouping kind);

// Forward taps that carry no quantization point but are useful to look at.
// mixer_out {T, d_model}, block_out {T, d_model} (the residual stream after the layer).
inline constexpr const char* kTapMixerOut = "mixer_out";
inline constexpr const char* kTapBlockOut = "block_out";

}  // namespace mambaq

namespace mambaq {
// Columns of a tapped tensor: in_proj:input / lm_head:input d_model; in_proj:output in_proj_dim;
// x_proj:input, ssm:input, dt_proj:output, out_proj:input d_inner; x_proj:output
// dt_rank + 2*d_state; xBC_conv_out conv_dim; ssm_state the state's size.
int tap_width(const ModelConfig& cfg, std::string_view tap);
}  // namespace mambaq
