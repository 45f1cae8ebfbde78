#include "tiny_model.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "io/safetensors.h"
#include "mambaq/error.h"
#include "io/mmap_file.h"
#include "mambaq/model.h"
#include "quant/quantized.h"
#include "quant/calibrate.h"

namespace fs = std::filesystem;

namespace mambaq::fuzz {

std::vector<float>& TinyModel::at(const std::string& name) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return values[i];
  fail("tiny model: no tensor '{}'", name);
}

void TinyModel::add(const std::string& n, std::vector<int64_t> shape, uint32_t seed, float scale, float mean) {
  int64_t c = 1;
  for (auto d : shape) c *= d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(mean, scale);
  std::vector<float> v(static_cast<size_t>(c));
  for (auto& x : v) x = nd(rng);
  names.push_back(n);
  shapes.push_back(std::move(shape));
  values.push_back(std::move(v));
}

void TinyModel::remove(const std::string& name) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) {
      names.erase(names.begin() + long(i));
      shapes.erase(shapes.begin() + long(i));
      values.erase(values.begin() + long(i));
      return;
    }
  fail("tiny model: no tensor '{}'", name);
}

void TinyModel::save(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  std::vector<NamedTensor> ts;
  for (size_t i = 0; i < names.size(); ++i) ts.push_back({names[i], DType::F32, shapes[i], values[i].data()});
  save_safetensors(dir + "/model.safetensors", ts);
  std::ofstream(dir + "/config.json") << config.dump(1) << "\n";
}

TinyModel tiny_model(bool mamba2, int layers) {
  const int D = 16, V = 64, E = 32, N = 8, K = 4;
  uint32_t seed = mamba2 ? 200 : 100;
  TinyModel t;
  if (mamba2) {
    const int P = 8, H = E / P, G = 1;
    t.config = {{"model_type", "mamba2"}, {"hidden_size", D},  {"num_hidden_layers", layers}, {"vocab_size", V},
                {"state_size", N},        {"head_dim", P},     {"num_heads", H},              {"n_groups", G},
                {"expand", 2},            {"conv_kernel", K},  {"chunk_size", 16},            {"tie_word_embeddings", true}};
    t.add("backbone.embeddings.weight", {V, D}, seed++, 1.f);
    for (int l = 0; l < layers; ++l) {
      const std::string p = "backbone.layers." + std::to_string(l) + ".";
      t.add(p + "norm.weight", {D}, seed++, 0.1f, 1.f);
      t.add(p + "mixer.in_proj.weight", {2 * E + 2 * G * N + H, D}, seed++, 0.25f);
      t.add(p + "mixer.conv1d.weight", {E + 2 * G * N, 1, K}, seed++, 0.5f);
      t.add(p + "mixer.conv1d.bias", {E + 2 * G * N}, seed++, 0.1f);
      t.add(p + "mixer.dt_bias", {H}, seed++, 0.5f, -1.f);
      t.add(p + "mixer.A_log", {H}, seed++, 0.3f, 0.5f);
      t.add(p + "mixer.D", {H}, seed++, 0.3f, 1.f);
      t.add(p + "mixer.norm.weight", {E}, seed++, 0.1f, 1.f);
      t.add(p + "mixer.out_proj.weight", {D, E}, seed++, 0.2f);
    }
    t.add("backbone.norm_f.weight", {D}, seed++, 0.1f, 1.f);
  } else {
    const int R = 1;  // dt_rank "auto" = ceil(d_model / 16)
    t.config = {{"d_model", D}, {"n_layer", layers}, {"vocab_size", V}, {"ssm_cfg", {{"d_state", N}}},
                {"rms_norm", true}, {"pad_vocab_size_multiple", 8}};
    t.add("backbone.embedding.weight", {V, D}, seed++, 1.f);
    for (int l = 0; l < layers; ++l) {
      const std::string p = "backbone.layers." + std::to_string(l) + ".";
      t.add(p + "norm.weight", {D}, seed++, 0.1f, 1.f);
      t.add(p + "mixer.in_proj.weight", {2 * E, D}, seed++, 0.25f);
      t.add(p + "mixer.conv1d.weight", {E, 1, K}, seed++, 0.5f);
      t.add(p + "mixer.conv1d.bias", {E}, seed++, 0.1f);
      t.add(p + "mixer.x_proj.weight", {R + 2 * N, E}, seed++, 0.25f);
      t.add(p + "mixer.dt_proj.weight", {E, R}, seed++, 0.5f);
      t.add(p + "mixer.dt_proj.bias", {E}, seed++, 0.5f, -2.f);
      t.add(p + "mixer.A_log", {E, N}, seed++, 0.3f, 0.5f);
      t.add(p + "mixer.D", {E}, seed++, 0.3f, 1.f);
      t.add(p + "mixer.out_proj.weight", {D, E}, seed++, 0.2f);
    }
    t.add("backbone.norm_f.weight", {D}, seed++, 0.1f, 1.f);
  }
  return t;
}

void quantized_folder(const fs::path& fp_dir, const fs::path& out, const std::string& preset) {
  auto fp = Model::load(fp_dir.string());
  CalibSamples cs;
  std::mt19937 rng(7);
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> ids(24);
    for (auto& x : ids) x = int32_t(rng() % 64);
    cs.samples.push_back(ids);
  }
  cs.available = cs.documents = 4;
  CalibOptions co;
  co.progress = false;
  const Calibration cal = calibrate(*fp, cs, co);
  QuantMeta meta;
  meta.calib_file = "seed";
  meta.calib_samples = cs.samples.size();
  meta.calib_seqlen = 24;
  if (!preset.empty()) {  // Quamba2: rotated, embedding and head int8, heads grouped (Mamba2)
    apply_quamba2_preset(meta, preset, fp->config());
    QuantizeInputs in;
    in.calib = &cs;
    in.calib_opts.progress = false;
    in.progress = false;
    save_quantized(*quantize(*fp, meta, in).model, out.string(), "");
    return;
  }
  auto q = quantize_model(*fp, cal, meta);
  save_quantized(*q, out.string(), "");
}

std::string quant_base(int i, const std::string& dir) {
  const std::string tag = i == 0 ? "mamba1-quamba1-w8a8" : i == 1 ? "mamba2-quamba2-w8a8" : "mamba1-quamba2-w8a8";
  const fs::path out = fs::path(dir) / tag, fp = fs::path(dir) / (tag + "-fp");
  if (fs::exists(out / "config.json")) return out.string();
  tiny_model(i == 1, 2).save(fp.string());
  quantized_folder(fp, out, i == 0 ? "" : "w8a8");
  return out.string();
}

}  // namespace mambaq::fuzz
