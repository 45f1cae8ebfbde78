// NumPy .npy / .npz writing (float32 1-D arrays), for activation snapshots. Hand-written: the
// format is a 10-line header (numpy's format spec, version 1.0) and an uncompressed zip (libzip).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace mambaq {

// The bytes of a version 1.0 .npy file holding little-endian float32 data of `shape`
// (default: 1-D of v.size()).
std::string npy_bytes(const std::vector<float>& v, std::vector<size_t> shape = {});
void save_npy(const std::string& path, const std::vector<float>& v, std::vector<size_t> shape = {});
// Reads a .npy written by save_npy (or numpy: '<f4', C order); errors name the file.
std::vector<float> load_npy(const std::string& path, std::vector<size_t>* shape = nullptr);
// Writes arrays as FILE.npz (members "<key>.npy"); fails naming the file.
// Reads a .npz of float32 arrays (member name without ".npy" -> values); errors name the file.
std::map<std::string, std::vector<float>> load_npz(const std::string& path);
void save_npz(const std::string& path, const std::map<std::string, std::vector<float>>& arrays);

}  // namespace mambaq
