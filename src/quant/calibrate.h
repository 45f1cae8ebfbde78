// Calibration: run the FP model over calibration samples and feed an observer at every
// quantization point (Quamba: percentile on the SSM input and the SSM state, min-max elsewhere).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "mambaq/model.h"
#include "mambaq/tokenizer.h"
#include "quant/observer.h"

namespace mambaq {

struct CalibSamples {
  std::vector<std::vector<int32_t>> samples;
  size_t available = 0;  // samples the file could give (before --calib-num)
  size_t documents = 0;
};

// Consecutive `seqlen`-token windows over each document of `file` (JSONL with a "text" field, or
// raw text = one document); a document shorter than a window is one sample; the partial tail of a
// longer document is dropped. The first `num` samples are kept.
// `flag` names the option in errors.
CalibSamples make_calib_samples(const Tokenizer& tok, const std::string& file, int seqlen, int num,
                                const std::string& flag = "--calib-data");

struct CalibOptions {
  double alpha = 0.9995;  // percentile observer (SSM input and state)
  PercentileMode mode = PercentileMode::Ema;
  int batch_tokens = 8192;
  bool progress = true;
  bool verbose = false;  // alpha, max and scale of every point on stderr
  Tap* extra = nullptr;  // also sees every tapped tensor (e.g. activation snapshots)
};

struct PointScale {
  int layer;               // -1 for lm_head:input
  std::string point;       // e.g. "x_proj:input", "ssm_state_act:input"
  std::string observer;    // "minmax" or "percentile"
  float amax;              // clip value
  float scale;             // amax / 127
};

struct Calibration {
  std::vector<PointScale> points;
  size_t samples = 0;
  double alpha = 1.0;
  PercentileMode mode = PercentileMode::Ema;
  const PointScale* find(int layer, const std::string& point) const;
};

Calibration calibrate(const Model& model, const CalibSamples& samples, const CalibOptions& opt);

// The activation quantization points of one layer: a column range [c0, c1) of a tapped tensor
// (Model's Tap points), under the point's name, with the observer Quamba uses for it.
struct QuantPoint {
  std::string name;  // e.g. "x_proj:input", "x_conv_out"
  int c0, c1;
  bool percentile;   // SSM input: percentile observer; everything else min-max
  bool hadamard;     // observed after the Hadamard transform (out_proj:input)
};
// tap point -> the quantization points it carries (the SSM state is observed separately)
std::map<std::string, std::vector<QuantPoint>> quant_points(const ModelConfig& c);

}  // namespace mambaq
