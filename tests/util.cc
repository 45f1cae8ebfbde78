#include "util.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace mqtest {

std::string temp_dir(const std::string& name) {
  static const std::string base = [] {
    auto p = std::filesystem::temp_directory_path() / ("mambaq_test_" + std::to_string(getpid()));
    std::filesystem::create_directories(p);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() / ("mambaq_test_" + std::to_string(getpid())), ec);
    });
    return p.string();
  }();
  const auto p = std::filesystem::path(base) / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CliResult run_cli(const std::string& args) {
  const std::string dir = temp_dir("cli_run");
  const std::string cmd = std::string(MAMBAQ_CLI) + " " + args + " > " + dir + "/out 2> " + dir + "/err";
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_file(dir + "/out"), read_file(dir + "/err")};
}

void expect_one_line_error(const CliResult& r, const std::string& frag) {
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(frag), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

const mambaq::Tokenizer& tokenizer() {
  static auto t = mambaq::Tokenizer::load(repo("data/tokenizer/gpt-neox-20b/tokenizer.json"));
  return *t;
}

std::vector<float> packed_logits(const mambaq::Model& m, const std::string& a, const std::string& b, mambaq::Tap* cap) {
  mambaq::Session s(m);
  return packed_logits(s, a, b, cap);
}

std::vector<float> packed_logits(mambaq::Session& m, const std::string& a, const std::string& b, mambaq::Tap* cap) {
  const auto ta = tokenizer().encode(a), tb = tokenizer().encode(b);
  std::vector<int32_t> toks(ta);
  toks.insert(toks.end(), tb.begin(), tb.end());
  const int lens[2] = {int(ta.size()), int(tb.size())};
  const int T = int(toks.size()), dm = m.config().d_model;
  std::vector<float> hidden(size_t(T) * dm), logits(size_t(T) * m.config().padded_vocab);
  m.forward(toks, lens, nullptr, hidden.data(), cap);
  m.lm_head(hidden.data(), T, logits.data());
  return logits;
}

}  // namespace mqtest
