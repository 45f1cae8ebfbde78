// Fake quantization (W8A8 simulation) on the fixtures: close to FP32, and every point applied.
#include "mambaq/eval.h"
#include "quant/quantized.h"
#include "kernels/hadamard.h"
#include "util.h"

using namespace mambaq;


class FakeQuantBoth : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Fixtures, FakeQuantBoth, ::testing::Values("models/mamba-tiny", "models/mamba2-tiny-hf"));

TEST_P(FakeQuantBoth, HeldoutPerplexityStaysNearFp32) {
  auto fp = Model::load(mqtest::repo(GetParam()));
  auto cs = make_calib_samples(mqtest::tokenizer(), mqtest::repo("data/corpus/calib.jsonl"), 512, 64);
  CalibOptions co;
  co.progress = false;
  const Calibration cal = calibrate(*fp, cs, co);
  const QuantMeta meta;
  auto fq = quantize_model(*fp, cal, meta);
  Session fake(*fq, {.mode = ExecMode::Fake});
  EvalOptions eo;
  eo.data_dir = mqtest::repo("data");
  eo.progress = false;
  eo.limit = 20;
  const double ppl_fp = run_task(*fp, mqtest::tokenizer(), "ppl:corpus/heldout.txt", eo).json["ppl"];
  const double ppl_fq = run_task(fake, mqtest::tokenizer(), "ppl:corpus/heldout.txt", eo).json["ppl"];
  RecordProperty("ppl_fp32", std::to_string(ppl_fp));
  RecordProperty("ppl_w8a8_fake", std::to_string(ppl_fq));
  std::printf("%s held-out ppl (20 windows of 1024): fp32 %.3f, W8A8 fake %.3f (%+.2f%%)\n", GetParam(), ppl_fp, ppl_fq,
              100 * (ppl_fq / ppl_fp - 1));
  EXPECT_NE(ppl_fq, ppl_fp);           // quantization did change the model
  EXPECT_LT(ppl_fq / ppl_fp, 1.05);    // the bound for W8A8
}

TEST(FakeQuant, HadamardFusionAloneChangesNothing) {
  // No quantization at all: an FP model with H^T fused into out_proj and H applied online to its
  // input computes the same function (H^T H = I), so any fake-quant difference is quantization.
  auto fp = Model::load(mqtest::repo("models/mamba-tiny"));
  Model fused(*fp);
  for (auto& L : fused.weights_mut().layers) {
    std::vector<float> w(L.out_proj.f32(), L.out_proj.f32() + L.out_proj.size());
    hadamard_fuse_right(w.data(), L.out_proj.rows(), L.out_proj.cols());
    L.out_proj = QTensor::from_weight(Weight::from_vector(std::move(w), L.out_proj.shape));
    L.out_proj_rotated = true;
  }
  auto ids = mqtest::tokenizer().encode("It is a truth universally acknowledged, that a single man");
  EXPECT_LT(mqtest::rel_err(Session(fused).last_logits(ids), Session(*fp).last_logits(ids)), 1e-5);
}
