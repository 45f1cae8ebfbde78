// mambaq report: one self-contained HTML file from compare / scales JSON and .npz snapshots.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "analysis/report.h"
#include "cli/common.h"
#include "io/mmap_file.h"
#include "io/json_file.h"
#include "io/npz.h"
#include "mambaq/error.h"

namespace mambaq::cli {

Runner register_report(CLI::App& app) {
  struct Opts {
    std::vector<std::string> compares, scales, npz;
    std::string out, title = "mambaq report";
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("report", "Write an HTML report (inline SVG) from compare/scales JSON and .npz snapshots");
  sub->add_option("--compare", o->compares, "JSON written by `mambaq compare --json` (repeatable)");
  sub->add_option("--scales", o->scales, "JSON written by `mambaq scales A B --json` (repeatable)");
  sub->add_option("--npz", o->npz, "Activation snapshot from `mambaq quantize --save-activations` (repeatable)");
  sub->add_option("--title", o->title, "Report title")->capture_default_str();
  sub->add_option("-o,--output", o->out, "HTML file to write")->required();
  sub->add_flag("--force", o->force, "Overwrite an existing output file");
  return [o] {
    check_new_output_file(o->out, "-o", o->force);
    if (o->compares.empty() && o->scales.empty() && o->npz.empty())
      fail("report: nothing to report (give --compare, --scales and/or --npz)");
    ReportInputs in;
    in.title = o->title;
    for (const auto& f : o->compares) {
      auto j = read_json_file(f);
      if (!j.is_object() || !j.contains("layers") || !j.contains("logits"))
        fail("--compare {}: not a `mambaq compare --json` file (no \"layers\"/\"logits\")", f);
      in.compares.emplace_back(f, j);
    }
    for (const auto& f : o->scales) {
      auto j = read_json_file(f);
      if (!j.is_object() || !j.contains("summary") || !j.contains("b"))
        fail("--scales {}: not a `mambaq scales A B --json` file", f);
      in.scales.emplace_back(f, j);
    }
    for (const auto& f : o->npz) in.snapshots.emplace_back(f, load_npz(f));
    const std::string html = render_report(in);
    write_file_atomic(o->out, html);
    fmt::print("wrote {} ({} KiB)\n", o->out, html.size() / 1024);
    return 0;
  };
}

}  // namespace mambaq::cli
