// The seed corpus of every fuzz target, built from the bundled files and from tiny models
// (d_model 16, one or two layers, vocabulary 64) saved in each format: small inputs keep the
// fuzzers fast, and they exercise the same code as real checkpoints.
#include <zip.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "analysis/explog.h"
#include "core/half.h"
#include "io/json_file.h"
#include "io/mmap_file.h"
#include "io/npz.h"
#include "io/safetensors.h"
#include "mambaq/error.h"
#include "mambaq/model.h"
#include "quant/calibrate.h"
#include "quant/quantized.h"
#include "targets.h"
#include "tiny_model.h"
#include "torch_writer.h"

namespace fs = std::filesystem;

namespace mambaq::fuzz {
namespace {

void write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) fail("{}: cannot write seed", p.string());
}
std::string slurp(const fs::path& p) { return read_text_file(p.string()); }

// config "\n----\n" safetensors: the model_folder target's input.
std::string folder_seed(const fs::path& dir) {
  return slurp(dir / "config.json") + "\n----\n" + slurp(dir / "model.safetensors");
}

// ---- a torch.save-like zip: the hand-written pickle (torch_writer.h) + stored members ----
std::string zip_bytes(const fs::path& tmp, const std::vector<std::pair<std::string, std::string>>& entries) {
  int err = 0;
  fs::remove(tmp);
  zip_t* z = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (!z) fail("{}: cannot create", tmp.string());
  for (const auto& [name, data] : entries) {
    zip_source_t* s = zip_source_buffer(z, data.data(), data.size(), 0);
    const zip_int64_t idx = zip_file_add(z, name.c_str(), s, ZIP_FL_OVERWRITE);
    zip_set_file_compression(z, zip_uint64_t(idx), ZIP_CM_STORE, 0);
  }
  if (zip_close(z) != 0) fail("{}: cannot write zip", tmp.string());
  return slurp(tmp);
}
std::string floats(std::vector<float> v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A small tokenizer.json: the bundled one cut to its first `keep` ids and the merges among them.
std::string small_tokenizer(const std::string& bundled, int keep) {
  nlohmann::json j = parse_json(slurp(bundled), bundled);
  nlohmann::json vocab = nlohmann::json::object();
  for (auto& [s, id] : j["model"]["vocab"].items())
    if (id.get<int>() < keep) vocab[s] = id;
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>();
    const size_t sp = s.find(' ');
    const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
    if (vocab.contains(a) && vocab.contains(b) && vocab.contains(a + b)) merges.push_back(s);
  }
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = merges;
  nlohmann::json added = nlohmann::json::array();
  for (auto a : j["added_tokens"])
    if (added.size() < 4) {
      a["id"] = keep + int(added.size());
      added.push_back(a);
    }
  j["added_tokens"] = added;
  return j.dump(1);
}

std::string first_lines(const std::string& path, int n, size_t max_len) {
  std::ifstream in(path);
  std::string out, line;
  for (int i = 0; i < n && std::getline(in, line); ++i) {
    if (line.size() > max_len) {  // keep the JSON valid: cut inside the text, close it
      auto j = parse_json(line, path);
      std::string t = j["text"].get<std::string>();
      t.resize(std::min(t.size(), max_len));
      while (!t.empty() && (uint8_t(t.back()) & 0xC0) == 0x80) t.pop_back();
      if (!t.empty() && uint8_t(t.back()) >= 0xC0) t.pop_back();
      j["text"] = t;
      line = j.dump();
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

void write_seeds(const std::string& out_dir, const std::string& src) {
  const fs::path out(out_dir), tmp = out / ".tmp";
  fs::create_directories(tmp);
  const fs::path repo(src);
  // tiny models, FP and quantized, both architectures
  for (bool m2 : {false, true}) {
    const std::string tag = m2 ? "mamba2" : "mamba1";
    TinyModel t = tiny_model(m2, 2);
    const fs::path fp = tmp / (tag + "-fp");
    t.save(fp.string());
    write(out / "safetensors" / (tag + ".safetensors"), slurp(fp / "model.safetensors"));
    write(out / "model_folder" / (tag + "-fp"), folder_seed(fp));
    write(out / "config" / (tag + "-tiny.json"), t.config.dump(1));
    const fs::path q = tmp / (tag + "-w8a8");
    quantized_folder(fp, q);
    write(out / "model_folder" / (tag + "-w8a8"), folder_seed(q));
    write(out / "safetensors" / (tag + "-w8a8.safetensors"), slurp(q / "model.safetensors"));
    write(out / "config" / (tag + "-w8a8.json"), slurp(q / "config.json"));
    const fs::path q2 = tmp / (tag + "-quamba2-w8a8");
    quantized_folder(fp, q2, "w8a8");
    write(out / "model_folder" / (tag + "-quamba2-w8a8"), folder_seed(q2));
    write(out / "config" / (tag + "-quamba2-w8a8.json"), slurp(q2 / "config.json"));
  }
  // the quantization section against fixed tensors: the base's index, then its own section
  for (int i = 0; i < kQuantBases; ++i) {
    const std::string dir = quant_base(i, (tmp / "qbase").string());
    const nlohmann::json c = parse_json(slurp(fs::path(dir) / "config.json"), dir);
    write(out / "quant_section" / ("base" + std::to_string(i)), std::string(1, char('0' + i)) + c["quantization"].dump(1));
  }
  // half-precision tensors
  {
    std::vector<uint16_t> h = {f32_to_f16(1.5f), f32_to_f16(-2.f), f32_to_f16(0.25f)};
    std::vector<uint16_t> bf = {f32_to_bf16(3.f), f32_to_bf16(-0.5f)};
    save_safetensors((tmp / "h.safetensors").string(), {{"h", DType::F16, {3}, h.data()}, {"b", DType::BF16, {2}, bf.data()}},
                     {{"format", "pt"}});
    write(out / "safetensors" / "half.safetensors", slurp(tmp / "h.safetensors"));
  }
  for (const char* m : {"mamba-tiny", "mamba2-tiny-hf"})
    write(out / "config" / (std::string(m) + ".json"), slurp(repo / "models" / m / "config.json"));
  // torch zips: contiguous, shared storage with an offset, a strided (transposed) view
  {
    const std::string pkl = torch_state_pickle({{"a", "FloatStorage", "0", 12, 0, {3, 4}, {4, 1}},
                                          {"b", "FloatStorage", "0", 12, 4, {2, 2}, {1, 2}},
                                          {"c", "HalfStorage", "1", 3, 0, {3}, {1}}});
    std::vector<uint16_t> hv = {f32_to_f16(1.f), f32_to_f16(2.f), f32_to_f16(3.f)};
    const std::string hb(reinterpret_cast<const char*>(hv.data()), 6);
    write(out / "pickle" / "state_dict.pkl", pkl);
    write(out / "torch_zip" / "archive.bin",
          zip_bytes(tmp / "a.bin", {{"archive/data.pkl", pkl},
                                    {"archive/data/0", floats({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})},
                                    {"archive/data/1", hb},
                                    {"archive/version", "3\n"}}));
    write(out / "torch_zip" / "other-root.bin",
          zip_bytes(tmp / "b.bin", {{"model/data.pkl", torch_state_pickle({{"w", "BFloat16Storage", "0", 2, 0, {2}, {1}}})},
                                    {"model/data/0", std::string("\x80\x3f\x00\x40", 4)}}));
  }
  // tokenizers and text
  const std::string bundled = (repo / "data/tokenizer/gpt-neox-20b/tokenizer.json").string();
  write(out / "tokenizer_json" / "small.json", small_tokenizer(bundled, 400));
  {
    std::ifstream in(repo / "data/corpus/heldout.txt");
    std::string line;
    for (int i = 0; i < 6 && std::getline(in, line); ++i)
      if (!line.empty()) write(out / "tokenize" / ("heldout-" + std::to_string(i)), line.substr(0, 400));
    write(out / "tokenize" / "mixed", "It's 3.14 \xe2\x80\x94 caf\xc3\xa9 na\xc3\xafve \xf0\x9f\x98\x80\t\n\n   spaces<|endoftext|>x");
  }
  write(out / "jsonl" / "calib.jsonl", first_lines((repo / "data/corpus/calib.jsonl").string(), 3, 300));
  write(out / "jsonl" / "lastword.jsonl", first_lines((repo / "data/corpus/lastword.jsonl").string(), 4, 300));
  write(out / "jsonl" / "lambada.jsonl", first_lines((repo / "data/lambada_openai/lambada_test.jsonl").string(), 3, 300));
  // experiment log
  {
    nlohmann::json q = log_header("quantize");
    q["model"] = "models/mamba-tiny";
    q["output"] = "/tmp/w8a8";
    q["flags"] = {{"percentile_alpha", 0.9995}, {"recipe", "quamba1"}};
    q["calibration"] = {{"samples", 512}, {"scales", {{"in_proj:input", {{"min", 0.01}, {"median", 0.02}, {"max", 0.1}}}}}};
    q["wall_s"] = 12.5;
    nlohmann::json e = log_header("eval");
    e["model"] = "/tmp/w8a8";
    e["results"] = {{"heldout", {{"ppl", 221.8}, {"tokens", 85373}}}, {"lastword", {{"acc", 0.0583}, {"n", 857}}}};
    write(out / "explog" / "two-records.jsonl", q.dump() + "\n" + e.dump() + "\n");
  }
  // sweeps: first byte 0 = TOML, 1 = JSON
  {
    const std::string toml = slurp(repo / "examples/sweeps/percentile.toml");
    write(out / "sweep" / "percentile.toml", std::string(1, '\0') + toml);
    const nlohmann::json js = {{"sweep", {{"tasks", {"ppl:corpus/heldout.txt"}}, {"limit", 10}}},
                               {"matrix", {{"model", {"models/mamba-tiny"}}, {"percentile_alpha", {0.999, 1.0}}}}};
    write(out / "sweep" / "small.json", std::string(1, '\1') + js.dump());
  }
  // activation snapshots
  save_npz((tmp / "a.npz").string(), {{"layer0.x_proj:input", {1.f, -2.f, 3.5f, 0.25f}}, {"layer1.in_proj:input", {0.5f, 7.f}}});
  write(out / "npz" / "act.npz", slurp(tmp / "a.npz"));
  fs::remove_all(tmp);
}

}  // namespace mambaq::fuzz
