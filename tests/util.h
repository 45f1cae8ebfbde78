// Test helpers: fixture paths, random data, error measures.
#pragma once
#include <gtest/gtest.h>

#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "mambaq/session.h"
#include "mambaq/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace mqtest {

inline std::string repo(const std::string& rel) { return std::string(MAMBAQ_SOURCE_DIR) + "/" + rel; }
inline std::string shared(const std::string& rel) { return std::string(MAMBAQ_SHARED_DIR) + "/" + rel; }
inline bool have_shared() { return std::filesystem::exists(shared("models/mamba-tiny-hf/config.json")); }

// A fresh empty folder under the build's temp area, removed at exit of the test binary's run.
std::string temp_dir(const std::string& name);

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f, float mean = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
// Random int8 codes in [-127, 127].
inline std::vector<int8_t> rand_codes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = int8_t(d(rng));
  return v;
}
inline std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// ||a - b|| / ||b||
inline double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return rel_err(a.data(), b.data(), std::min(a.size(), b.size()));
}
// Positions {a.size() / V} whose argmax (the first maximum) is the same in a and b.
inline int top1_agreement(const std::vector<float>& a, const std::vector<float>& b, int V) {
  int n = 0;
  for (size_t t = 0; t < a.size() / size_t(V); ++t) {
    const float* x = a.data() + t * V;
    const float* y = b.data() + t * V;
    n += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
  }
  return n;
}
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

void write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// Runs the CLI; returns the exit code, with stdout and stderr captured.
struct CliResult {
  int code;
  std::string out, err;
};
CliResult run_cli(const std::string& args);
// A failed command: non-zero exit, one line on stderr that says "error" and contains `frag`.
void expect_one_line_error(const CliResult& r, const std::string& frag);

// The bundled GPT-NeoX tokenizer (loaded once) and bundled model folders.
const mambaq::Tokenizer& tokenizer();

// Texts a and b tokenized and run as one ragged packed batch of two sequences; the logits of
// every position {T, padded_vocab}, layer outputs handed to `cap`.
std::vector<float> packed_logits(mambaq::Session& m, const std::string& a, const std::string& b,
                                 mambaq::Tap* cap = nullptr);
// The same in the model's own mode (int8 when quantized) on the default backend.
std::vector<float> packed_logits(const mambaq::Model& m, const std::string& a, const std::string& b,
                                 mambaq::Tap* cap = nullptr);
inline std::string model_dir(const std::string& name) { return repo("models/" + name); }

}  // namespace mqtest

namespace mambaq {
// Test shorthands: a model run in its own mode on the default backend.
inline TaskResult run_task(const Model& m, const Tokenizer& tok, const std::string& task, const EvalOptions& opt) {
  Session s(m);
  return run_task(s, tok, task, opt);
}
inline std::vector<std::vector<RequestScore>> score_requests(const Model& m, const std::vector<std::vector<Request>>& docs,
                                                             const EvalOptions& opt) {
  Session s(m);
  return score_requests(s, docs, opt);
}
}  // namespace mambaq

// EXPECT that `stmt` throws mambaq::Error whose message contains every given fragment.
#define EXPECT_ERROR(stmt, ...)                                                               \
  do {                                                                                        \
    try {                                                                                     \
      stmt;                                                                                   \
      ADD_FAILURE() << "expected mambaq::Error from " #stmt;                                  \
    } catch (const mambaq::Error& e) {                                                        \
      for (const char* frag : {__VA_ARGS__})                                                  \
        EXPECT_NE(std::string(e.what()).find(frag), std::string::npos)                        \
            << "message '" << e.what() << "' lacks '" << frag << "'";                         \
    }                                                                                         \
  } while (0)
