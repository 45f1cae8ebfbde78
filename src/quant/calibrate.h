// Calibration: run the FP model over calibration samples and feed an observer at every
// quantization point of the points table (model/points.h); the recipe chooses each observer
// (Quamba: percentile on the SSM input and the SSM state, min-max elsewhere).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "mambaq/session.h"
#include "mambaq/tokenizer.h"
#include "model/quant_state.h"
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
// `option` names the file's option in errors ("calib_data"; compare's "data").
CalibSamples make_calib_samples(const Tokenizer& tok, const std::string& file, int seqlen, int num,
                                const std::string& option = "calib_data");

struct CalibOptions {
  double alpha = 0.9995;  // percentile observer (SSM input and state)
  PercentileMode mode = PercentileMode::Ema;
  int batch_tokens = 8192;
  std::string backend;   // where the calibration forward passes run (empty: the default backend)
  bool progress = true;
  bool verbose = false;  // alpha, max and scale of every point on stderr
  Tap* extra = nullptr;  // also sees every tapped tensor (e.g. activation snapshots)
  std::string recipe = "quamba1";  // chooses each point's observer
  // Mamba2 with grouped heads (Quamba2): per layer; x, B, C and the state get grouped min-max
  // observers (one clip value per block, as the reference's CrossHead / PerSSDGroup /
  // CachedStatesCrossHead observers)
  const std::vector<HeadGroups>* groups = nullptr;
  // with groups: the percentile observer (alpha, mode) per block on the points the recipe
  // calibrates with a percentile (x after the conv, the state) instead of min-max
  bool grouped_percentile = false;
  // --scale-override POINT@LAYERS:alpha=A: a percentile observer with that alpha at those
  // (layer, point)s, whatever the recipe's observer there (not for grouped points)
  std::map<std::pair<int, std::string>, double> point_alpha;
};

// The activation scales a calibration run found (a ScaleTable) and how it ran.
struct Calibration : ScaleTable {
  size_t samples = 0;
  double alpha = 1.0;
  PercentileMode mode = PercentileMode::Ema;
  // every percentile point: what its clip value cuts off (raw max, share of values clipped)
  struct Clip {
    int layer;
    std::string point;
    ClipStats stats;
  };
  std::vector<Clip> clipping;
};

Calibration calibrate(const Model& model, const CalibSamples& samples, const CalibOptions& opt);

}  // namespace mambaq
