// Small helpers shared by the library and the CLI: one definition of each.
#pragma once
#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

namespace mambaq {

// Median (the mean of the two middle values for an even count); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Mean, summed left to right (as Python's sum(x) / len(x)); 0 for none.
inline double mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}

// "a,b,,c" -> {"a", "b", "c"}: empty items dropped, no trimming.
inline std::vector<std::string> split_list(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, sep);)
    if (!t.empty()) out.push_back(t);
  return out;
}

}  // namespace mambaq
