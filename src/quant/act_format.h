// Activation formats for research (issue 23): how a quantization point's values become codes.
// A format is data — a name, the bits a value costs, and four functions (calibrate from observed
// values, quantize-dequantize in place, and the stated reference of both) — registered by name in
// act_format.cc; adding one is one entry there (docs/quantize.md, "Activation formats").
//
//   intN  (N = 2..8): symmetric codes q = clamp(round(x / s), -Q, Q), Q = 2^(N-1) - 1, s = amax / Q;
//                     x ~ q s. int8 is what every point uses today.
//   dualN (N = 2..8): N-bit codes plus one selector bit per value, two scales (the notes' "W4A5-SE"
//                     is dual4): a value whose code at s1 fits (|round(x / s1)| <= Q) keeps it with
//                     selector 0; any other is coded at s1 s2 with selector 1:
//                     q = clamp(round(x / (s1 s2)), -Q, Q). N + 1 bits per value.
// round() is round-half-to-even (torch.round), as every quantizer here.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace mambaq {

// A point's calibrated scales: s1 (intN: the only one), s2 = the outlier scale's ratio to s1
// (dualN; 1 for intN). What dual calibration found is kept beside them.
struct ActScales {
  float s1 = 0, s2 = 1;
  float threshold = 0;        // dualN: |x| above which values take the outlier scale (Q s1)
  double outlier_share = 0;   // dualN: share of the calibration values above the threshold
  double mse = 0;             // mean squared error of the quantize-dequantize on those values
};

// How dualN chooses s1 (s2 then covers the largest value: s1 s2 Q = amax): the threshold
// Q s1 with the least calibration MSE among candidate thresholds (the |x| quantiles at 128 levels
// from 0.5 to 1), or the alpha-quantile of |x| (the percentile observer's rule).
enum class DualRule { MinMse, Percentile };

struct ActFormat {
  std::string name;  // "int8", "int5", "dual4", ...
  int bits = 8;      // code bits N
  bool dual = false;
  int qmax() const { return (1 << (bits - 1)) - 1; }
  double bits_per_value() const { return bits + (dual ? 1 : 0); }
};

// "int2".."int8", "dual2".."dual8"; anything else is an error naming `where` and the known forms.
ActFormat parse_act_format(const std::string& name, const std::string& where);

// Scales from calibration values (all of them, |x| taken): intN from amax; dualN by `rule`
// (`alpha` for Percentile).
ActScales calibrate_act(const ActFormat& f, const float* x, size_t n, DualRule rule = DualRule::MinMse,
                        double alpha = 0.99);
// x {n} replaced by its quantize-dequantize in format f at scales s (the fake-quant simulation).
void fake_quantize_act(const ActFormat& f, const ActScales& s, float* x, size_t n);

namespace ref {
// One value's quantize-dequantize, written out as the header states it (tests compare with it).
float fake_quantize_act_one(const ActFormat& f, const ActScales& s, float x);
}  // namespace ref

}  // namespace mambaq
