#!/usr/bin/env bash
# Installs the Debian 12 packages medseg builds against (idempotent; apt-get needs root) and builds
# medseg with CMake + Ninja. CI, developers and the Dockerfile's build stage all run this script.
#
#   scripts/setup.sh              install what is missing, configure, build
#   scripts/setup.sh --deps-only  install packages only
#
# Environment:
#   MEDSEG_BUILD_DIR       build folder (default: build)
#   MEDSEG_BUILD_TYPE      CMake build type (default: Release)
#   MEDSEG_BUILD_TESTS     ON or OFF (default: ON)
#   MEDSEG_TORCH_PREFIX    CMake prefix of another LibTorch (e.g. CUDA LibTorch 2.x); Debian's
#                          CPU libtorch-dev is then not installed
#   MEDSEG_INSTALL_PREFIX  when set, `cmake --install` into it after building
set -euo pipefail
cd "$(dirname "$0")/.."

# Build dependencies (Debian 12 names).
MEDSEG_BUILD_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libnifti2-dev zlib1g-dev libdeflate-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev
  python3-numpy  # tests run scripts/read_records.py
)
# Debian's LibTorch 1.13 (CPU, c10d with Gloo) and the OpenMP OpenBLAS that makes its 3D
# convolutions 2.6x faster than the reference BLAS.
MEDSEG_TORCH_PACKAGES=(libtorch-dev libgloo-dev libopenblas0-openmp)

packages=("${MEDSEG_BUILD_PACKAGES[@]}")
[ -z "${MEDSEG_TORCH_PREFIX:-}" ] && packages+=("${MEDSEG_TORCH_PACKAGES[@]}")

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" != 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "${1:-}" = "--deps-only" ] && exit 0

build_dir="${MEDSEG_BUILD_DIR:-build}"
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE="${MEDSEG_BUILD_TYPE:-Release}"
            -DMEDSEG_BUILD_TESTS="${MEDSEG_BUILD_TESTS:-ON}")
command -v ccache >/dev/null && cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
[ -n "${MEDSEG_TORCH_PREFIX:-}" ] && cmake_args+=(-DCMAKE_PREFIX_PATH="$MEDSEG_TORCH_PREFIX")
[ -n "${MEDSEG_INSTALL_PREFIX:-}" ] && cmake_args+=(-DCMAKE_INSTALL_PREFIX="$MEDSEG_INSTALL_PREFIX")
cmake -S . -B "$build_dir" "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
if [ -n "${MEDSEG_INSTALL_PREFIX:-}" ]; then
  cmake --install "$build_dir" >/dev/null
fi
