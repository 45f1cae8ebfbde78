// Tests that move data: inputs are built on the host, uploaded to the backend under test, run
// there, downloaded and compared with `ref`. `Dev` owns the buffers of one test; the test-only
// `checked` backend (tests/checked_backend.cc) wraps ref and fails when a kernel receives a
// pointer it did not allocate, so every kernel test and the whole-model tests also prove that no
// host pointer reaches a kernel.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/backend.h"

namespace mqtest {

// Registers the checked backend (once); returns its name.
std::string checked_backend();
// Every backend this machine runs, plus `checked`: the parameter list of the kernel tests.
std::vector<std::string> test_backends();
// How many pointers the checked backend has validated so far (a test of the test).
size_t checked_pointer_count();

struct Dev {
  mambaq::BackendRef b;
  const mambaq::Backend& k;
  void* ctx;
  std::vector<mambaq::Buffer> keep;
  explicit Dev(const std::string& name) : b(mambaq::open_backend(name)), k(b->get()), ctx(b->get().ctx) {}

  template <class T>
  T* up(const std::vector<T>& v) {
    keep.push_back(mambaq::Buffer::from_vector(b, v));
    return keep.back().template as<T>();
  }
  template <class T>
  T* alloc(size_t n) {
    keep.emplace_back(b, n * sizeof(T));
    return keep.back().template as<T>();
  }
  template <class T>
  std::vector<T> down(const T* p, size_t n) {
    std::vector<T> v(n);
    if (n) k.download(ctx, v.data(), p, n * sizeof(T));
    return v;
  }
  template <class T>
  void down_into(std::vector<T>& v, const T* p) {
    v = down(p, v.size());
  }
  mambaq::Batch batch(const std::vector<int>& offs) { return {int(offs.size()) - 1, offs.data(), up(offs)}; }
  // Per-sequence states: each non-empty host vector uploaded (an empty one = no state).
  template <class T>
  struct States {
    std::vector<void*> seq;
    void* const* dev = nullptr;
    std::vector<T*> ptrs;
    mambaq::StateView view(mambaq::DType d) const { return {seq.data(), dev, d}; }
  };
  template <class T>
  States<T> states(const std::vector<std::vector<T>>& host) {
    States<T> s;
    for (const auto& h : host) {
      T* p = h.empty() ? nullptr : up(h);
      s.ptrs.push_back(p);
      s.seq.push_back(p);
    }
    s.dev = up(s.seq);
    return s;
  }
  // The states back on the host (empty where there was none).
  template <class T>
  std::vector<std::vector<T>> down_states(const States<T>& s, const std::vector<std::vector<T>>& like) {
    std::vector<std::vector<T>> out(like.size());
    for (size_t i = 0; i < like.size(); ++i)
      if (s.ptrs[i]) out[i] = down(s.ptrs[i], like[i].size());
    return out;
  }
};

}  // namespace mqtest
