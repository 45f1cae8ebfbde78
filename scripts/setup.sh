#!/usr/bin/env bash
# Install the build dependencies from Debian 12 packages (run as root). clang, its sanitizer runtimes
# and libomp-dev (the omp.h clang reads) are for scripts/hardening.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  g++ cmake make pkg-config git ca-certificates \
  libdnnl-dev ocl-icd-opencl-dev nlohmann-json3-dev libcli11-dev libfmt-dev \
  libzip-dev zlib1g-dev libpcre2-dev libutf8proc-dev libssl-dev libtomlplusplus-dev libeigen3-dev \
  libgtest-dev libbenchmark-dev \
  clang libclang-rt-14-dev libomp-dev
