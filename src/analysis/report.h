// One self-contained HTML report (inline SVG, no scripts, no network) from analysis outputs:
// compare JSON files (per-layer error curves across modes), scales diff JSON (relative
// differences), and .npz activation snapshots (histograms of |x| with the clip point each alpha
// would choose). Written as XHTML-compatible markup (every element closed) so it is well-formed.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mambaq {

struct ReportInputs {
  std::string title = "mambaq report";
  std::vector<std::pair<std::string, nlohmann::json>> compares;  // (file, compare JSON)
  std::vector<std::pair<std::string, nlohmann::json>> scales;    // (file, scales diff JSON)
  std::vector<std::pair<std::string, std::map<std::string, std::vector<float>>>> snapshots;  // (file, arrays)
  std::vector<double> alphas{0.99, 0.999, 0.9999, 0.99999, 1.0};
};

std::string render_report(const ReportInputs& in);

}  // namespace mambaq
