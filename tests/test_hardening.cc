// Bad input, one class of defect at a time (issue: "no input crashes it or makes it lie"). Each
// test builds the bad input itself and checks for one clear error naming the file, tensor, field
// or flag — or, where mambaq carries on, for a correct result. The fuzzers (fuzz/) explore the
// same parsers at random; their past crashers are replayed by the fuzz_regressions_* tests.
#include <sys/stat.h>
#include <zip.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "analysis/explog.h"
#include "analysis/report.h"
#include "analysis/sweep.h"
#include "io/json_file.h"
#include "io/npz.h"
#include "io/safetensors.h"
#include "io/torch_zip.h"
#include "kernels/backend.h"
#include "kernels/ref/ops.h"
#include "mambaq/checkpoint.h"
#include "mambaq/eval.h"
#include "mambaq/model.h"
#include "tiny_model.h"
#include "torch_writer.h"
#include "util.h"

using namespace mambaq;
namespace fs = std::filesystem;
using mambaq::fuzz::tiny_model;

namespace {

std::string save_tiny(const fuzz::TinyModel& t, const std::string& name) {
  const std::string d = mqtest::temp_dir(name);
  t.save(d);
  return d;
}

// ---- pickle / zip builders (what torch.save writes, with fields under our control) ----
std::string one_tensor_pickle(const std::string& key, int64_t offset, const std::vector<int64_t>& shape,
                              const std::vector<int64_t>& stride) {
  return fuzz::torch_state_pickle({{"w", "FloatStorage", key, 16, offset, shape, stride}});
}
TensorStore from_pickle(const std::string& pkl, size_t storage_bytes = 64) {
  TensorStore st;
  torch_state_dict(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size(), "x.bin", "x.bin:data.pkl",
                   [&](const std::string&) { return std::make_shared<std::vector<uint8_t>>(storage_bytes, 1); }, st);
  return st;
}
void write_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  int err = 0;
  fs::remove(path);
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(z, nullptr);
  for (const auto& [name, data] : entries) {
    zip_source_t* s = zip_source_buffer(z, data.data(), data.size(), 0);
    const zip_int64_t idx = zip_file_add(z, name.c_str(), s, ZIP_FL_OVERWRITE);
    ASSERT_GE(idx, 0);
    zip_set_file_compression(z, zip_uint64_t(idx), ZIP_CM_STORE, 0);
  }
  ASSERT_EQ(zip_close(z), 0);
}
std::string floats(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A safetensors file from a header JSON and raw data bytes.
std::string safetensors_bytes(const nlohmann::json& header, const std::string& data, size_t pad_to = 8) {
  std::string h = header.dump();
  while (pad_to && (8 + h.size()) % pad_to) h.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(h.size()) >> (8 * i)) & 0xff);
  return out + h + data;
}

}  // namespace

// ---------------------------------------------------------------- non-finite numbers
TEST(Hardening, NonFiniteWeightIsRefusedNamingTheTensor) {
  for (bool m2 : {false, true}) {
    auto t = tiny_model(m2, 2);
    t.at("backbone.layers.1.mixer.D")[2] = std::nanf("");
    EXPECT_ERROR(Model::load(save_tiny(t, m2 ? "nan2" : "nan1")), "backbone.layers.1.mixer.D", "non-finite");
    auto u = tiny_model(m2, 1);
    u.at("backbone.norm_f.weight")[0] = INFINITY;
    EXPECT_ERROR(Model::load(save_tiny(u, m2 ? "inf2" : "inf1")), "backbone.norm_f.weight", "non-finite");
  }
}

TEST(Hardening, NormEpsilonMustBePositiveAndFinite) {
  auto t = tiny_model(true, 1);
  for (double eps : {-1e-5, 0.0, 2.0}) {
    t.config["layer_norm_epsilon"] = eps;
    EXPECT_ERROR(Model::load(save_tiny(t, "eps")), "config.json", "layer_norm_epsilon");
  }
  t.config["layer_norm_epsilon"] = "1e-5";
  EXPECT_ERROR(Model::load(save_tiny(t, "eps")), "layer_norm_epsilon", "number");
}

TEST(Hardening, OverflowInsideTheForwardPassNamesTheLayer) {
  // Finite but huge weights in layer 1's out_proj: the block output overflows to Inf there.
  for (bool m2 : {false, true}) {
    auto t = tiny_model(m2, 3);
    for (float& v : t.at("backbone.layers.1.norm.weight")) v = 3e38f;  // in_proj's dot products overflow
    auto m = Model::load(save_tiny(t, "overflow"));
    const std::vector<int32_t> toks = {1, 2, 3, 4, 5, 6};
    EXPECT_ERROR(Session(*m).last_logits(toks), "non-finite", "layer 1", "fp32 mode");
  }
}

TEST(Hardening, ReportDrawsNonFiniteSnapshotsWithoutCrashing) {
  ReportInputs in;
  in.snapshots.push_back({"act.npz", {{"layer0.x", {1.f, NAN, -2.f, INFINITY, 0.5f}}, {"all_nan", {NAN, NAN}}}});
  const std::string html = render_report(in);
  EXPECT_NE(html.find("2 non-finite values"), std::string::npos);
  EXPECT_NE(html.find("all_nan"), std::string::npos);
}

TEST(Hardening, ReportEscapesNamesFromFiles) {
  ReportInputs in;
  in.snapshots.push_back({"<b>a.npz</b>", {{"x\"><script>alert(1)</script>", {1.f, 2.f}}}});
  in.compares.push_back({"c'<i>.json", nlohmann::json{{"cand", "<script>"}, {"ref", "r"}, {"layers", nlohmann::json::array()},
                                                       {"logits", {{"kl", 0.1}, {"top1", 1.0}}}}});
  const std::string html = render_report(in);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<b>a.npz"), std::string::npos);
  EXPECT_EQ(html.find("<i>"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;"), std::string::npos);
}

TEST(Hardening, ReportNamesTheFileOfAMalformedCompareJson) {
  ReportInputs in;
  in.compares.push_back({"broken.json", nlohmann::json{{"layers", "not a list"}, {"logits", 3}}});
  EXPECT_ERROR(render_report(in), "broken.json");
  // the second of two files is the broken one: the error names it, not the first
  const nlohmann::json good = {{"layers", nlohmann::json::array()}, {"logits", {{"kl", 0.1}, {"top1", 1.0}}}};
  for (const nlohmann::json& bad : {nlohmann::json{{"runs", 3}}, nlohmann::json{{"runs", {{{"label", "x"}}}}},
                                    nlohmann::json{{"runs", {{{"layers", {{{"layer", "0"}, {"tensor", "block_out"}}}},
                                                              {"logits", {{"kl", 0.1}}}}}}}}) {
    ReportInputs two;
    two.compares = {{"good.json", good}, {"bad.json", bad}};
    EXPECT_ERROR(render_report(two), "bad.json");
  }
  // a difference histogram with non-finite bounds is drawn as "no data", never as NaN coordinates
  nlohmann::json run = {{"label", "r"},
                        {"layers", {{{"layer", 0}, {"tensor", "block_out"}, {"mse", 1e-3}, {"corr", 0.99},
                                     {"diff_histogram", {{"lo", -INFINITY}, {"hi", 1.0}, {"counts", {1, 2}}}}}}},
                        {"logits", {{"kl", 0.1}, {"top1", 1.0}}}};
  ReportInputs inf;
  inf.compares = {{"inf.json", {{"runs", {run}}}}};
  const std::string html = render_report(inf);
  EXPECT_EQ(html.find("nan"), std::string::npos);
  EXPECT_NE(html.find("no data"), std::string::npos);
}

// ---------------------------------------------------------------- pickle records
TEST(Hardening, PickleStridesAndOffsetsOutsideTheirStorageAreRefused) {
  // a valid record first: 16 floats of storage, a 4x4 view
  EXPECT_EQ(from_pickle(one_tensor_pickle("0", 0, {4, 4}, {4, 1})).tensors.at("w").shape, (std::vector<int64_t>{4, 4}));
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", -1, {4}, {1})), "'w'", "negative storage offset");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", 0, {4, 4}, {-4, 1})), "'w'", "negative");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", 0, {-3}, {1})), "'w'", "negative");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", 13, {4}, {1})), "'w'", "reaches element 16");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", 0, {2, 2}, {8, 9})), "'w'", "reaches element");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", 0, {int64_t(1) << 40, int64_t(1) << 40}, {1, 1})), "'w'", "overflow");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", INT64_MAX - 2, {4}, {1})), "'w'");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", 0, {4}, {INT64_MAX / 2})), "'w'", "overflow");
  // stride 0 repeats one element a billion times: refused rather than materialised
  EXPECT_ERROR(from_pickle(one_tensor_pickle("0", 0, {1000000000}, {0})), "'w'", "more elements than its storage");
}

TEST(Hardening, PickleStorageKeyWithNulOrPathIsRefused) {
  EXPECT_ERROR(from_pickle(one_tensor_pickle(std::string("0\0" "1", 3), 0, {4}, {1})), "key", "not a storage file name");
  EXPECT_ERROR(from_pickle(one_tensor_pickle("../0", 0, {4}, {1})), "not a storage file name");
}

TEST(Hardening, DeeplyNestedPickleIsFreedWithoutRecursion) {
  // a list nested 200,000 deep, then STOP: a recursive destructor would overflow the stack
  std::string b = "\x80\x02";
  for (int i = 0; i < 200000; ++i) b += "]";
  for (int i = 0; i < 199999; ++i) b += "a";
  b += ".";
  TensorStore st;
  EXPECT_ERROR(torch_state_dict(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "x.bin", "x.bin:data.pkl",
                                [](const std::string&) { return std::make_shared<std::vector<uint8_t>>(); }, st),
               "state_dict");
}

// ---------------------------------------------------------------- zip members
TEST(Hardening, CorruptZipMemberFailsItsCrc) {
  const std::string d = mqtest::temp_dir("crc");
  const std::string pkl = one_tensor_pickle("0", 0, {4, 4}, {4, 1});
  std::vector<float> vals(16);
  for (int i = 0; i < 16; ++i) vals[size_t(i)] = 0.5f + float(i);
  write_zip(d + "/good.bin", {{"archive/data.pkl", pkl}, {"archive/data/0", floats(vals)}});
  TensorStore ok;
  load_torch_zip(d + "/good.bin", ok);
  EXPECT_EQ(to_f32(ok.tensors.at("w"), "w").data[5], 5.5f);
  // flip one byte of the stored weights in place
  std::string bytes = mqtest::read_file(d + "/good.bin");
  const size_t at = bytes.find(floats(vals));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 21] ^= 0x40;
  mqtest::write_file(d + "/bad.bin", bytes);
  TensorStore st;
  EXPECT_ERROR(load_torch_zip(d + "/bad.bin", st), "bad.bin", "archive/data/0", "CRC");
}

TEST(Hardening, ZipMemberDeclaringAHugeSizeIsNotAllocated) {
  const std::string d = mqtest::temp_dir("bomb");
  const std::string pkl = one_tensor_pickle("0", 0, {4}, {1});
  write_zip(d + "/a.bin", {{"archive/data.pkl", pkl}, {"archive/data/0", floats({1, 2, 3, 4})}});
  // Patch the uncompressed size of data/0 to 2^40 in the local and central headers.
  std::string b = mqtest::read_file(d + "/a.bin");
  const auto patch = [&](const std::string& sig, size_t size_off, size_t nlen_off, size_t name_off) {
    for (size_t p = b.find(sig); p != std::string::npos; p = b.find(sig, p + 1)) {
      const uint16_t nlen = uint16_t(uint8_t(b[p + nlen_off]) | (uint8_t(b[p + nlen_off + 1]) << 8));
      if (b.compare(p + name_off, nlen, "archive/data/0") == 0) {
        const uint32_t big = 0xfffffff0u;
        for (int i = 0; i < 4; ++i) b[p + size_off + size_t(i)] = char((big >> (8 * i)) & 0xff);
      }
    }
  };
  patch(std::string("PK\x03\x04", 4), 22, 26, 30);  // local header: size at 22, name length at 26
  patch(std::string("PK\x01\x02", 4), 24, 28, 46);  // central directory: size at 24, name length at 28
  mqtest::write_file(d + "/bomb.bin", b);
  TensorStore st;
  EXPECT_ERROR(load_torch_zip(d + "/bomb.bin", st), "bomb.bin");
}

// A data.pkl that inflates to more than any state_dict's description needs (65 MiB of zeros
// deflate to ~64 KB, within deflate's ratio bound) is refused by its declared size, before the
// allocation, naming the member and the limit.
TEST(Hardening, APickleMemberIsBoundedByWhatItDescribes) {
  const std::string d = mqtest::temp_dir("pkl_bound");
  std::string pkl = one_tensor_pickle("0", 0, {4}, {1});
  pkl.resize(65u << 20, '\0');
  int err = 0;
  zip_t* z = zip_open((d + "/big.bin").c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(z, nullptr);
  const std::string data = floats({1, 2, 3, 4});
  const zip_int64_t i = zip_file_add(z, "archive/data.pkl", zip_source_buffer(z, pkl.data(), pkl.size(), 0), 0);
  ASSERT_GE(i, 0);
  ASSERT_EQ(zip_set_file_compression(z, zip_uint64_t(i), ZIP_CM_DEFLATE, 9), 0);
  ASSERT_GE(zip_file_add(z, "archive/data/0", zip_source_buffer(z, data.data(), data.size(), 0), 0), 0);
  ASSERT_EQ(zip_close(z), 0);
  EXPECT_LT(fs::file_size(d + "/big.bin"), 1u << 20);
  TensorStore st;
  EXPECT_ERROR(load_torch_zip(d + "/big.bin", st), "big.bin", "archive/data.pkl", "at most 64 MiB");
}

// ---------------------------------------------------------------- safetensors offsets
TEST(Hardening, SafetensorsMisalignedDataIsReadCorrectly) {
  // a header padded to an odd length puts F32 data at an odd address: values must still be right
  const std::string d = mqtest::temp_dir("align");
  const std::vector<float> v = {1.25f, -2.5f, 3.75f};
  const nlohmann::json h = {{"a", {{"dtype", "U8"}, {"shape", {3}}, {"data_offsets", {0, 3}}}},
                            {"w", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {3, 15}}}}};
  mqtest::write_file(d + "/m.safetensors", safetensors_bytes(h, std::string("xyz") + floats(v), 0));
  TensorStore st;
  load_safetensors(d + "/m.safetensors", st);
  const Weight w = to_f32(st.tensors.at("w"), "w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data) % alignof(float), 0u);
  EXPECT_EQ(std::vector<float>(w.data, w.data + 3), v);
}

TEST(Hardening, SafetensorsShiftedOffsetsOrTrailingDataAreRefused) {
  const std::string d = mqtest::temp_dir("shift");
  const std::string data = floats({1, 2, 3, 4});
  const auto header = [](int b0, int e0, int b1, int e1) {
    return nlohmann::json{{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {b0, e0}}}},
                          {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {b1, e1}}}}};
  };
  const auto load = [&](const std::string& name, const nlohmann::json& h) {
    mqtest::write_file(d + "/" + name, safetensors_bytes(h, data));
    TensorStore st;
    load_safetensors(d + "/" + name, st);
  };
  auto full = header(0, 8, 8, 12);
  full["c"] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {12, 16}}};
  EXPECT_NO_THROW(load("ok.safetensors", full));
  EXPECT_ERROR(load("gap.safetensors", header(0, 8, 12, 16)), "gap.safetensors", "'b'", "gap");
  EXPECT_ERROR(load("shift.safetensors", header(4, 12, 12, 16)), "shift.safetensors", "'a'");
  EXPECT_ERROR(load("tail.safetensors", header(0, 8, 8, 12)), "tail.safetensors", "trailing");
  mqtest::write_file(d + "/huge.safetensors",
                     safetensors_bytes({{"a", {{"dtype", "F32"}, {"shape", {int64_t(1) << 40, int64_t(1) << 40}},
                                               {"data_offsets", {0, 16}}}}}, data));
  TensorStore st;
  EXPECT_ERROR(load_safetensors(d + "/huge.safetensors", st), "huge.safetensors", "'a'");
}

// ---------------------------------------------------------------- JSON depth
TEST(Hardening, DeeplyNestedJsonIsRefusedNotRecursedInto) {
  const std::string d = mqtest::temp_dir("deep");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  mqtest::write_file(d + "/log.jsonl", "{\"a\": 1}\n{\"x\": " + deep + "}\n");
  EXPECT_ERROR(read_log(d + "/log.jsonl"), "log.jsonl:2", "nested");
  mqtest::write_file(d + "/config.json", "{\"d_model\": " + deep + "}");
  EXPECT_ERROR(load_config(d), "config.json", "nested");
  // brackets inside strings do not count
  EXPECT_NO_THROW(parse_json("{\"text\": \"" + std::string(500, '[') + "\"}", "s"));
}

// ---------------------------------------------------------------- config fields
TEST(Hardening, IntegerConfigFieldsAreStrict) {
  auto t = tiny_model(false, 1);
  const std::string d = mqtest::temp_dir("ints");
  const auto load_with = [&](const std::string& key, const nlohmann::json& v) {
    auto c = t.config;
    c[key] = v;
    mqtest::write_file(d + "/config.json", c.dump());
    return load_config(d);
  };
  EXPECT_ERROR(load_with("n_layer", 4294967297LL), "config.json", "'n_layer'", "out of range");
  EXPECT_ERROR(load_with("n_layer", 1.5), "'n_layer'", "integer");
  EXPECT_ERROR(load_with("n_layer", true), "'n_layer'", "integer");
  EXPECT_ERROR(load_with("d_model", "16"), "'d_model'", "integer");
  EXPECT_ERROR(load_with("vocab_size", -64), "'vocab_size'", "out of range");
  EXPECT_ERROR(load_with("rms_norm", 1), "'rms_norm'", "true or false");
  EXPECT_ERROR(load_with("tie_embeddings", "yes"), "'tie_embeddings'", "true or false");
  EXPECT_EQ(load_with("n_layer", 3).n_layer, 3);
}

TEST(Hardening, ConfigFieldsMambaqCannotHonourAreRefused) {
  const std::string d = mqtest::temp_dir("unsupported");
  const auto load_with = [&](nlohmann::json c) {
    mqtest::write_file(d + "/config.json", c.dump());
    return load_config(d);
  };
  auto ss = tiny_model(false, 1).config;
  auto c = ss;
  c["ssm_cfg"]["some_new_option"] = 3;
  EXPECT_ERROR(load_with(c), "ssm_cfg", "some_new_option");
  c = ss;
  c["ssm_cfg"]["layer"] = "Mamba2";
  c["ssm_cfg"]["headdim"] = 8;
  c["ssm_cfg"]["D_has_hdim"] = true;
  EXPECT_ERROR(load_with(c), "D_has_hdim");
  c["ssm_cfg"]["D_has_hdim"] = false;
  c["ssm_cfg"]["dt_limit"] = {0.001, 0.1};
  EXPECT_ERROR(load_with(c), "dt_limit");
  c["ssm_cfg"]["dt_limit"] = {0.0, nullptr};  // the default, as JSON writes infinity
  EXPECT_NO_THROW(load_with(c));
  auto hf = tiny_model(true, 1).config;
  hf["hidden_act"] = "gelu";
  EXPECT_ERROR(load_with(hf), "hidden_act", "gelu");
  hf["hidden_act"] = "silu";
  hf["time_step_limit"] = {0.0, 0.5};
  EXPECT_ERROR(load_with(hf), "time_step_limit");
  hf.erase("time_step_limit");
  hf["conv_kernel"] = 9;
  EXPECT_ERROR(load_with(hf), "conv_kernel");
}

TEST(Hardening, LayerNormKernelMatchesHandComputedValues) {
  // x = [1, 2, 3, 6]: mean 3, biased variance (4+1+0+9)/4 = 3.5
  const float x[4] = {1, 2, 3, 6}, w[4] = {1, 2, 0.5f, -1}, b[4] = {0.1f, 0, -0.2f, 1};
  const double r = 1.0 / std::sqrt(3.5 + 1e-5);
  const double expect[4] = {-2 * r * 1 + 0.1, -1 * r * 2, 0 * r * 0.5 - 0.2, 3 * r * -1 + 1};
  float o_ref[4], o_cpu[4];
  ref::layernorm(x, w, b, o_ref, 1, 4, 1e-5f);
  host_backend().layernorm(nullptr, x, w, b, o_cpu, 1, 4, 1e-5f);  // cpu: host memory
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(o_ref[i], expect[i], 1e-6);
    EXPECT_NEAR(o_cpu[i], expect[i], 1e-6);
  }
  // random rows with a large offset (cancellation): fast vs reference within 1e-5 relative,
  // a few float roundings of values of size ~1 after normalisation
  const int T = 37, D = 257;
  auto xs = mqtest::randn(size_t(T) * D, 5, 3.f, 100.f), ws = mqtest::randn(D, 6), bs = mqtest::randn(D, 7);
  std::vector<float> a(xs.size()), c(xs.size());
  ref::layernorm(xs.data(), ws.data(), bs.data(), a.data(), T, D, 1e-5f);
  host_backend().layernorm(nullptr, xs.data(), ws.data(), bs.data(), c.data(), T, D, 1e-5f);
  EXPECT_LT(mqtest::rel_err(c, a), 1e-5);
}

TEST(Hardening, RmsNormFalseRunsLayerNormWithBiases) {
  auto t = tiny_model(false, 2);
  t.config["rms_norm"] = false;
  // mamba_ssm's LayerNorm carries a bias: without one the checkpoint is incomplete
  EXPECT_ERROR(Model::load(save_tiny(t, "ln-missing")), "backbone.layers.0.norm.bias");
  t.add("backbone.layers.0.norm.bias", {16}, 901, 0.2f);
  t.add("backbone.layers.1.norm.bias", {16}, 902, 0.2f);
  t.add("backbone.norm_f.bias", {16}, 903, 0.2f);
  auto ln = Model::load(save_tiny(t, "ln"));
  // An independent check of the first block's norm: layer 0's in_proj:input must equal a
  // LayerNorm computed here from the embedding row.
  struct Grab : Tap {
    std::vector<float> v;
    void on(int layer, std::string_view point, float* data, int rows, int cols, std::span<const int>) override {
      if (layer == 0 && point == "in_proj:input") v.assign(data, data + size_t(rows) * cols);
    }
  } grab;
  const std::vector<int32_t> toks = {7};
  const int lens[1] = {1};
  std::vector<float> hidden(16);
  Session(*ln).forward(toks, lens, nullptr, hidden.data(), &grab);
  ASSERT_EQ(grab.v.size(), 16u);
  const float* e = t.at("backbone.embedding.weight").data() + 7 * 16;
  double mean = 0, var = 0;
  for (int i = 0; i < 16; ++i) mean += e[i] / 16.0;
  for (int i = 0; i < 16; ++i) var += (e[i] - mean) * (e[i] - mean) / 16.0;
  for (int i = 0; i < 16; ++i) {
    const double want = (e[i] - mean) / std::sqrt(var + 1e-5) * t.at("backbone.layers.0.norm.weight")[size_t(i)] +
                        t.at("backbone.layers.0.norm.bias")[size_t(i)];
    EXPECT_NEAR(grab.v[size_t(i)], want, 1e-5) << i;
  }
}

// ---------------------------------------------------------------- output paths
TEST(Hardening, OutputPathsAreCheckedBeforeTheWork) {
  const std::string m = mqtest::model_dir("mamba-tiny");
  // each would otherwise run for a while before failing to write
  mqtest::expect_one_line_error(mqtest::run_cli("eval " + m + " --tasks ppl:corpus/heldout.txt --json /nonexistent-dir/r.json"),
                                "--json");
  mqtest::expect_one_line_error(mqtest::run_cli("eval " + m + " --tasks ppl:corpus/heldout.txt --log /nonexistent-dir/l.jsonl"),
                                "--log");
  const std::string d = mqtest::temp_dir("outpaths");
  mqtest::expect_one_line_error(mqtest::run_cli("quantize " + m + " -o " + d + "/q --save-activations /nonexistent-dir/a.npz"),
                                "--save-activations");
  EXPECT_FALSE(fs::exists(d + "/q"));
  mqtest::write_file(d + "/afile", "x");
  mqtest::expect_one_line_error(mqtest::run_cli("quantize " + m + " -o " + d + "/afile/sub"), "-o");
  mqtest::expect_one_line_error(mqtest::run_cli("compare --ref " + m + " --cand " + m + " --save-dir " + d + "/afile"),
                                "--save-dir");
  mqtest::expect_one_line_error(mqtest::run_cli("logits " + m + " --prompt hi --json " + d), "--json");
}

// ---------------------------------------------------------------- tokenizer ids
TEST(Hardening, TokenizerIdsOutsideTheTableAreRefused) {
  const std::string d = mqtest::temp_dir("tokids");
  const auto tok_with = [&](const nlohmann::json& vocab, const nlohmann::json& added) {
    nlohmann::json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
                        {"added_tokens", added}};
    mqtest::write_file(d + "/tokenizer.json", j.dump());
    return Tokenizer::load(d + "/tokenizer.json");
  };
  EXPECT_ERROR(tok_with({{"a", -5}}, nlohmann::json::array()), "tokenizer.json", "out of range");
  EXPECT_ERROR(tok_with({{"a", 1LL << 40}}, nlohmann::json::array()), "tokenizer.json", "out of range");
  EXPECT_ERROR(tok_with({{"a", 1}}, {{{"id", -1}, {"content", "<x>"}}}), "tokenizer.json", "added_tokens");
  EXPECT_ERROR(tok_with({{"a", "one"}}, nlohmann::json::array()), "tokenizer.json", "integer");
}

TEST(Hardening, ScoredTokenBeyondTheModelVocabularyIsAnError) {
  // A byte-level tokenizer whose 'Z' is id 1000, with a 64-token model: the last word's final
  // token is scored but never fed to the model, so only the scoring check can catch it.
  const std::string d = mqtest::temp_dir("tokvocab");
  nlohmann::json vocab = nlohmann::json::object();
  const auto b2u = [](int b) {  // GPT-2's byte -> code point map, for printable ASCII the identity
    return b == ' ' ? std::string("\xc4\xa0") : std::string(1, char(b));
  };
  for (int b = 'a'; b <= 'z'; ++b) vocab[b2u(b)] = b - 'a';
  vocab[b2u(' ')] = 30;
  vocab["Z"] = 1000;
  nlohmann::json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
                      {"added_tokens", nlohmann::json::array()}};
  mqtest::write_file(d + "/tokenizer.json", j.dump());
  auto tok = Tokenizer::load(d + "/tokenizer.json");
  auto t = tiny_model(false, 1);
  auto m = Model::load(save_tiny(t, "tokvocab-model"));
  mqtest::write_file(d + "/docs.jsonl", "{\"text\": \"a b c Z\"}\n");
  EvalOptions o;
  o.progress = false;
  o.data_dir = d;
  EXPECT_ERROR(run_task(*m, *tok, "lastword:" + d + "/docs.jsonl", o), "1000", "vocabulary");
}

// ---------------------------------------------------------------- files that are not what they say
TEST(Hardening, ShardIndexCannotNameFilesOutsideTheFolder) {
  const std::string d = mqtest::temp_dir("shards");
  auto t = tiny_model(false, 1);
  t.save(d + "/m");
  fs::rename(d + "/m/model.safetensors", d + "/outside.safetensors");
  nlohmann::json idx = {{"weight_map", nlohmann::json::object()}};
  for (const auto& n : t.names) idx["weight_map"][n] = "../outside.safetensors";
  mqtest::write_file(d + "/m/model.safetensors.index.json", idx.dump());
  EXPECT_ERROR(load_checkpoint(d + "/m"), "index.json", "../outside.safetensors", "not a file in the model folder");
  for (const auto& n : t.names) idx["weight_map"][n] = d + "/outside.safetensors";
  mqtest::write_file(d + "/m/model.safetensors.index.json", idx.dump());
  EXPECT_ERROR(load_checkpoint(d + "/m"), "not a file in the model folder");
}

TEST(Hardening, FifoInPlaceOfAFileIsRefusedNotWaitedOn) {
  const std::string d = mqtest::temp_dir("fifo");
  mqtest::write_file(d + "/config.json", tiny_model(false, 1).config.dump());
  ASSERT_EQ(mkfifo((d + "/model.safetensors").c_str(), 0600), 0);
  EXPECT_ERROR(Model::load(d), "model.safetensors", "FIFO");
  const std::string d2 = mqtest::temp_dir("fifo2");
  ASSERT_EQ(mkfifo((d2 + "/config.json").c_str(), 0600), 0);
  EXPECT_ERROR(load_config(d2), "config.json", "FIFO");
  ASSERT_EQ(mkfifo((d2 + "/pytorch_model.bin").c_str(), 0600), 0);
  TensorStore st;
  EXPECT_ERROR(load_torch_zip(d2 + "/pytorch_model.bin", st), "FIFO");
}

// ---------------------------------------------------------------- resource blow-ups
TEST(Hardening, HugeSweepMatrixIsRefusedBeforeExpansion) {
  const std::string d = mqtest::temp_dir("sweepbig");
  std::string vals;
  for (int i = 0; i < 100; ++i) vals += (i ? ", " : "") + std::to_string(0.9 + i * 1e-4);
  mqtest::write_file(d + "/s.toml", "[sweep]\ntasks = [\"ppl:x.txt\"]\n[matrix]\nmodel = [\"m\"]\npercentile_alpha = [" + vals +
                                        "]\ncalib_num = [" + vals + "]\ncalib_seqlen = [" + vals + "]\nw_bits = [" + vals + "]\n");
  EXPECT_ERROR(load_sweep(d + "/s.toml"), "s.toml", "more than");
}

TEST(Hardening, LongTextAndLongWordTokenizeAndRoundTrip) {
  // The heap-based merge loop gives HF's ids on every lambada/wikitext line (test_tokenizer);
  // here: a long text, and one very long unbroken word (quadratic before), decode back exactly.
  const auto& tok = mqtest::tokenizer();
  std::ifstream in(mqtest::repo("data/corpus/heldout.txt"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.resize(20000);
  const auto ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  // A 300 KB word without spaces: linearithmic, and it decodes back to itself.
  std::string word;
  for (int i = 0; i < 60000; ++i) word += "abcde"[i % 5 == 3 ? (i / 7) % 5 : i % 5];
  const auto wids = tok.encode(word);
  EXPECT_EQ(tok.decode(wids), word);
  EXPECT_LT(wids.size(), word.size() / 2);  // real merges happened
}
