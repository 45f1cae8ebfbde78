// mambaq <command>: one subcommand per file in this folder.
#include <openssl/evp.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/common.h"
#include "kernels/cpu/ops.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "mambaq/version.h"
#include "analysis/explog.h"
#include "io/json_file.h"

namespace mambaq::cli {

void add_common(CLI::App* sub, Common& c) {
  sub->add_option("--threads", c.threads, "Threads for all kernels (default: all cores)")->check(CLI::NonNegativeNumber);
  sub->add_option("--data-dir", c.data_dir, "Data folder laid out like shared/data (default: the bundled data/)");
}

void apply_common(Common& c) {
  set_num_threads(c.threads);
  if (c.data_dir.empty()) c.data_dir = default_data_dir();
  if (!std::filesystem::is_directory(c.data_dir)) fail("--data-dir: '{}' is not a folder", c.data_dir);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const Common& c) {
  const std::string p = find_tokenizer(model_dir, c.data_dir);
  if (!std::filesystem::exists(p))
    fail("no tokenizer: neither {}/tokenizer.json nor {} exists (use --data-dir)", model_dir, p);
  return Tokenizer::load(p);
}

void write_json(const std::string& file, const nlohmann::json& j) {
  if (file == "-") {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::ofstream out(file, std::ios::trunc);
  if (!out) fail("--json: cannot write '{}'", file);
  out << j.dump(2) << "\n";
  if (!out) fail("--json: write to '{}' failed", file);
}

void add_mode(CLI::App* sub, std::string& mode) {
  sub->add_option("--mode", mode,
                  "Execution: fp32 (ignore quantization), fake (quantize-dequantize in float), int8 (integer kernels); "
                  "default int8 for a quantized model, fp32 otherwise");
}

std::unique_ptr<Model> load_model(const std::string& dir, const std::string& mode) {
  auto m = Model::load(dir);
  if (!mode.empty()) m->set_mode(parse_mode(mode));
  return m;
}

nlohmann::json parse_log_extra(const std::string& s) {
  if (s.empty()) return nlohmann::json::object();
  const nlohmann::json x = parse_json(s, "--log-extra");
  if (!x.is_object()) fail("--log-extra: must be a JSON object");
  return x;
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    EVP_DigestUpdate(ctx, buf.data(), size_t(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

}  // namespace mambaq::cli

int main(int argc, char** argv) {
  using namespace mambaq::cli;
  CLI::App app{"mambaq: load, run, evaluate and quantize Mamba and Mamba2 language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("mambaq ") + mambaq::version() + " (" + mambaq::git_describe() + ")");
  std::vector<std::pair<CLI::App*, Runner>> cmds;
  auto reg = [&](Runner r) { cmds.emplace_back(app.get_subcommands({}).back(), std::move(r)); };
  reg(register_info(app));
  reg(register_logits(app));
  reg(register_generate(app));
  reg(register_eval(app));
  reg(register_bench(app));
  reg(register_quantize(app));
  reg(register_logs(app));
  reg(register_verify_observer(app));
  reg(register_scales(app));
  reg(register_compare(app));
  reg(register_sweep(app));
  reg(register_report(app));
  mambaq::set_command_line(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : cmds)
      if (sub->parsed()) return run();
  } catch (const mambaq::Error& e) {
    std::cerr << "mambaq: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "mambaq: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    // Not expected: every input error is a mambaq::Error naming its file or field. Say which
    // command met it, so that a report can be acted on.
    std::cerr << "mambaq: error: " << e.what() << " (an unexpected library error in `mambaq "
              << (argc > 1 ? argv[1] : "") << "`; please report it)\n";
    return 1;
  }
  return 0;
}
