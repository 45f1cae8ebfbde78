// Changing scales: rules (quant/scale_rules.h) parsed and applied on hand-made tables, overrides at
// calibration against independent calibrations, and `scales set` on a saved folder (only the
// targeted tensors' bytes change; the history records what and why).
#include <filesystem>

#include "analysis/explog.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/points.h"
#include "quant/calibrate.h"
#include "quant/quantized.h"
#include "quant/scale_rules.h"
#include "util.h"

using namespace mambaq;
namespace fs = std::filesystem;

namespace {
ModelConfig mamba1(int n_layer = 4) {
  ModelConfig c;
  c.arch = Arch::Mamba1;
  c.n_layer = n_layer;
  return c;
}
}  // namespace

TEST(ScaleRules, ParseAndErrors) {
  const auto c = mamba1();
  auto r = parse_scale_rule("x_proj:input@0=*1.5", c, "--scale-override");
  EXPECT_EQ(r.point, "x_proj:input");
  EXPECT_EQ(r.layers, std::vector<int>{0});
  EXPECT_EQ(r.kind, ScaleRule::Factor);
  EXPECT_EQ(r.x, 1.5);
  r = parse_scale_rule("out_proj:input@1-2,0=0.25", c, "--scale-override");
  EXPECT_EQ(r.layers, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(r.kind, ScaleRule::Value);
  r = parse_scale_rule("x_proj:input:alpha=1", c, "--scale-override");
  EXPECT_EQ(r.kind, ScaleRule::Alpha);
  EXPECT_TRUE(r.layers.empty());
  EXPECT_ERROR(parse_scale_rule("xproj:input@0=*2", c, "--scale-override"), "not a scale point", "x_proj:input");
  EXPECT_ERROR(parse_scale_rule("x_proj:input@9=*2", c, "--scale-override"), "0 to 3");
  EXPECT_ERROR(parse_scale_rule("x_proj:input@0=*-1", c, "--scale-override"), "positive");
  EXPECT_ERROR(parse_scale_rule("x_proj:input@0=*abc", c, "--scale-override"), "not a number");
  EXPECT_ERROR(parse_scale_rule("x_proj:input:alpha=1.5", c, "--scale-override"), "(0, 1]");
  EXPECT_ERROR(parse_scale_rule("x_proj:input@3-1=2", c, "--scale-override"), "backwards");
  EXPECT_ERROR(parse_scale_rule("x_proj:input", c, "--scale-override"), "expected POINT");
}

TEST(ScaleRules, ApplyChangesOnlyTheTargets) {
  ScaleTable t;
  for (int l = 0; l < 3; ++l) {
    t.points.push_back({l, "x_proj:input", "percentile", 12.7f, 0.1f});
    t.points.push_back({l, "out_proj:input", "minmax", 25.4f, 0.2f});
  }
  const auto c = mamba1(3);
  const auto recs = apply_scale_rules(t, {parse_scale_rule("x_proj:input@1=*1.5", c, "f"),
                                          parse_scale_rule("out_proj:input@0,2=0.5", c, "f")}, "f");
  EXPECT_FLOAT_EQ(t.find(1, "x_proj:input")->scale, 0.15f);
  EXPECT_FLOAT_EQ(t.find(1, "x_proj:input")->amax, 12.7f * 1.5f);
  EXPECT_EQ(t.find(0, "x_proj:input")->scale, 0.1f);
  EXPECT_EQ(t.find(2, "x_proj:input")->scale, 0.1f);
  EXPECT_EQ(t.find(0, "out_proj:input")->scale, 0.5f);
  EXPECT_EQ(t.find(1, "out_proj:input")->scale, 0.2f);
  EXPECT_EQ(t.find(2, "out_proj:input")->scale, 0.5f);
  EXPECT_FLOAT_EQ(t.find(2, "out_proj:input")->amax, 25.4f * 2.5f);  // amax follows: 0.5 / 0.2
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1]["layers"], nlohmann::json({0, 2}));
  EXPECT_FLOAT_EQ(recs[0]["old"][0].get<float>(), 0.1f);
  EXPECT_FLOAT_EQ(recs[0]["new"][0].get<float>(), 0.15f);
  // grouped scales: every block
  ScaleTable g;
  g.points.push_back({0, "x_proj:input", "grouped-minmax", 2.f, 0.02f, {2}, {0.01f, 0.02f}});
  apply_scale_rules(g, {parse_scale_rule("x_proj:input=*2", c, "f")}, "f");
  EXPECT_EQ(g.points[0].values, (std::vector<float>{0.02f, 0.04f}));
  // a rule that matches nothing
  EXPECT_ERROR(apply_scale_rules(g, {parse_scale_rule("out_proj:input=*2", c, "f")}, "f"), "no scale at out_proj:input");
}

// The notes' `cur_max = cur_max + 2025`: the clip value moves by C, the scale by C / qmax.
TEST(ScaleRules, AddToTheClipValue) {
  const auto c = mamba1(3);
  const auto r = parse_scale_rule("x_proj:input@1=+2025", c, "f");
  EXPECT_EQ(r.kind, ScaleRule::AddClip);
  EXPECT_EQ(r.x, 2025.0);
  EXPECT_EQ(parse_scale_rule("x_proj:input=-0.5", c, "f").x, -0.5);
  EXPECT_ERROR(parse_scale_rule("x_proj:input=+0", c, "f"), "non-zero");
  EXPECT_ERROR(parse_scale_rule("x_proj:input=+x", c, "f"), "not a number");
  ScaleTable t;
  for (int l = 0; l < 3; ++l) t.points.push_back({l, "x_proj:input", "percentile", 12.7f, 0.1f});  // qmax 127
  const auto recs = apply_scale_rules(t, {r}, "f");
  EXPECT_FLOAT_EQ(t.find(1, "x_proj:input")->amax, 2037.7f);
  EXPECT_FLOAT_EQ(t.find(1, "x_proj:input")->scale, 2037.7f / 127);
  EXPECT_EQ(t.find(0, "x_proj:input")->scale, 0.1f);
  EXPECT_EQ(recs[0]["clip_offset"], 2025.0);
  // grouped: amax 2 at scale 0.02 (qmax 100); every block's clip value + 1 -> scale + 0.01
  ScaleTable g;
  g.points.push_back({0, "x_proj:input", "grouped-minmax", 2.f, 0.02f, {2}, {0.01f, 0.02f}});
  apply_scale_rules(g, {parse_scale_rule("x_proj:input=+1", c, "f")}, "f");
  EXPECT_FLOAT_EQ(g.points[0].values[0], 0.02f);
  EXPECT_FLOAT_EQ(g.points[0].values[1], 0.03f);
  EXPECT_FLOAT_EQ(g.points[0].scale, 0.03f);
  EXPECT_FLOAT_EQ(g.points[0].amax, 3.f);
  // a clip value that would reach zero or below is refused (layer 0's is 12.7; the smallest block's
  // is now 2, the largest 3: -2.5 would leave one block negative)
  EXPECT_ERROR(apply_scale_rules(t, {parse_scale_rule("x_proj:input@0=-13", c, "f")}, "f"), "would not be positive");
  EXPECT_ERROR(apply_scale_rules(g, {parse_scale_rule("x_proj:input=-2.5", c, "f")}, "f"), "would not be positive");
}

TEST(ScaleRules, OverridesAtCalibration) {
  auto fp = Model::load(mqtest::repo("models/mamba-tiny"));
  const auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 128, 4);
  QuantizeInputs in;
  in.calib = &cs;
  in.calib_opts.progress = false;
  in.progress = false;
  QuantMeta plain;
  const auto a = quantize(*fp, plain, in);
  QuantMeta meta;
  meta.scale_overrides = {"x_proj:input@0=*1.5", "out_proj:input@2=0.05", "x_proj:input@3:alpha=1"};
  const auto b = quantize(*fp, meta, in);
  // alpha 1 at one point = the whole calibration at alpha 1 (an independent run of the observer)
  in.calib_opts.alpha = 1.0;
  const auto c = quantize(*fp, plain, in);
  const auto& sa = a.model->quantized()->scales;
  const auto& sb = b.model->quantized()->scales;
  const auto& sc = c.model->quantized()->scales;
  for (const auto& p : sa.points) {
    const float got = sb.find(p.layer, p.point)->scale;
    if (p.layer == 0 && p.point == "x_proj:input") EXPECT_FLOAT_EQ(got, p.scale * 1.5f);
    else if (p.layer == 2 && p.point == "out_proj:input") EXPECT_EQ(got, 0.05f);
    else if (p.layer == 3 && p.point == "x_proj:input") EXPECT_EQ(got, sc.find(3, "x_proj:input")->scale);
    else EXPECT_EQ(got, p.scale) << p.layer << " " << p.point;
  }
  EXPECT_NE(sc.find(3, "x_proj:input")->scale, sa.find(3, "x_proj:input")->scale);  // alpha did matter
  EXPECT_EQ(b.overrides.size(), 2u);  // the factor and value rules, with old and new
  EXPECT_EQ(b.model->quantized()->meta.scale_overrides, meta.scale_overrides);
}

TEST(ScalesSet, EditsOnlyTheTargetedTensorsAndKeepsHistory) {
  const std::string d = mqtest::temp_dir("scales_set");
  const std::string q = d + "/q";
  auto r = mqtest::run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + q +
                           " -q --no-log --calib-num 2 --calib-seqlen 128");
  ASSERT_EQ(r.code, 0) << r.err;
  r = mqtest::run_cli("scales set " + q + " -o " + d + "/e --point x_proj:input --layers 0,2 --factor 1.5 --note 'clip less' "
                      "--log " + d + "/log.jsonl");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto log = read_log(d + "/log.jsonl");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["kind"], "scales_set");
  EXPECT_EQ(log[0]["edit"]["note"], "clip less");
  // byte for byte: only the two scale tensors' 4 bytes each may differ, and the save id (a new one
  // of the same length, in the header's metadata and in config.json)
  TensorStore s;
  load_safetensors(q + "/model.safetensors", s);
  const std::string a = mqtest::read_file(q + "/model.safetensors"), b = mqtest::read_file(d + "/e/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  const std::string id = s.metadata.at("mambaq_save_id");
  const size_t id_at = a.find(id);
  ASSERT_EQ(id.size(), 32u);
  ASSERT_NE(id_at, std::string::npos);
  EXPECT_NE(b.substr(id_at, 32), id);
  EXPECT_EQ(read_json_file(d + "/e/config.json")["quantization"]["save_id"], b.substr(id_at, 32));
  size_t diff = 0, first = a.size(), last = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i] && (i < id_at || i >= id_at + 32)) ++diff, first = std::min(first, i), last = std::max(last, i);
  EXPECT_GT(diff, 0u);
  EXPECT_LE(diff, 8u);
  auto m0 = Model::load(q), m1 = Model::load(d + "/e");
  const auto& s0 = m0->quantized()->scales;
  const auto& s1 = m1->quantized()->scales;
  for (const auto& p : s0.points) {
    const float got = s1.find(p.layer, p.point)->scale;
    if (p.point == "x_proj:input" && (p.layer == 0 || p.layer == 2)) EXPECT_FLOAT_EQ(got, p.scale * 1.5f);
    else EXPECT_EQ(got, p.scale) << p.layer << " " << p.point;
  }
  const auto edits = read_json_file(d + "/e/config.json")["quantization"]["edits"];
  ASSERT_EQ(edits.size(), 1u);
  EXPECT_EQ(edits[0]["layers"], nlohmann::json({0, 2}));
  EXPECT_EQ(edits[0]["note"], "clip less");
  EXPECT_FLOAT_EQ(edits[0]["old"][0].get<float>(), s0.find(0, "x_proj:input")->scale);
  // scales A B shows the change and the history
  r = mqtest::run_cli("scales " + q + " " + d + "/e");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("B: edit"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("clip less"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 scales differ"), std::string::npos) << r.out;
  // in place: a second edit appends to the history
  r = mqtest::run_cli("scales set " + d + "/e --in-place --point out_proj:input --layers 1 --value 0.03 --no-log");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_json_file(d + "/e/config.json")["quantization"]["edits"].size(), 2u);
  EXPECT_EQ(Model::load(d + "/e")->quantized()->scales.find(1, "out_proj:input")->scale, 0.03f);
  // --add-clip: the notes' +2025 on one layer's clip value (qmax 127 for 8-bit activations)
  r = mqtest::run_cli("scales set " + d + "/e --in-place --point out_proj:input --layers 2 --add-clip 2025 --no-log");
  ASSERT_EQ(r.code, 0) << r.err;
  const PointScale* was = s0.find(2, "out_proj:input");
  EXPECT_FLOAT_EQ(Model::load(d + "/e")->quantized()->scales.find(2, "out_proj:input")->scale, (was->amax + 2025) / 127);
  EXPECT_EQ(read_json_file(d + "/e/config.json")["quantization"]["edits"][2]["rule"], "out_proj:input@2=+2025");
  // without --layers: every layer (the rule's "@all")
  const float in0 = Model::load(d + "/e")->quantized()->scales.find(0, "in_proj:input")->scale;
  const int top = Model::load(d + "/e")->config().n_layer - 1;
  const float inl = Model::load(d + "/e")->quantized()->scales.find(top, "in_proj:input")->scale;
  r = mqtest::run_cli("scales set " + d + "/e --in-place --point in_proj:input --factor 2 --no-log");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Model::load(d + "/e")->quantized()->scales.find(0, "in_proj:input")->scale, in0 * 2);
  EXPECT_EQ(Model::load(d + "/e")->quantized()->scales.find(top, "in_proj:input")->scale, inl * 2);
  // refusals
  const std::string set = "scales set --no-log ";
  mqtest::expect_one_line_error(mqtest::run_cli(set + mqtest::model_dir("mamba-tiny") + " -o " + d + "/x --point x_proj:input --factor 2"),
                                "not a quantized model");
  mqtest::expect_one_line_error(mqtest::run_cli(set + q + " -o " + d + "/y --point xproj:input --factor 2"), "not a scale point");
  mqtest::expect_one_line_error(mqtest::run_cli(set + q + " --point x_proj:input --factor 2"), "--in-place");
  mqtest::expect_one_line_error(mqtest::run_cli(set + q + " -o " + d + "/e --point x_proj:input --factor 2"), "already exists");
  mqtest::expect_one_line_error(mqtest::run_cli(set + q + " -o " + d + "/z --point x_proj:input"), "--factor");
  mqtest::expect_one_line_error(mqtest::run_cli(set + q + "/model.safetensors -o " + d + "/w --point x_proj:input --factor 2"),
                                "folder");
  EXPECT_FALSE(fs::exists(d + "/x") || fs::exists(d + "/y") || fs::exists(d + "/z"));
  // quantize --scale-override records its rules; a bad rule fails before calibrating
  r = mqtest::run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + d + "/o -q --no-log --calib-num 2 "
                      "--calib-seqlen 128 --scale-override x_proj:input@0=*2 --scale-override out_proj:input@1:alpha=0.999");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_json_file(d + "/o/config.json")["quantization"]["scale_overrides"].size(), 2u);
  mqtest::expect_one_line_error(mqtest::run_cli("quantize " + mqtest::model_dir("mamba-tiny") + " -o " + d +
                                                "/p -q --no-log --scale-override x_proj:input@99=*2"),
                                "--scale-override");
}
