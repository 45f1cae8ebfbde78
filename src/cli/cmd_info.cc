#include <fmt/format.h>

#include <map>

#include "cli/common.h"
#include "io/mmap_file.h"
#include "mambaq/checkpoint.h"
#include "model/quant_state.h"

namespace mambaq::cli {

Runner register_info(CLI::App& app) {
  struct Opts {
    std::string model, json;
    Common c;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("info", "Show a model's architecture, dimensions, parameters, dtypes and layout");
  sub->add_option("MODEL", o->model, "Model folder")->required();
  sub->add_option("--json", o->json, "Also write the information as JSON to FILE ('-' = stdout)");
  auto force = add_force(sub);
  add_common(sub, o->c);
  return [o, force] {
    apply_common(o->c);
    check_new_output_file(o->json, "--json", *force);
    auto m = Model::load(o->model);
    const auto& c = m->config();
    std::map<std::string, int64_t> dtypes;
    for (const auto& t : m->tensor_info())  // U8 tensors are packed 4-bit codes: two per byte
      dtypes[t.dtype == "U8" ? "S4 (packed)" : t.dtype] += numel(t.shape) * (t.dtype == "U8" ? 2 : 1);
    std::string dt;
    for (auto& [k, v] : dtypes) dt += fmt::format("{}{} ({} params)", dt.empty() ? "" : ", ", k, v);
    fmt::print("model         {}\n", o->model);
    fmt::print("architecture  {}\n", arch_name(c.arch));
    fmt::print("layout        {} ({}, {})\n", c.layout, find_weights_file(o->model), c.source);
    fmt::print("d_model       {}\nn_layer       {}\nd_inner       {}\nd_state       {}\nd_conv        {}\n", c.d_model,
               c.n_layer, c.d_inner, c.d_state, c.d_conv);
    if (c.arch == Arch::Mamba1)
      fmt::print("dt_rank       {}\n", c.dt_rank);
    else
      fmt::print("heads         {} x headdim {}, ngroups {}, chunk_size {}\n", c.nheads, c.headdim, c.ngroups,
                 c.chunk_size);
    fmt::print("vocab         {} (padded to {})\n", c.vocab_size, c.padded_vocab);
    const ModelWeights& w = m->weights();
    fmt::print("embedding     {}\n", w.embedding.describe());
    fmt::print("lm_head       {}\n", w.tied() ? "tied to the embedding" : "separate, " + w.lm_head.describe());
    fmt::print("parameters    {} ({:.2f} M)\n", m->num_params(), double(m->num_params()) / 1e6);
    fmt::print("dtypes        {}\n", dt);
    fmt::print("tensors       {}\n", m->tensor_info().size());
    if (m->is_quantized()) {
      const QuantMeta& qm = m->quantized()->meta;
      fmt::print("quantized     {}\n", qm.summary());
      if (!qm.layers.empty()) fmt::print("layer prec.   {}\n", qm.layers_str());
      fmt::print("weights       {:.1f} MiB in int8 mode\n", double(decode_weight_bytes(*m)) / (1 << 20));
      for (const auto& [flag, why] : qm.not_applied) fmt::print("not applied   --{}: {}\n", flag, why);
      for (const auto& r : qm.scale_overrides) fmt::print("override      {} (at calibration)\n", r);
      // scale edits made after saving (`scales set`), oldest first: what changed, when, why
      for (const auto& e : qm.edits) {
        std::string what = e.value("rule", std::string("?"));
        if (e.contains("layers") && e["layers"].is_array() && e.contains("old") && e["old"].is_array() &&
            e.contains("new") && e["new"].is_array() && !e["old"].empty() && e["old"].size() == e["new"].size()) {
          what += fmt::format(": {} layer{}, scale {:.6g} -> {:.6g}", e["layers"].size(), e["layers"].size() == 1 ? "" : "s",
                              e["old"][0].get<double>(), e["new"][0].get<double>());
          if (e["old"].size() > 1) what += " (first)";
        }
        fmt::print("scale edit    {} {}{}\n", e.value("time", std::string("")), what,
                   e.contains("note") && e["note"].is_string() ? " — " + e["note"].get<std::string>() : "");
      }
    }
    if (!o->json.empty()) {
      nlohmann::json j = {{"model", o->model},         {"architecture", arch_name(c.arch)},
                          {"layout", c.layout},        {"d_model", c.d_model},
                          {"n_layer", c.n_layer},      {"d_inner", c.d_inner},
                          {"d_state", c.d_state},      {"d_conv", c.d_conv},
                          {"vocab_size", c.vocab_size}, {"padded_vocab", c.padded_vocab},
                          {"parameters", m->num_params()}, {"dtypes", dtypes},
                          {"tied_lm_head", w.tied()}};
      if (m->is_quantized()) j["quantization"] = c.raw["quantization"];
      if (c.arch == Arch::Mamba1) j["dt_rank"] = c.dt_rank;
      else {
        j["nheads"] = c.nheads;
        j["headdim"] = c.headdim;
        j["ngroups"] = c.ngroups;
        j["chunk_size"] = c.chunk_size;
      }
      write_json(o->json, j);
    }
    return 0;
  };
}

}  // namespace mambaq::cli
