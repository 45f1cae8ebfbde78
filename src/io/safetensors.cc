// safetensors: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
#include "io/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/mmap_file.h"
#include "mambaq/error.h"

namespace mambaq {

static DType parse_dtype(const std::string& s, const std::string& path, const std::string& name) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  if (s == "F64") return DType::F64;
  if (s == "I64") return DType::I64;
  if (s == "I32") return DType::I32;
  if (s == "I16") return DType::I16;
  if (s == "I8") return DType::I8;
  if (s == "U8") return DType::U8;
  if (s == "BOOL") return DType::BOOL;
  fail("{}: tensor '{}' has unsupported dtype '{}'", path, name, s);
}

void load_safetensors(const std::string& path, TensorStore& store) {
  if (!file_exists(path)) fail("{}: file not found", path);
  auto file = MappedFile::open(path);
  const uint8_t* base = file->data();
  const size_t size = file->size();
  if (size < 8) fail("{}: truncated safetensors file ({} bytes, no header length)", path, size);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];
  if (hlen > size - 8) fail("{}: bad safetensors header: header length {} exceeds file size {}", path, hlen, size);
  const nlohmann::json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(base + 8), size_t(hlen)), path + ": safetensors header");
  if (!header.is_object()) fail("{}: bad safetensors header: not a JSON object", path);
  const uint8_t* data = base + 8 + hlen;
  const size_t data_size = size - 8 - hlen;
  std::vector<std::pair<uint64_t, std::pair<uint64_t, std::string>>> ranges;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (info.is_object())
        for (auto& [k, v] : info.items())
          if (v.is_string()) store.metadata[k] = v.get<std::string>();
      continue;
    }
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      fail("{}: bad safetensors header: tensor '{}' lacks dtype, shape or data_offsets", path, name);
    RawTensor t;
    try {
      t.dtype = parse_dtype(info["dtype"].get<std::string>(), path, name);
      t.shape = info["shape"].get<std::vector<int64_t>>();
      auto off = info["data_offsets"].get<std::vector<uint64_t>>();
      if (off.size() != 2) fail("{}: bad safetensors header: tensor '{}' data_offsets must have 2 entries", path, name);
      int64_t count = 1;
      for (int64_t d : t.shape)
        if (d < 0 || __builtin_mul_overflow(count, d, &count) || count > (int64_t(1) << 48))
          fail("{}: bad safetensors header: tensor '{}' has shape {}, negative or impossibly large", path, name,
               shape_str(t.shape));
      if (off[0] > off[1] || off[1] > data_size)
        fail("{}: tensor '{}' data_offsets [{}, {}] lie outside the data section ({} bytes): file truncated or header corrupt",
             path, name, off[0], off[1], data_size);
      if (off[1] - off[0] != t.nbytes())
        fail("{}: tensor '{}' occupies {} bytes but dtype {} x shape {} needs {}", path, name, off[1] - off[0],
             dtype_name(t.dtype), shape_str(t.shape), t.nbytes());
      ranges.push_back({off[0], {off[1], name}});
      const uint8_t* at = data + off[0];
      if (reinterpret_cast<uintptr_t>(at) % dtype_size(t.dtype) != 0) {
        // Valid per the format (a header not padded to 8 bytes, or an odd-sized U8 tensor
        // before this one), but a misaligned float can't be read in place: copy it once.
        auto copy = std::make_shared<std::vector<uint64_t>>((t.nbytes() + 7) / 8);
        std::memcpy(copy->data(), at, t.nbytes());
        t.data = reinterpret_cast<const uint8_t*>(copy->data());
        t.owner = copy;
      } else {
        t.data = at;
      }
    } catch (const nlohmann::json::exception& e) {
      fail("{}: bad safetensors header for tensor '{}': {}", path, name, e.what());
    }
    if (!t.owner) t.owner = file;
    if (!store.tensors.emplace(name, std::move(t)).second) fail("{}: tensor '{}' appears twice", path, name);
  }
  // As the format requires (and the reference reader checks): the tensors tile the data section
  // exactly, in offset order, with no gap, overlap or trailing bytes. A shifted offset or a
  // hole means the header does not describe the data.
  std::sort(ranges.begin(), ranges.end());
  uint64_t pos = 0;
  std::string prev;
  for (const auto& [b, e_name] : ranges) {
    if (b < pos) fail("{}: tensors '{}' and '{}' overlap in the data section", path, prev, e_name.second);
    if (b > pos)
      fail("{}: tensor '{}' starts at byte {} of the data section but the previous tensor ends at {}: offsets shifted "
           "or a gap (corrupt header)", path, e_name.second, b, pos);
    pos = e_name.first;
    prev = e_name.second;
  }
  if (pos != data_size)
    fail("{}: the tensors cover {} bytes of the {}-byte data section: offsets shifted or trailing data (corrupt header)",
         path, pos, data_size);
}

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& t : tensors) {
    const uint64_t n = uint64_t(numel(t.shape)) * dtype_size(t.dtype);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h.push_back(' ');
  AtomicWriter out(path);  // a new file renamed over `path` when complete (io/mmap_file.h)
  const uint64_t hl = h.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((hl >> (8 * i)) & 0xff);
  out.write(len, 8);
  out.write(h.data(), h.size());
  // Data in input order, matching the offsets assigned above.
  for (const auto& t : tensors) out.write(t.data, size_t(uint64_t(numel(t.shape)) * dtype_size(t.dtype)));
  out.commit();
}

void patch_safetensors_f32(const std::string& path, const std::map<std::string, std::vector<float>>& values,
                           const std::string& id_key, const std::string& id_from, const std::string& id_to) {
  // In place means through this name only: a link, or a file with other names (a hard-linked
  // copy, `cp -al`), would carry the edit into the other copies.
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  if (S_ISLNK(st.st_mode))
    fail("{}: is a symbolic link; editing it in place would change the file it points to (write a copy with -o NEW)",
         path);
  if (st.st_nlink > 1)
    fail("{}: has {} names (a hard-linked copy); editing it in place would change the other copies too (write a "
         "copy with -o NEW)", path, uint64_t(st.st_nlink));
  TensorStore check;
  load_safetensors(path, check);  // validates the whole header (and every range) first
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  if (!f) fail("{}: cannot open for writing", path);
  // only the header is read: the file may be many GiB
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | len[i];
  std::string head(size_t(hlen), '\0');
  f.read(head.data(), std::streamsize(hlen));
  if (!f) fail("{}: cannot read the safetensors header", path);
  const nlohmann::json header = parse_json(head, path + ": safetensors header");
  for (const auto& [name, v] : values) {
    if (!header.contains(name)) fail("{}: no tensor '{}'", path, name);
    const auto& info = header[name];
    if (info["dtype"] != "F32") fail("{}: tensor '{}' is {}, not F32", path, name, info["dtype"].get<std::string>());
    const auto off = info["data_offsets"].get<std::vector<uint64_t>>();
    if (off[1] - off[0] != v.size() * sizeof(float))
      fail("{}: tensor '{}' holds {} values, not {}", path, name, (off[1] - off[0]) / sizeof(float), v.size());
  }
  size_t id_at = std::string::npos;  // the id's first byte within the header
  if (!id_to.empty()) {
    const auto& meta = header.contains("__metadata__") ? header["__metadata__"] : nlohmann::json();
    if (id_from.size() != id_to.size() || !meta.is_object() || meta.value(id_key, "") != id_from)
      fail("{}: its metadata '{}' is not '{}'", path, id_key, id_from);
    id_at = head.find('"' + id_from + '"');
    if (id_at == std::string::npos || head.find('"' + id_from + '"', id_at + 1) != std::string::npos)
      fail("{}: the metadata '{}' is not found once in the header", path, id_key);
    ++id_at;
  }
  for (const auto& [name, v] : values) {  // every tensor checked: now write
    f.seekp(std::streamoff(8 + hlen + header[name]["data_offsets"][0].get<uint64_t>()));
    f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  }
  if (id_at != std::string::npos) {
    f.seekp(std::streamoff(8 + id_at));
    f.write(id_to.data(), std::streamsize(id_to.size()));
  }
  if (!f.flush()) fail("{}: write failed", path);
  f.close();
  sync_to_disk(path);  // the patch on disk before the next file
  atomic_commit_hook();
}

}  // namespace mambaq
