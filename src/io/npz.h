// NumPy .npy / .npz writing (float32 1-D arrays), for activation snapshots. Hand-written: the
// format is a 10-line header (numpy's format spec, version 1.0) and an uncompressed zip (libzip).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace mambaq {

// The bytes of a version 1.0 .npy file holding a little-endian float32 vector.
std::string npy_bytes(const std::vector<float>& v);
// Writes arrays as FILE.npz (members "<key>.npy"); fails naming the file.
void save_npz(const std::string& path, const std::map<std::string, std::vector<float>>& arrays);

}  // namespace mambaq
