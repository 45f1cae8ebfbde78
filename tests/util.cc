#include "util.h"

#include <unistd.h>

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

}  // namespace mqtest
