// safetensors and torch-zip readers: round trips, hand-built torch checkpoints (shared
// storages, offsets, strides, any root folder), and every malformed-file error.
#include <zip.h>

#include <cstring>

#include "core/half.h"
#include "io/safetensors.h"
#include "io/torch_zip.h"
#include "mambaq/checkpoint.h"
#include "mambaq/error.h"
#include "torch_writer.h"
#include "util.h"

using namespace mambaq;

namespace {

using mambaq::fuzz::PickleWriter;
std::string torch_pickle(const std::vector<mambaq::fuzz::TorchTensorRecord>& ts) { return mambaq::fuzz::torch_state_pickle(ts); }

void write_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(z, nullptr);
  std::vector<std::string> keep;
  keep.reserve(entries.size());
  for (const auto& [name, data] : entries) {
    keep.push_back(data);
    zip_source_t* s = zip_source_buffer(z, keep.back().data(), keep.back().size(), 0);
    const zip_int64_t idx = zip_file_add(z, name.c_str(), s, ZIP_FL_OVERWRITE);
    ASSERT_GE(idx, 0);
    zip_set_file_compression(z, zip_uint64_t(idx), ZIP_CM_STORE, 0);
  }
  ASSERT_EQ(zip_close(z), 0);
}

std::string floats_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::vector<float> as_f32(const RawTensor& t) {
  Weight w = to_f32(t, "t");
  return std::vector<float>(w.data, w.data + w.size());
}

}  // namespace

TEST(TorchZip, SharedStorageOffsetsStridesAndAnyRootFolder) {
  // storage "0": 12 floats 0..11. "w" = [3,4] view; "tied" = same storage; "col" = w[:, 1] via
  // offset 1 stride 4; "t" = w^T via strides (1, 4). storage "1": 4 halves.
  std::vector<float> s0(12);
  for (int i = 0; i < 12; ++i) s0[size_t(i)] = float(i);
  std::string s1;
  for (float f : {1.5f, -2.f, 0.25f, 65504.f}) {
    const uint16_t h = f32_to_f16(f);
    s1.append(reinterpret_cast<const char*>(&h), 2);
  }
  const auto pkl = torch_pickle({{"w", "FloatStorage", "0", 12, 0, {3, 4}, {4, 1}},
                                 {"tied", "FloatStorage", "0", 12, 0, {3, 4}, {4, 1}},
                                 {"col", "FloatStorage", "0", 12, 1, {3}, {4}},
                                 {"t", "FloatStorage", "0", 12, 0, {4, 3}, {1, 4}},
                                 {"h", "HalfStorage", "1", 4, 0, {2, 2}, {2, 1}}});
  for (const std::string root : {"archive", "pytorch_model", "my_checkpoint"}) {
    const std::string dir = mqtest::temp_dir("tz_" + root);
    const std::string path = dir + "/pytorch_model.bin";
    write_zip(path, {{root + "/data.pkl", pkl},
                     {root + "/data/0", floats_bytes(s0)},
                     {root + "/data/1", s1},
                     {root + "/version", "3\n"}});
    TensorStore st;
    load_torch_zip(path, st);
    ASSERT_EQ(st.tensors.size(), 5u) << root;
    EXPECT_EQ(as_f32(st.tensors.at("w")), s0);
    EXPECT_EQ(st.tensors.at("w").data, st.tensors.at("tied").data) << "one storage, not copied twice";
    EXPECT_EQ(as_f32(st.tensors.at("col")), (std::vector<float>{1, 5, 9}));
    EXPECT_EQ(as_f32(st.tensors.at("t")), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
    EXPECT_EQ(st.tensors.at("h").dtype, DType::F16);
    EXPECT_EQ(as_f32(st.tensors.at("h")), (std::vector<float>{1.5f, -2.f, 0.25f, 65504.f}));
  }
}

TEST(TorchZip, BFloat16Storage) {
  std::string s;
  for (float f : {1.0f, -3.5f, 1e30f}) {
    const uint16_t h = f32_to_bf16(f);
    s.append(reinterpret_cast<const char*>(&h), 2);
  }
  const std::string dir = mqtest::temp_dir("tz_bf16"), path = dir + "/m.bin";
  write_zip(path, {{"archive/data.pkl", torch_pickle({{"x", "BFloat16Storage", "0", 3, 0, {3}, {1}}})},
                   {"archive/data/0", s}});
  TensorStore st;
  load_torch_zip(path, st);
  auto v = as_f32(st.tensors.at("x"));
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -3.5f);
  EXPECT_NEAR(v[2], 1e30f, 1e28f);
}

TEST(TorchZip, Errors) {
  const std::string dir = mqtest::temp_dir("tz_err");
  TensorStore st;
  EXPECT_ERROR(load_torch_zip(dir + "/nope.bin", st), "nope.bin", "not found");
  mqtest::write_file(dir + "/legacy.bin", std::string("\x80\x02\x8a\x0a", 4) + "junkjunk");
  EXPECT_ERROR(load_torch_zip(dir + "/legacy.bin", st), "legacy.bin", "legacy");
  mqtest::write_file(dir + "/text.bin", "hello, not a checkpoint");
  EXPECT_ERROR(load_torch_zip(dir + "/text.bin", st), "text.bin", "not a PyTorch zip");
  // truncated copy of the bundled fixture
  const std::string full = mqtest::read_file(mqtest::repo("models/mamba-tiny/pytorch_model.bin"));
  mqtest::write_file(dir + "/trunc.bin", full.substr(0, full.size() / 2));
  EXPECT_ERROR(load_torch_zip(dir + "/trunc.bin", st), "trunc.bin");
  // no data.pkl
  write_zip(dir + "/nopkl.bin", {{"archive/other", "x"}});
  EXPECT_ERROR(load_torch_zip(dir + "/nopkl.bin", st), "nopkl.bin", "data.pkl");
  // storage entry missing
  write_zip(dir + "/nostorage.bin", {{"archive/data.pkl", torch_pickle({{"x", "FloatStorage", "7", 3, 0, {3}, {1}}})}});
  EXPECT_ERROR(load_torch_zip(dir + "/nostorage.bin", st), "nostorage.bin", "archive/data/7");
  // view reaching past its storage (a truncated storage)
  write_zip(dir + "/short.bin", {{"archive/data.pkl", torch_pickle({{"x", "FloatStorage", "0", 8, 0, {8}, {1}}})},
                                 {"archive/data/0", floats_bytes({1, 2, 3})}});
  EXPECT_ERROR(load_torch_zip(dir + "/short.bin", st), "short.bin", "'x'", "truncated");
  // unsupported storage type
  write_zip(dir + "/cplx.bin", {{"archive/data.pkl", torch_pickle({{"x", "ComplexFloatStorage", "0", 1, 0, {1}, {1}}})},
                                {"archive/data/0", floats_bytes({1, 2})}});
  EXPECT_ERROR(load_torch_zip(dir + "/cplx.bin", st), "cplx.bin", "'x'", "ComplexFloatStorage");
  // corrupt pickle stream
  write_zip(dir + "/badpkl.bin", {{"archive/data.pkl", "\x80\x02\xff\xff"}});
  EXPECT_ERROR(load_torch_zip(dir + "/badpkl.bin", st), "badpkl.bin", "opcode");
  // a pickle calling something other than the tensor rebuild functions is refused, not run
  PickleWriter w;
  w.b = "\x80\x02";
  w.global("os", "system");
  w.op('(');
  w.str("echo pwned");
  w.op('t');
  w.op('R');
  w.op('.');
  write_zip(dir + "/evil.bin", {{"archive/data.pkl", w.b}});
  EXPECT_ERROR(load_torch_zip(dir + "/evil.bin", st), "evil.bin", "os.system");
}

TEST(Safetensors, RoundTripF32F16BF16) {
  const std::string dir = mqtest::temp_dir("st_rt"), path = dir + "/m.safetensors";
  auto a = mqtest::randn(6, 1);
  std::vector<uint16_t> h, bf;
  for (float f : a) {
    h.push_back(f32_to_f16(f));
    bf.push_back(f32_to_bf16(f));
  }
  save_safetensors(path, {{"a", DType::F32, {2, 3}, a.data()}, {"h", DType::F16, {6}, h.data()},
                          {"b", DType::BF16, {3, 2}, bf.data()}});
  TensorStore st;
  load_safetensors(path, st);
  EXPECT_EQ(as_f32(st.tensors.at("a")), a);
  auto hv = as_f32(st.tensors.at("h")), bv = as_f32(st.tensors.at("b"));
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(hv[i], a[i], std::abs(a[i]) * 1e-3);
    EXPECT_NEAR(bv[i], a[i], std::abs(a[i]) * 8e-3);
  }
  EXPECT_EQ(st.tensors.at("b").shape, (std::vector<int64_t>{3, 2}));
}

static std::string st_file(const std::string& header_json, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return out + header_json + std::string(data_bytes, '\x01');
}

TEST(Safetensors, Errors) {
  const std::string dir = mqtest::temp_dir("st_err");
  TensorStore st;
  auto expect_bad = [&](const std::string& name, const std::string& bytes, std::initializer_list<const char*> frags) {
    const std::string p = dir + "/" + name;
    mqtest::write_file(p, bytes);
    TensorStore s;
    try {
      load_safetensors(p, s);
      ADD_FAILURE() << name << ": expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      for (const char* f : frags) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what() << " / " << f;
    }
  };
  EXPECT_ERROR(load_safetensors(dir + "/missing.safetensors", st), "missing.safetensors", "not found");
  expect_bad("tiny.safetensors", "abc", {"truncated"});
  expect_bad("hlen.safetensors", st_file("{}", 0).replace(0, 1, "\xff"), {"header length"});
  expect_bad("json.safetensors", st_file("{not json", 0), {"not valid JSON"});
  expect_bad("outside.safetensors", st_file(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
             {"'x'", "outside"});
  expect_bad("size.safetensors", st_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16),
             {"'x'", "needs 12"});
  expect_bad("overlap.safetensors",
             st_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
             {"overlap"});
  expect_bad("dtype.safetensors", st_file(R"({"x":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
             {"'x'", "F8_E4M3"});
  expect_bad("fields.safetensors", st_file(R"({"x":{"dtype":"F32"}})", 0), {"'x'"});
  // truncated copy of the bundled HF fixture
  const std::string full = mqtest::read_file(mqtest::repo("models/mamba2-tiny-hf/model.safetensors"));
  expect_bad("cut.safetensors", full.substr(0, full.size() - 1000), {"outside the data section"});
}

TEST(Checkpoint, ShardedIndexAndErrors) {
  const std::string dir = mqtest::temp_dir("shard");
  auto a = mqtest::randn(4, 1), b = mqtest::randn(3, 2);
  save_safetensors(dir + "/model-00001-of-00002.safetensors", {{"a", DType::F32, {4}, a.data()}});
  save_safetensors(dir + "/model-00002-of-00002.safetensors", {{"b", DType::F32, {3}, b.data()}});
  mqtest::write_file(dir + "/model.safetensors.index.json",
                     R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  TensorStore st = load_checkpoint(dir);
  EXPECT_EQ(st.format, "safetensors-sharded");
  EXPECT_EQ(as_f32(st.tensors.at("a")), a);
  EXPECT_EQ(as_f32(st.tensors.at("b")), b);
  mqtest::write_file(dir + "/model.safetensors.index.json",
                     R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00003-of-00003.safetensors"}})");
  EXPECT_ERROR(load_checkpoint(dir), "model.safetensors.index.json", "model-00003-of-00003.safetensors", "missing");
  const std::string empty = mqtest::temp_dir("noweights");
  EXPECT_ERROR(load_checkpoint(empty), "noweights", "no weights file");
  EXPECT_ERROR(load_checkpoint(empty + "/absent"), "absent", "not found");
}
