#include "analysis/explog.h"

#include <filesystem>
#include <map>
#include <sstream>
#include "io/json_file.h"
#include "io/mmap_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <ctime>
#include <fstream>

#include "mambaq/checkpoint.h"
#include "mambaq/error.h"
#include "mambaq/version.h"

namespace mambaq {

void append_log(const std::string& path, const nlohmann::json& record) {
  if (!record.is_object()) fail("internal error: log record must be a JSON object");
  const std::string line = record.dump() + "\n";  // dump() escapes newlines: one line per record
  // not through a link, and never blocking on a FIFO (O_NONBLOCK: its open fails without a reader)
  const int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
  if (fd < 0)
    fail_option("log", "log: cannot open '{}' for appending: {}", path,
                errno == ELOOP ? "it is a link (mambaq appends only to a regular file)" : std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_option("log", "log: '{}' is not a regular file; mambaq appends only to a regular file", path);
  }
  if (::flock(fd, LOCK_EX) != 0) {
    ::close(fd);
    fail_option("log", "log: cannot lock '{}': {}", path, std::strerror(errno));
  }
  // a record cut short (a writer killed mid-line, a full disk) ends without a newline: this one
  // starts on a line of its own, so only the cut record is lost (read_log reports it skipped)
  std::string text = line;
  char last = '\n';
  if (::fstat(fd, &st) == 0 && st.st_size > 0 && ::pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n')
    text = "\n" + line;
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string e = std::strerror(errno);
      ::close(fd);
      fail_option("log", "log: write to '{}' failed: {}", path, e);
    }
    done += size_t(n);
  }
  ::close(fd);  // releases the lock
}

std::vector<nlohmann::json> read_log(const std::string& path, std::vector<std::string>* skipped) {
  if (!file_exists(path)) fail("{}: cannot open experiment log (file not found)", path);
  std::istringstream in(read_text_file(path));
  std::vector<nlohmann::json> out;
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      nlohmann::json j = parse_json(line, path + ":" + std::to_string(no) + ": malformed JSONL line");
      if (!j.is_object()) fail("{}:{}: malformed JSONL line (not a JSON object)", path, no);
      out.push_back(std::move(j));
    } catch (const Error& e) {
      if (!skipped) throw;
      skipped->push_back(e.what());
    }
  }
  return out;
}

static void flatten_into(const nlohmann::json& j, const std::string& prefix,
                         std::vector<std::pair<std::string, nlohmann::json>>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto& [k, v] : j.items()) flatten_into(v, prefix.empty() ? k : prefix + "." + k, out);
  } else {
    out.emplace_back(prefix, j);
  }
}

std::vector<std::pair<std::string, nlohmann::json>> flatten(const nlohmann::json& j) {
  std::vector<std::pair<std::string, nlohmann::json>> out;
  flatten_into(j, "", out);
  return out;
}

static std::string& cmdline() {
  static std::string s;
  return s;
}

void set_command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) {
    if (i) s += ' ';
    const std::string a = argv[i];
    if (a.find_first_of(" \t\"'") != std::string::npos)
      s += "'" + a + "'";
    else
      s += a;
  }
  cmdline() = s;
}

const std::string& command_line() { return cmdline(); }

std::string utc_timestamp() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

nlohmann::json log_header(const std::string& kind) {
  return {{"timestamp", utc_timestamp()}, {"kind", kind}, {"command", command_line()}, {"version", version()},
          {"git", git_describe()}};
}

bool metric_diff(const nlohmann::json& a, const nlohmann::json& b, const std::string& metric, MetricDiff& out) {
  auto num = [&](const nlohmann::json& j, const std::string& k, double& v) {
    if (!j.is_object() || !j.contains(k) || !j[k].is_number()) return false;
    v = j[k].get<double>();
    return true;
  };
  if (!num(a, metric, out.a) || !num(b, metric, out.b)) return false;
  out.diff = out.b - out.a;
  double sa, sb;
  out.se = num(a, metric + "_stderr", sa) && num(b, metric + "_stderr", sb) ? std::sqrt(sa * sa + sb * sb) : -1;
  return true;
}

std::string diff_str(const MetricDiff& d) {
  return d.se >= 0 ? fmt::format("{:+.4f} ±{:.4f}", d.diff, d.se) : fmt::format("{:+.4f}", d.diff);
}

const std::vector<std::string>& result_metrics() {
  static const std::vector<std::string> m = {"acc", "acc_norm", "ppl"};
  return m;
}

std::string model_identity(const std::string& dir) {
  try {
    const std::string cfg = dir + "/config.json";
    if (!file_exists(cfg)) return "";
    std::error_code ec;
    const auto size = std::filesystem::file_size(find_weights_file(dir), ec);
    return sha256_file(cfg).substr(0, 16) + ":" + std::to_string(ec ? 0 : size);
  } catch (const Error&) {
    return "";
  }
}

std::vector<Experiment> group_experiments(const std::vector<nlohmann::json>& recs) {
  std::vector<Experiment> out;
  std::map<std::string, size_t> by_key;  // "id:..." / "path:..." -> experiment
  const auto sv = [](const nlohmann::json& r, const char* k) {
    return r.contains(k) && r[k].is_string() ? r[k].get<std::string>() : std::string();
  };
  for (size_t i = 0; i < recs.size(); ++i) {
    const auto& r = recs[i];
    const std::string kind = sv(r, "kind");
    if (kind == "quantize" || kind == "scales_set") {
      out.push_back({int(i), {}});
      if (!sv(r, "output_id").empty()) by_key["id:" + sv(r, "output_id")] = out.size() - 1;
      if (!sv(r, "output").empty()) by_key["path:" + sv(r, "output")] = out.size() - 1;
    } else if (kind == "eval") {
      auto it = sv(r, "model_id").empty() ? by_key.end() : by_key.find("id:" + sv(r, "model_id"));
      if (it == by_key.end()) it = by_key.find("path:" + sv(r, "model"));
      if (it == by_key.end()) {
        out.push_back({-1, {}});
        if (!sv(r, "model_id").empty()) by_key["id:" + sv(r, "model_id")] = out.size() - 1;
        it = by_key.insert_or_assign("path:" + sv(r, "model"), out.size() - 1).first;
      }
      out[it->second].evals.push_back(int(i));
    }
  }
  return out;
}

}  // namespace mambaq
