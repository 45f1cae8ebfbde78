// Forward pass against the independent reference (reference.json from HF transformers), decode
// vs. prefill, packed batches, every published layout variant, and bad checkpoints.
#include <filesystem>

#include "core/half.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "mambaq/checkpoint.h"
#include "mambaq/error.h"
#include "mambaq/model.h"
#include "mambaq/tokenizer.h"
#include "tiny_model.h"
#include "util.h"

using namespace mambaq;
namespace fs = std::filesystem;

namespace {


// Top-10 ids equal and logits within 1e-3 of reference.json, for every reference prompt.
void check_reference_logits(const std::string& dir, const std::string& ref_dir) {
  auto m = Model::load(dir);
  auto ref = read_json_file(ref_dir + "/reference.json");
  for (const auto& r : ref["reference_logits"]) {
    const auto ids = r["ids"].get<std::vector<int32_t>>();
    auto logits = Session(*m).last_logits(ids);
    const auto top_ids = r["top_ids"].get<std::vector<int>>();
    const auto top_logits = r["top_logits"].get<std::vector<float>>();
    std::vector<int> order(logits.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int(i);
    std::partial_sort(order.begin(), order.begin() + 10, order.end(),
                      [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
    order.resize(10);
    EXPECT_EQ(order, top_ids) << dir << ": " << r["prompt"];
    for (size_t k = 0; k < top_ids.size(); ++k)
      EXPECT_NEAR(logits[size_t(top_ids[k])], top_logits[k], 1e-3) << dir << ": " << r["prompt"] << " rank " << k;
  }
}

// Copy a checkpoint's tensors into a new folder as safetensors, renaming and converting.
void write_variant(const std::string& src, const std::string& dst, DType dtype,
                   const std::function<std::string(const std::string&)>& rename, const nlohmann::json& config,
                   int shards = 1, int pad_rows_to = 0) {
  fs::create_directories(dst);
  TensorStore st = load_checkpoint(src);
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<NamedTensor> ts;
  for (const auto& [name, t] : st.tensors) {
    Weight w = to_f32(t, name);
    std::vector<int64_t> shape = t.shape;
    std::vector<float> v(w.data, w.data + w.size());
    if (pad_rows_to && (name.find("embedding") != std::string::npos || name == "lm_head.weight")) {  // pad the vocabulary
      v.resize(size_t(pad_rows_to) * size_t(shape[1]), 0.f);
      shape[0] = pad_rows_to;
    }
    std::vector<uint8_t> b(v.size() * dtype_size(dtype));
    for (size_t i = 0; i < v.size(); ++i) {
      if (dtype == DType::F32) std::memcpy(&b[4 * i], &v[i], 4);
      else {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
        std::memcpy(&b[2 * i], &h, 2);
      }
    }
    bufs.push_back(std::move(b));
    ts.push_back({rename(name), dtype, shape, bufs.back().data()});
  }
  if (shards == 1) {
    save_safetensors(dst + "/model.safetensors", ts);
  } else {
    nlohmann::json idx = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
    for (int s = 0; s < shards; ++s) {
      std::vector<NamedTensor> part;
      const std::string fn = "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
      for (size_t i = size_t(s); i < ts.size(); i += size_t(shards)) {
        part.push_back(ts[i]);
        idx["weight_map"][ts[i].name] = fn;
      }
      save_safetensors(dst + "/" + fn, part);
    }
    mqtest::write_file(dst + "/model.safetensors.index.json", idx.dump());
  }
  mqtest::write_file(dst + "/config.json", config.dump());
}

std::string to_hf(const std::string& n) {
  return n == "backbone.embedding.weight" ? "backbone.embeddings.weight" : n;
}

std::vector<float> prompt_logits(const Model& m) { return Session(m).last_logits(mqtest::tokenizer().encode("It was the best of times, it was")); }

}  // namespace

TEST(Reference, BundledMambaTinyLogits) { check_reference_logits(mqtest::repo("models/mamba-tiny"), mqtest::repo("models/mamba-tiny")); }
TEST(Reference, BundledMamba2TinyHfLogits) {
  check_reference_logits(mqtest::repo("models/mamba2-tiny-hf"), mqtest::repo("models/mamba2-tiny-hf"));
}
TEST(Reference, SharedModelsLogits) {
  if (!mqtest::have_shared()) GTEST_SKIP() << "../shared not present";
  for (const char* m : {"mamba-tiny", "mamba-tiny-hf", "mamba2-tiny", "mamba2-tiny-hf"})
    check_reference_logits(mqtest::shared(std::string("models/") + m), mqtest::shared(std::string("models/") + m));
}

class BothArchs : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, BothArchs, ::testing::Values("models/mamba-tiny", "models/mamba2-tiny-hf"));

TEST_P(BothArchs, DecodeAfterPrefillEqualsFullForward) {
  auto m = Model::load(mqtest::repo(GetParam()));
  Session S(*m);
  const auto ids = mqtest::tokenizer().encode("Call me Ishmael. Some years ago, never mind how long precisely, having little money");
  const int T = int(ids.size()), dm = m->config().d_model, pre = 5;
  std::vector<float> full(size_t(T) * dm);
  const int lens[1] = {T};
  S.forward(ids, lens, nullptr, full.data());
  SeqState st = S.new_state();
  SeqState* sp[1] = {&st};
  std::vector<float> h(size_t(pre) * dm);
  const int lp[1] = {pre};
  S.forward(std::span<const int32_t>(ids.data(), size_t(pre)), lp, sp, h.data());
  EXPECT_LT(mqtest::rel_err(h.data(), full.data(), size_t(pre) * dm), 1e-5);
  const int one[1] = {1};
  for (int t = pre; t < T; ++t) {
    S.forward(std::span<const int32_t>(ids.data() + t, 1), one, sp, h.data());
    EXPECT_LT(mqtest::rel_err(h.data(), full.data() + size_t(t) * dm, size_t(dm)), 1e-5) << "position " << t;
  }
  EXPECT_EQ(st.pos, T);
}

TEST_P(BothArchs, PackedBatchEqualsSeparateRuns) {
  auto m = Model::load(mqtest::repo(GetParam()));
  Session S(*m);
  const int dm = m->config().d_model;
  std::vector<std::vector<int32_t>> seqs = {mqtest::tokenizer().encode("The president said that the nation"), mqtest::tokenizer().encode("She"),
                                            mqtest::tokenizer().encode("In the beginning of the year, the committee met to decide"),
                                            mqtest::tokenizer().encode("Call me Ishmael.")};
  std::vector<int32_t> packed;
  std::vector<int> lens;
  for (auto& s : seqs) {
    packed.insert(packed.end(), s.begin(), s.end());
    lens.push_back(int(s.size()));
  }
  std::vector<float> hp(packed.size() * size_t(dm));
  S.forward(packed, lens, nullptr, hp.data());
  size_t off = 0;
  for (auto& s : seqs) {
    std::vector<float> h(s.size() * size_t(dm));
    const int l[1] = {int(s.size())};
    S.forward(s, l, nullptr, h.data());
    EXPECT_LT(mqtest::rel_err(hp.data() + off * size_t(dm), h.data(), h.size()), 1e-6);
    off += s.size();
  }
}

TEST(Layouts, StateSpacesBinToHfSafetensorsF32Bf16ShardedPadded) {
  const std::string src = mqtest::repo("models/mamba-tiny");
  auto base = Model::load(src);
  const auto ref = prompt_logits(*base);
  // the Hugging Face config of the same model, written the way transformers writes it
  auto hf_cfg = nlohmann::json::parse(R"({"architectures": ["MambaForCausalLM"], "model_type": "mamba",
      "hidden_size": 256, "num_hidden_layers": 8, "state_size": 16, "expand": 2, "conv_kernel": 4,
      "time_step_rank": 16, "use_bias": false, "use_conv_bias": true, "layer_norm_epsilon": 1e-05,
      "tie_word_embeddings": true, "vocab_size": 50280, "torch_dtype": "float32"})");
  const std::string d = mqtest::temp_dir("layouts");
  // fp16 checkpoint -> fp32 safetensors with HF names: identical numbers
  write_variant(src, d + "/f32", DType::F32, to_hf, hf_cfg);
  EXPECT_EQ(prompt_logits(*Model::load(d + "/f32")), ref);
  // sharded with an index: identical
  write_variant(src, d + "/sharded", DType::F32, to_hf, hf_cfg, 3);
  EXPECT_EQ(prompt_logits(*Model::load(d + "/sharded")), ref);
  // bf16: rounding the fp16 weights to bf16 moves logits a little, not the prediction
  write_variant(src, d + "/bf16", DType::BF16, to_hf, hf_cfg);
  auto bl = prompt_logits(*Model::load(d + "/bf16"));
  EXPECT_LT(mqtest::rel_err(bl, ref), 0.05);
  EXPECT_EQ(std::max_element(bl.begin(), bl.end()) - bl.begin(), std::max_element(ref.begin(), ref.end()) - ref.begin());
  // state-spaces config padded to 16: 50288 rows, the extra rows zero
  auto ss_cfg = read_json_file(src + "/config.json");
  ss_cfg["pad_vocab_size_multiple"] = 16;
  write_variant(src, d + "/pad16", DType::F16, [](const std::string& n) { return n; }, ss_cfg, 1, 50288);
  auto m16 = Model::load(d + "/pad16");
  EXPECT_EQ(m16->config().padded_vocab, 50288);
  auto pl = prompt_logits(*m16);
  EXPECT_EQ(std::vector<float>(pl.begin(), pl.begin() + 50280), ref);
}

TEST(Layouts, SharedStateSpacesMamba2Bin) {
  if (!mqtest::have_shared()) GTEST_SKIP() << "../shared not present";
  auto a = Model::load(mqtest::shared("models/mamba2-tiny"));
  auto b = Model::load(mqtest::repo("models/mamba2-tiny-hf"));
  EXPECT_EQ(prompt_logits(*a), prompt_logits(*b));
}

TEST(Layouts, Mamba2GroupsRunAndDecodeMatches) {
  // ngroups > 1 (as mamba2-8b): random weights, decode must equal prefill
  auto cfg = parse_config(nlohmann::json::parse(R"({"d_model": 128, "n_layer": 2, "vocab_size": 1000,
      "ssm_cfg": {"layer": "Mamba2", "ngroups": 4, "headdim": 16, "d_state": 32}})"), "g4.json");
  auto m = Model::random(cfg, 7);
  Session S(*m);
  std::vector<int32_t> ids = {5, 17, 300, 2, 999, 41, 7};
  const int T = int(ids.size()), dm = 128;
  std::vector<float> full(size_t(T) * dm), h(static_cast<size_t>(dm));
  const int lens[1] = {T}, one[1] = {1};
  S.forward(ids, lens, nullptr, full.data());
  SeqState st = S.new_state();
  SeqState* sp[1] = {&st};
  for (int t = 0; t < T; ++t) {
    S.forward(std::span<const int32_t>(ids.data() + t, 1), one, sp, h.data());
    EXPECT_LT(mqtest::rel_err(h.data(), full.data() + size_t(t) * dm, size_t(dm)), 1e-5);
  }
}

TEST(BadCheckpoints, MissingUnexpectedMisshapenAndUnsupported) {
  const std::string src = mqtest::repo("models/mamba-tiny");
  auto cfg = read_json_file(src + "/config.json");
  const std::string d = mqtest::temp_dir("badckpt");
  auto drop = [](const std::string& n) { return n == "backbone.layers.3.mixer.D" ? "dropped.D" : n; };
  write_variant(src, d + "/extra", DType::F16, drop, cfg);
  EXPECT_ERROR(Model::load(d + "/extra"), "model.safetensors", "backbone.layers.3.mixer.D", "missing");
  auto rename = [](const std::string& n) { return n == "backbone.norm_f.weight" ? "backbone.norm_final.weight" : n; };
  write_variant(src, d + "/renamed", DType::F16, rename, cfg);
  EXPECT_ERROR(Model::load(d + "/renamed"), "backbone.norm_f.weight", "missing");
  // config says 16 layers, checkpoint has 8
  auto c16 = cfg;
  c16["n_layer"] = 16;
  write_variant(src, d + "/layers", DType::F16, [](const std::string& n) { return n; }, c16);
  EXPECT_ERROR(Model::load(d + "/layers"), "backbone.layers.8.", "missing");
  // config with fewer layers: unexpected tensors
  auto c4 = cfg;
  c4["n_layer"] = 4;
  write_variant(src, d + "/fewer", DType::F16, [](const std::string& n) { return n; }, c4);
  EXPECT_ERROR(Model::load(d + "/fewer"), "unexpected tensor", "backbone.layers.");
  // d_state 32 in the config: A_log's shape disagrees
  auto cs = cfg;
  cs["ssm_cfg"]["d_state"] = 32;
  write_variant(src, d + "/shape", DType::F16, [](const std::string& n) { return n; }, cs);
  EXPECT_ERROR(Model::load(d + "/shape"), "model.safetensors", "has shape");
  // vocabulary disagreement
  auto cv = cfg;
  cv["vocab_size"] = 60000;
  write_variant(src, d + "/vocab", DType::F16, [](const std::string& n) { return n; }, cv);
  EXPECT_ERROR(Model::load(d + "/vocab"), "backbone.embedding.weight", "vocab");
  // integer weights are not a float dtype
  fs::create_directories(d + "/int");
  std::vector<int8_t> q(256, 1);
  TensorStore st = load_checkpoint(src);
  std::vector<NamedTensor> ts;
  std::vector<std::vector<float>> keep;
  for (const auto& [name, t] : st.tensors) {
    Weight w = to_f32(t, name);
    keep.emplace_back(w.data, w.data + w.size());
    if (name == "backbone.norm_f.weight") ts.push_back({name, DType::I8, t.shape, q.data()});
    else ts.push_back({name, DType::F32, t.shape, keep.back().data()});
  }
  save_safetensors(d + "/int/model.safetensors", ts);
  mqtest::write_file(d + "/int/config.json", cfg.dump());
  EXPECT_ERROR(Model::load(d + "/int"), "backbone.norm_f.weight", "I8");
  // token ids outside the vocabulary
  auto m = Model::load(src);
  std::vector<int32_t> bad = {1, 2, 99999};
  EXPECT_ERROR(Session(*m).last_logits(bad), "99999", "vocabulary");
}

// A tied head stored under its own name (state-spaces checkpoints) is one tensor: held once, so
// quantized folders save it once, and counted once, so both layouts report the same size.
TEST(TiedHead, StoredOnceAndCountedOnceInEveryLayout) {
  auto ss = Model::load(mqtest::model_dir("mamba-tiny"));
  EXPECT_EQ(ss->weights().lm_head.data, ss->weights().embedding.data);
  // d_model 256, 8 layers, vocabulary 50,280: embedding 12.87 M + 8 layers of 0.44 M + norm
  const int64_t V = 50280, D = 256, E = 512, N = 16, R = 16;
  const int64_t layer = D + 2 * E * D + E * 4 + E + (R + 2 * N) * E + E * R + E + E * N + E + D * E;
  EXPECT_EQ(ss->num_params(), V * D + 8 * layer + D);
  if (mqtest::have_shared()) {
    auto hf = Model::load(mqtest::shared("models/mamba-tiny-hf"));
    EXPECT_EQ(hf->num_params(), ss->num_params());
  }
  // a separate head with different values stays separate
  auto t = mambaq::fuzz::tiny_model(false, 1);
  t.config["tie_embeddings"] = false;
  t.add("lm_head.weight", {64, 16}, 77, 1.f);
  auto m = Model::load([&] { const std::string d = mqtest::temp_dir("untied"); t.save(d); return d; }());
  EXPECT_NE(m->weights().lm_head.data, m->weights().embedding.data);
  EXPECT_EQ(m->weights().lm_head.f32()[3], t.at("lm_head.weight")[3]);
}
