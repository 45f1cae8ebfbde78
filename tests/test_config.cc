// Both config layouts, published defaults for omitted fields, and config errors.
#include "io/json_file.h"
#include "mambaq/config.h"
#include "mambaq/error.h"
#include "util.h"

using namespace mambaq;
using nlohmann::json;

TEST(Config, StateSpacesMamba1Fixture) {
  auto c = load_config(mqtest::repo("models/mamba-tiny"));
  EXPECT_EQ(c.arch, Arch::Mamba1);
  EXPECT_EQ(c.layout, "state-spaces");
  EXPECT_EQ(c.d_model, 256);
  EXPECT_EQ(c.n_layer, 8);
  EXPECT_EQ(c.d_inner, 512);
  EXPECT_EQ(c.d_state, 16);     // default
  EXPECT_EQ(c.dt_rank, 16);     // "auto" = ceil(256 / 16)
  EXPECT_EQ(c.vocab_size, 50277);
  EXPECT_EQ(c.padded_vocab, 50280);  // padded to a multiple of 8
}

TEST(Config, HfMamba2Fixture) {
  auto c = load_config(mqtest::repo("models/mamba2-tiny-hf"));
  EXPECT_EQ(c.arch, Arch::Mamba2);
  EXPECT_EQ(c.layout, "hf");
  EXPECT_EQ(c.nheads, 16);
  EXPECT_EQ(c.headdim, 32);
  EXPECT_EQ(c.d_state, 64);
  EXPECT_EQ(c.ngroups, 1);
  EXPECT_EQ(c.padded_vocab, 50280);
  EXPECT_EQ(c.conv_dim(), 512 + 2 * 64);
  EXPECT_EQ(c.in_proj_dim(), 2 * 512 + 2 * 64 + 16);
}

TEST(Config, PublishedDefaultsWhenOmitted) {
  // mamba2-2.7b's published config.json omits everything in ssm_cfg but the layer name
  auto c = parse_config(json::parse(R"({"d_model": 2560, "n_layer": 64, "vocab_size": 50277,
      "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})"), "m2.json");
  EXPECT_EQ(c.d_state, 128);
  EXPECT_EQ(c.headdim, 64);
  EXPECT_EQ(c.nheads, 80);
  EXPECT_EQ(c.ngroups, 1);
  EXPECT_EQ(c.chunk_size, 256);
  EXPECT_EQ(c.d_conv, 4);
  EXPECT_EQ(c.padded_vocab, 50288);
  // mamba-130m's: no ssm_cfg content at all
  auto m1 = parse_config(json::parse(R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}})"), "m1.json");
  EXPECT_EQ(m1.arch, Arch::Mamba1);
  EXPECT_EQ(m1.dt_rank, 48);
  EXPECT_EQ(m1.padded_vocab, 50280);
  EXPECT_TRUE(m1.tie_embeddings);
  // HF mamba with only the essentials
  auto h = parse_config(json::parse(R"({"model_type": "mamba", "hidden_size": 1024, "num_hidden_layers": 48})"), "h.json");
  EXPECT_EQ(h.d_state, 16);
  EXPECT_EQ(h.dt_rank, 64);
  EXPECT_EQ(h.padded_vocab, 50280);
  // mamba2-8b style: ngroups 8
  auto g = parse_config(json::parse(R"({"d_model": 4096, "n_layer": 56, "vocab_size": 256000,
      "ssm_cfg": {"layer": "Mamba2", "ngroups": 8}, "pad_vocab_size_multiple": 16})"), "8b.json");
  EXPECT_EQ(g.ngroups, 8);
  EXPECT_EQ(g.conv_dim(), 8192 + 2 * 8 * 128);
}

TEST(Config, Errors) {
  EXPECT_ERROR(parse_config(json::parse(R"({"model_type": "llama"})"), "c.json"), "c.json", "unknown architecture", "llama");
  EXPECT_ERROR(parse_config(json::parse(R"({"d_model": 8, "ssm_cfg": {"layer": "Mamba3"}})"), "c.json"), "c.json",
               "unknown architecture", "Mamba3");
  EXPECT_ERROR(parse_config(json::parse(R"({"hello": 1})"), "c.json"), "c.json", "unknown architecture");
  EXPECT_ERROR(parse_config(json::parse(R"({"d_model": "big"})"), "c.json"), "c.json", "'d_model'");
  EXPECT_ERROR(parse_config(json::parse(R"({"d_model": 256, "n_layer": -1})"), "c.json"), "c.json", "'n_layer'");
  EXPECT_ERROR(parse_config(json::parse(R"({"model_type": "mamba2", "hidden_size": 256, "head_dim": 32, "num_heads": 5})"),
                            "c.json"),
               "c.json", "num_heads");
  EXPECT_ERROR(parse_config(json::parse(R"({"d_model": 256, "n_layer": 2, "attn_layer_idx": [1]})"), "c.json"), "attn_layer_idx");
  const std::string dir = mqtest::temp_dir("cfg");
  mqtest::write_file(dir + "/config.json", "{\"d_model\": 256,,}");
  EXPECT_ERROR(load_config(dir), "config.json", "not valid JSON");
  const std::string empty = mqtest::temp_dir("cfg_missing");
  EXPECT_ERROR(load_config(empty), "config.json", "not found");
}
