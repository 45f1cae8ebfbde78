// The registrations of the backends built into this binary (kernels/registry.cc calls each once).
// Adding a backend: its folder under kernels/, one `register_*_backend` here and in registry.cc's
// list, one CMake option (docs/design.md).
#pragma once

namespace mambaq {

void register_ref_backend();   // kernels/ref/packed.cc
void register_cpu_backends();  // kernels/cpu/table.cc
#ifdef MAMBAQ_WITH_CUDA
void register_cuda_backends();  // kernels/cuda/
#endif

}  // namespace mambaq
