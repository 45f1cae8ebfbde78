#include "model/plan.h"

#include "core/stats.h"
#include "mambaq/error.h"

namespace mambaq {

const char* prec_name(Prec p) {
  switch (p) {
    case Prec::F32: return "f32";
    case Prec::Fake: return "fake";
    case Prec::Int8: return "int8";
  }
  return "?";
}

ExecPlan make_plan(ExecMode mode, unsigned fp_ops, int n_layer, bool quantized_head) {
  ExecPlan p;
  p.mode = mode;
  p.fp_ops = fp_ops;
  const Prec base = mode == ExecMode::FP32 ? Prec::F32 : mode == ExecMode::Fake ? Prec::Fake : Prec::Int8;
  std::array<Prec, kOpKinds> row{};
  for (int k = 0; k < kOpKinds; ++k) row[size_t(k)] = (fp_ops & op_bit(OpKind(k))) ? Prec::F32 : base;
  p.layers.assign(size_t(n_layer), row);
  p.head.fill(Prec::F32);
  if (quantized_head) p.head = row;
  return p;
}

const char* mode_name(ExecMode m) {
  switch (m) {
    case ExecMode::FP32: return "fp32";
    case ExecMode::Fake: return "fake";
    case ExecMode::Int8: return "int8";
  }
  return "?";
}

ExecMode parse_mode(const std::string& s) {
  if (s == "fp32") return ExecMode::FP32;
  if (s == "fake") return ExecMode::Fake;
  if (s == "int8") return ExecMode::Int8;
  fail_option("mode", "mode: unknown execution mode '{}' (expected fp32, fake or int8)", s);
}

unsigned parse_fp_ops(const std::string& list) {
  unsigned m = 0;
  for (const auto& t : split_list(list)) {
    bool found = false;
    for (int k = 0; k < kOpKinds; ++k)
      if (t == op_kind_name(OpKind(k))) m |= op_bit(OpKind(k)), found = true;
    if (!found) fail_option("fp_ops", "fp_ops: unknown op kind '{}' (linear, conv, ssm, norm, hadamard, head)", t);
  }
  return m;
}

std::string fp_ops_str(unsigned m) {
  std::string s;
  for (int k = 0; k < kOpKinds; ++k)
    if (m & op_bit(OpKind(k))) {
      if (!s.empty()) s.push_back(',');
      s.append(op_kind_name(OpKind(k)));
    }
  return s;
}

}  // namespace mambaq
