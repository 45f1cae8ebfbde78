#include "targets.h"
#include "tiny_model.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "analysis/explog.h"
#include "analysis/sweep.h"
#include "io/json_file.h"
#include "io/mmap_file.h"
#include "io/npz.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/torch_zip.h"
#include "mambaq/checkpoint.h"
#include "mambaq/config.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "mambaq/model.h"
#include "mambaq/tokenizer.h"

namespace fs = std::filesystem;

namespace mambaq::fuzz {
namespace {

// A private scratch folder per process (tmpfs when available): targets that read files get
// the input written there.
struct Scratch {
  std::string dir;
  Scratch() {
    const std::string base = fs::is_directory("/dev/shm") ? "/dev/shm" : fs::temp_directory_path().string();
    dir = base + "/mambaq-fuzz-" + std::to_string(getpid());
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};
const std::string& scratch() {
  static const Scratch s;
  return s.dir;
}

std::string put(const std::string& name, const uint8_t* data, size_t size) {
  const std::string p = scratch() + "/" + name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return p;
}

// Reads every value so that an out-of-bounds pointer is touched under the sanitizers.
double touch(const TensorStore& st) {
  double s = 0;
  for (const auto& [name, t] : st.tensors) {
    const auto* b = static_cast<const uint8_t*>(t.data);
    for (size_t i = 0; i < t.nbytes(); ++i) s += b[i];
  }
  return s;
}

const Tokenizer& bundled_tokenizer() {
  static std::unique_ptr<Tokenizer> t = Tokenizer::load(default_data_dir() + "/tokenizer/gpt-neox-20b/tokenizer.json");
  return *t;
}

// Splits the input at the first "\n----\n" (two-part inputs: a config and a weights file).
std::pair<std::string_view, std::string_view> split2(const uint8_t* d, size_t n) {
  std::string_view all(reinterpret_cast<const char*>(d), n);
  const size_t at = all.find("\n----\n");
  if (at == std::string_view::npos) return {all, {}};
  return {all.substr(0, at), all.substr(at + 6)};
}

void t_safetensors(const uint8_t* d, size_t n) {
  TensorStore st;
  load_safetensors(put("model.safetensors", d, n), st);
  touch(st);
  for (const auto& [name, t] : st.tensors)
    if (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16) to_f32(t, name);
}

void t_torch_zip(const uint8_t* d, size_t n) {
  TensorStore st;
  load_torch_zip(put("pytorch_model.bin", d, n), st);
  touch(st);
}

// data.pkl of a torch checkpoint, with every storage 64 bytes of data: the pickle machine and
// the tensor-record checks (offsets, sizes, strides), which the zip's CRC hides from mutations.
void t_pickle(const uint8_t* d, size_t n) {
  TensorStore st;
  torch_state_dict(d, n, "pytorch_model.bin", "data.pkl", [](const std::string& key) {
    auto b = std::make_shared<std::vector<uint8_t>>(64);
    for (size_t i = 0; i < b->size(); ++i) (*b)[i] = uint8_t(i * 7 + key.size());
    return b;
  }, st);
  touch(st);
}

void t_config(const uint8_t* d, size_t n) { parse_config(parse_json(std::string_view(reinterpret_cast<const char*>(d), n), "config.json"), "config.json"); }

void t_tokenizer_json(const uint8_t* d, size_t n) {
  auto tok = Tokenizer::load(put("tokenizer.json", d, n));
  const auto ids = tok->encode("Hello world, it's  a   test 123 \xc3\xa9t\xc3\xa9 <|endoftext|>\n\n");
  tok->decode(ids);
  tok->decode({-1, 0, 1, tok->vocab_size(), 1 << 30});
}

void t_tokenize(const uint8_t* d, size_t n) {
  const auto& tok = bundled_tokenizer();
  const auto ids = tok.encode(std::string_view(reinterpret_cast<const char*>(d), n));
  tok.decode(ids);
}

void t_jsonl(const uint8_t* d, size_t n) {
  const auto texts = read_jsonl_texts(put("docs.jsonl", d, n));
  for (const auto& t : texts) lastword_split(bundled_tokenizer(), t);
}

void t_explog(const uint8_t* d, size_t n) {
  for (const auto& r : read_log(put("experiments.jsonl", d, n))) flatten(r);
}

void t_sweep(const uint8_t* d, size_t n) {
  // The first byte picks the spec's syntax.
  if (n == 0) return;
  load_sweep(put(d[0] & 1 ? "spec.json" : "spec.toml", d + 1, n - 1));
}

void t_npz(const uint8_t* d, size_t n) { load_npz(put("act.npz", d, n)); }

// A model folder: config.json, "\n----\n", model.safetensors (FP or a quantized folder). The
// model is loaded and run on a few tokens in every mode it has: the logits must be finite or
// the run must end with an error.
void t_model_folder(const uint8_t* d, size_t n) {
  auto [cfg, weights] = split2(d, n);
  const std::string dir = scratch() + "/model";
  fs::create_directories(dir);
  put("model/config.json", reinterpret_cast<const uint8_t*>(cfg.data()), cfg.size());
  put("model/model.safetensors", reinterpret_cast<const uint8_t*>(weights.data()), weights.size());
  auto m = Model::load(dir);
  if (m->config().n_layer > 8 || int64_t(m->config().d_model) * m->config().padded_vocab > (1 << 22)) return;
  const std::vector<int32_t> toks = {1, 2, 3};
  for (ExecMode mode : {ExecMode::FP32, ExecMode::Fake, ExecMode::Int8}) {
    if (mode != ExecMode::FP32 && !m->is_quantized()) break;
    Session S(*m, {.mode = mode});
    const auto logits = S.last_logits(toks);
    for (float v : logits)
      if (!std::isfinite(v)) {
        std::fprintf(stderr, "model_folder: non-finite logit returned without an error (mode %s)\n", mode_name(mode));
        std::abort();
      }
  }
}

// The quantization section against fixed tensors: byte 0 picks a tiny quantized folder
// (quant_base), the rest is the section's JSON (its save_id set to the folder's, so that the
// search reaches past that check); loaded and run like model_folder.
void t_quant_section(const uint8_t* d, size_t n) {
  if (n < 1) return;
  static std::string bases[kQuantBases];
  const int i = (d[0] - '0' + 3 * 256) % kQuantBases;
  if (bases[i].empty()) bases[i] = quant_base(i, scratch() + "/qbase");
  const nlohmann::json base = parse_json(read_text_file(bases[i] + "/config.json"), bases[i]);
  nlohmann::json cfg = base;
  cfg["quantization"] = parse_json(std::string(reinterpret_cast<const char*>(d + 1), n - 1), "quantization section");
  if (cfg["quantization"].is_object()) cfg["quantization"]["save_id"] = base["quantization"]["save_id"];
  const std::string dir = scratch() + "/qsec";
  fs::create_directories(dir);
  fs::copy_file(bases[i] + "/model.safetensors", dir + "/model.safetensors", fs::copy_options::overwrite_existing);
  const std::string text = cfg.dump(1);
  put("qsec/config.json", reinterpret_cast<const uint8_t*>(text.data()), text.size());
  auto m = Model::load(dir);
  const std::vector<int32_t> toks = {1, 2, 3};
  for (ExecMode mode : {ExecMode::FP32, ExecMode::Fake, ExecMode::Int8}) {
    if (mode != ExecMode::FP32 && !m->is_quantized()) break;
    Session S(*m, {.mode = mode});
    for (float v : S.last_logits(toks))
      if (!std::isfinite(v)) {
        std::fprintf(stderr, "quant_section: non-finite logit returned without an error (mode %s)\n", mode_name(mode));
        std::abort();
      }
  }
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> t = {
      {"safetensors", t_safetensors, "safetensors header and data offsets"},
      {"torch_zip", t_torch_zip, "PyTorch zip checkpoint (zip + data.pkl + storages)"},
      {"pickle", t_pickle, "the pickle subset of data.pkl"},
      {"config", t_config, "config.json in both layouts"},
      {"tokenizer_json", t_tokenizer_json, "a model folder's tokenizer.json"},
      {"tokenize", t_tokenize, "text through the bundled GPT-NeoX tokenizer"},
      {"jsonl", t_jsonl, "JSONL documents (calibration data, lastword tasks)"},
      {"explog", t_explog, "the experiment log"},
      {"sweep", t_sweep, "sweep specs, TOML or JSON"},
      {"npz", t_npz, "activation snapshots (.npz)"},
      {"model_folder", t_model_folder, "a model folder (FP or quantized): config + safetensors, loaded and run"},
      {"quant_section", t_quant_section, "config.json's quantization section against a quantized folder's tensors"},
  };
  return t;
}

const Target* find_target(const std::string& name) {
  for (const auto& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

bool run_one(const Target& t, const uint8_t* data, size_t size, std::string* error) {
  try {
    t.fn(data, size);
    return true;
  } catch (const Error& e) {  // the expected outcome for bad input
    if (error) *error = e.what();
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz target %s: an exception other than mambaq::Error escaped: %s\n", t.name, e.what());
    std::abort();
  }
}

}  // namespace mambaq::fuzz
