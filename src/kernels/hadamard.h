// Orthonormal Hadamard transforms of size n = m * 2^k, m in {1, 12, 20, 28, 40}: every
// published Mamba width (1536 = 12*128, 2048, 2560 = 20*128, 4096, 5120 = 40*128, 3584 = 28*128).
// H_n = H_m (x) H_{2^k} (Kronecker), scaled by 1/sqrt(n) so that H H^T = I. Quamba applies it to
// the out_proj input online and fuses H^T into out_proj's weights offline: W x = (W H^T)(H x).
#pragma once
#include <vector>

namespace mambaq {

bool hadamard_supported(int n);
int hadamard_base_order(int n);  // m of n = m * 2^k, or 0 if unsupported

// Dense +-1 Hadamard matrix of order m in {1, 2, 12, 20, 28, 40} (row-major {m, m}):
// order 12 and 20 by Paley I (q = 11, 19), 28 by Paley II (q = 13), 40 by doubling order 20.
std::vector<float> hadamard_base_matrix(int m);

// In place: each of `rows` rows of x {rows, n} (row stride ld) becomes H_n x_row (orthonormal),
// or H_n^T x_row with transpose (the inverse: H^T H = I).
void hadamard_transform(float* x, int rows, int n, int ld, bool transpose = false);
// In place: W {rows, n} becomes W H_n^T (used to fuse the transform into out_proj's weights).
void hadamard_fuse_right(float* W, int rows, int n);

namespace ref {
// The dense orthonormal H_n (row-major {n, n}), for tests.
std::vector<double> hadamard_dense(int n);
}

}  // namespace mambaq
