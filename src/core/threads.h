// One thread count for everything (OpenMP and oneDNN share OpenMP's pool).
#pragma once

namespace mambaq {

void set_num_threads(int n);  // 0 = all cores
int num_threads();

}  // namespace mambaq
