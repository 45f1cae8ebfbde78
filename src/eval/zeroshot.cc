// Zero-shot multiple-choice tasks with lm-evaluation-harness 0.4.2's recipes (data/ZEROSHOT.md):
// arc_easy, arc_challenge, piqa, winogrande ("partial evaluation"), hellaswag; and the text
// helpers they need (Python's len/capitalize/strip semantics, lm-eval's regexes written out).
#include <filesystem>
#include <sstream>

#include "io/json_file.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"
#include "mambaq/eval.h"

namespace fs = std::filesystem;

namespace mambaq {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string strip(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && is_space(s[a])) ++a;
  while (b > a && is_space(s[b - 1])) --b;
  return s.substr(a, b - a);
}

// Python str.replace: non-overlapping occurrences, left to right.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size()) out.append(s, i, j - i).append(to);
  return out.append(s, i, std::string::npos);
}

// One JSON object per line; `each(json, line_no)`; errors name the file and line.
template <class F>
void for_each_jsonl(const std::string& path, F each) {
  if (!fs::exists(path)) fail("{}: file not found (the task's data; see --data-dir)", path);
  std::istringstream in(read_text_file(path));
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(no);
    const nlohmann::json j = parse_json(line, where);
    if (!j.is_object()) fail("{}: not a JSON object", where);
    try {
      each(j, no);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: unexpected document ({})", where, e.what());
    }
  }
}

std::string str_field(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_string()) fail("{}: field '{}' missing or not a string", where, key);
  return j[key].get<std::string>();
}

McDoc choice_doc(const std::string& context, const std::vector<std::string>& choices, int gold, nlohmann::json doc) {
  McDoc d;
  for (const auto& c : choices) {
    d.contexts.push_back(context);
    d.continuations.push_back(" " + c);
    d.choice_chars.push_back(utf8_chars(c));
  }
  d.gold = gold;
  d.doc = std::move(doc);
  return d;
}

std::vector<McDoc> load_arc(const std::string& path) {
  std::vector<McDoc> docs;
  for_each_jsonl(path, [&](const nlohmann::json& j, int no) {
    const std::string where = path + ":" + std::to_string(no);
    const auto& ch = j.at("choices");
    const auto texts = ch.at("text").get<std::vector<std::string>>();
    const auto labels = ch.at("label").get<std::vector<std::string>>();
    if (texts.size() != labels.size() || texts.empty()) fail("{}: choices.text and choices.label differ in length", where);
    const std::string key = str_field(j, "answerKey", where);
    const auto it = std::find(labels.begin(), labels.end(), key);
    if (it == labels.end()) fail("{}: answerKey '{}' is not among the labels", where, key);
    docs.push_back(choice_doc("Question: " + str_field(j, "question", where) + "\nAnswer:", texts,
                              int(it - labels.begin()), j));
  });
  return docs;
}

std::vector<McDoc> load_piqa(const std::string& dir) {
  const std::string path = dir + "/valid.jsonl", lpath = dir + "/valid-labels.lst";
  if (!fs::exists(lpath)) fail("{}: file not found (piqa's labels, line-aligned with valid.jsonl)", lpath);
  std::vector<int> labels;
  {
    std::istringstream in(read_text_file(lpath));
    std::string line;
    for (int no = 1; std::getline(in, line); ++no) {
      line = strip(line);
      if (line.empty()) continue;
      if (line != "0" && line != "1") fail("{}:{}: label '{}' is not 0 or 1", lpath, no, line);
      labels.push_back(line[0] - '0');
    }
  }
  std::vector<McDoc> docs;
  for_each_jsonl(path, [&](const nlohmann::json& j, int no) {
    const std::string where = path + ":" + std::to_string(no);
    if (docs.size() >= labels.size()) fail("{}: more documents than labels in {}", where, lpath);
    nlohmann::json doc = j;
    doc["label"] = labels[docs.size()];
    docs.push_back(choice_doc("Question: " + str_field(j, "goal", where) + "\nAnswer:",
                              {str_field(j, "sol1", where), str_field(j, "sol2", where)}, labels[docs.size()], doc));
  });
  if (docs.size() != labels.size()) fail("{}: {} documents but {} labels in {}", path, docs.size(), labels.size(), lpath);
  return docs;
}

std::vector<McDoc> load_winogrande(const std::string& path) {
  std::vector<McDoc> docs;
  for_each_jsonl(path, [&](const nlohmann::json& j, int no) {
    const std::string where = path + ":" + std::to_string(no);
    const std::string s = str_field(j, "sentence", where), ans = str_field(j, "answer", where);
    const size_t idx = s.find('_');
    if (idx == std::string::npos) fail("{}: the sentence has no '_'", where);
    if (ans != "1" && ans != "2") fail("{}: answer '{}' is not \"1\" or \"2\"", where, ans);
    McDoc d;
    std::string cont(1, ' ');
    cont += strip(s.substr(idx + 1));
    for (const char* opt : {"option1", "option2"}) {
      d.contexts.push_back(s.substr(0, idx) + str_field(j, opt, where));
      d.continuations.push_back(cont);
      d.choice_chars.push_back(0);  // winogrande reports acc only
    }
    d.gold = ans == "1" ? 0 : 1;
    d.doc = j;
    docs.push_back(std::move(d));
  });
  return docs;
}

std::vector<McDoc> load_hellaswag(const std::string& path) {
  std::vector<McDoc> docs;
  for_each_jsonl(path, [&](const nlohmann::json& j, int no) {
    const std::string where = path + ":" + std::to_string(no);
    const std::string ctx = str_field(j, "ctx_a", where) + " " + py_capitalize(str_field(j, "ctx_b", where));
    const std::string query = hellaswag_preprocess(str_field(j, "activity_label", where) + ": " + ctx);
    std::vector<std::string> choices;
    for (const auto& e : j.at("endings")) choices.push_back(hellaswag_preprocess(e.get<std::string>()));
    if (choices.empty()) fail("{}: no endings", where);
    const auto& lab = j.at("label");
    const int gold = lab.is_string() ? std::stoi(lab.get<std::string>()) : lab.get<int>();
    if (gold < 0 || gold >= int(choices.size())) fail("{}: label {} is not an ending's index", where, gold);
    docs.push_back(choice_doc(query, choices, gold, j));
  });
  return docs;
}

}  // namespace

int utf8_chars(const std::string& s) {
  int n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // count every byte that starts a code point
  return n;
}

std::string py_capitalize(const std::string& s) {
  std::string o = s;
  for (size_t i = 0; i < o.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(o[i]);
    if (i == 0 && c >= 'a' && c <= 'z') o[i] = char(c - 'a' + 'A');
    if (i > 0 && c >= 'A' && c <= 'Z') o[i] = char(c - 'A' + 'a');
  }
  return o;
}

std::string hellaswag_preprocess(const std::string& text) {
  std::string t = replace_all(strip(text), " [title]", ". ");
  // re.sub(r"\[.*?\]", "", t): from each '[' to the first ']' after it on the same line
  std::string o;
  for (size_t i = 0; i < t.size();) {
    if (t[i] == '[') {
      size_t j = i + 1;
      while (j < t.size() && t[j] != ']' && t[j] != '\n') ++j;
      if (j < t.size() && t[j] == ']') {
        i = j + 1;
        continue;
      }
    }
    o += t[i++];
  }
  return replace_all(o, "  ", " ");
}

std::string wikitext_detokenize(const std::string& page) {
  std::string s = replace_all(page, "s '", "s'");
  // re.sub(r"/' [0-9]/", r"/'[0-9]/", s): a literal pattern lm-eval keeps as written
  for (size_t i = 0; (i = s.find("/' ", i)) != std::string::npos;) {
    if (i + 4 < s.size() && s[i + 3] >= '0' && s[i + 3] <= '9' && s[i + 4] == '/') {
      s.replace(i, 5, "/'[0-9]/");
      i += 8;
    } else {
      ++i;
    }
  }
  for (auto [a, b] : {std::pair{" @-@ ", "-"}, {" @,@ ", ","}, {" @.@ ", "."}, {" : ", ": "}, {" ; ", "; "},
                      {" . ", ". "}, {" ! ", "! "}, {" ? ", "? "}, {" , ", ", "}})
    s = replace_all(s, a, b);
  // re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)") and the same for [], {}, "" and '': from each opening
  // character to the next closing one, white space trimmed inside
  for (auto [open, close] : {std::pair{'(', ')'}, {'[', ']'}, {'{', '}'}, {'"', '"'}, {'\'', '\''}}) {
    std::string o;
    for (size_t i = 0; i < s.size();) {
      if (s[i] == open) {
        const size_t j = s.find(close, i + 1);
        if (j != std::string::npos) {
          o += open;
          o += strip(s.substr(i + 1, j - i - 1));
          o += close;
          i = j + 1;
          continue;
        }
      }
      o += s[i++];
    }
    s = std::move(o);
  }
  for (auto [a, b] : {std::pair{"= = = =", "===="}, {"= = =", "==="}, {"= =", "=="}, {" \xC2\xB0 ", "\xC2\xB0"},
                      {" \n", "\n"}, {"\n ", "\n"}, {" N ", " 1 "}, {" 's", "'s"}})
    s = replace_all(s, a, b);
  return s;
}

std::vector<McDoc> load_mc_task(const std::string& task, const std::string& data_dir) {
  const fs::path d(data_dir);
  if (task == "arc_easy") return load_arc((d / "arc_easy" / "ARC-Easy-test.jsonl").string());
  if (task == "arc_challenge") return load_arc((d / "arc_challenge" / "ARC-Challenge-test.jsonl").string());
  if (task == "piqa") return load_piqa((d / "piqa").string());
  if (task == "winogrande") return load_winogrande((d / "winogrande" / "dev.jsonl").string());
  if (task == "hellaswag") return load_hellaswag((d / "hellaswag" / "hellaswag_val.jsonl").string());
  fail_option("tasks", "tasks: '{}' is not a multiple-choice task", task);
}

}  // namespace mambaq
