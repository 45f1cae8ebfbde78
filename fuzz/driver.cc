// mambaq_fuzz: the fuzz targets without libFuzzer (any compiler).
//   mambaq_fuzz list                      the targets
//   mambaq_fuzz seeds OUT_DIR             write the seed corpus, one folder per target
//   mambaq_fuzz replay TARGET PATH...     run every file (folders recursively) through TARGET
//   mambaq_fuzz seeds-ok TARGET DIR       the same, and every input must load without error
// replay exits 0 when every input succeeded or ended in a mambaq::Error; a crash, a sanitizer
// report or another exception ends it abnormally, naming the input.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "mambaq/error.h"
#include "mambaq/eval.h"
#include "targets.h"

namespace fs = std::filesystem;
using namespace mambaq::fuzz;

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "list") {
      for (const auto& t : targets()) std::cout << t.name << "\t" << t.what << "\n";
      return 0;
    }
    if (cmd == "seeds" && argc == 3) {
      write_seeds(argv[2], MAMBAQ_SOURCE_DIR);
      return 0;
    }
    if ((cmd == "replay" || cmd == "seeds-ok") && argc >= 4) {
      const Target* t = find_target(argv[2]);
      if (!t) {
        std::cerr << "mambaq_fuzz: unknown target '" << argv[2] << "' (see: mambaq_fuzz list)\n";
        return 2;
      }
      std::vector<fs::path> files;
      for (int i = 3; i < argc; ++i) {
        if (fs::is_directory(argv[i])) {
          for (const auto& e : fs::recursive_directory_iterator(argv[i]))
            if (e.is_regular_file()) files.push_back(e.path());
        } else if (fs::is_regular_file(argv[i])) {
          files.push_back(argv[i]);
        }
      }
      std::sort(files.begin(), files.end());
      size_t ok = 0;
      for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        const std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::string err;
        const bool good = run_one(*t, reinterpret_cast<const uint8_t*>(b.data()), b.size(), &err);
        ok += good;
        std::cerr << (good ? "ok      " : "refused ") << f.string() << (good ? "" : ": " + err) << "\n";
        if (cmd == "seeds-ok" && !good) {
          std::cerr << "mambaq_fuzz: seed " << f.string() << " does not load\n";
          return 1;
        }
      }
      std::cout << t->name << ": " << files.size() << " inputs (" << ok << " accepted, " << files.size() - ok
                << " refused with an error), no crash\n";
      return 0;
    }
  } catch (const mambaq::Error& e) {
    std::cerr << "mambaq_fuzz: error: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: mambaq_fuzz list | seeds OUT_DIR | replay TARGET PATH... | seeds-ok TARGET DIR\n";
  return 2;
}
