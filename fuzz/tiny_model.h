// Tiny Mamba1 / Mamba2 models (d_model 16, vocabulary 64, seeded random weights, never zeros)
// in the published layouts: seeds for the fuzzers, and folders that tests corrupt on purpose.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mambaq::fuzz {

struct TinyModel {
  nlohmann::json config;  // Mamba1: state-spaces layout; Mamba2: Hugging Face layout
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::vector<float>> values;
  std::vector<float>& at(const std::string& name);  // the values of a tensor (error if absent)
  void add(const std::string& name, std::vector<int64_t> shape, uint32_t seed, float scale, float mean = 0);
  void remove(const std::string& name);
  // dir/config.json and dir/model.safetensors (fp32); the folder is created.
  void save(const std::string& dir) const;
};

TinyModel tiny_model(bool mamba2, int layers);

// out: the FP folder fp_dir quantized (preset empty: Quamba W8A8; else a Quamba2 preset, with
// the embedding and head int8 and the heads grouped on Mamba2), calibrated on fixed tokens.
void quantized_folder(const std::filesystem::path& fp_dir, const std::filesystem::path& out, const std::string& preset = "");
// The fixed tensors of the quant_section target, made once under dir: 0 Mamba1 Quamba W8A8,
// 1 Mamba2 Quamba2 W8A8 (heads grouped), 2 Mamba1 Quamba2 W8A8 (each of tiny_model(…, 2): too
// narrow for 4-bit weights); returns the folder.
constexpr int kQuantBases = 3;
std::string quant_base(int i, const std::string& dir);

}  // namespace mambaq::fuzz
