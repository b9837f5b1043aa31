#!/usr/bin/env bash
# Installs what medseg builds against and builds it with CMake + Ninja. Idempotent; apt-get needs
# root (or sudo). CI, developers and the Dockerfile's build stage all run this script.
#
#   scripts/setup.sh              Debian packages + the project's Python environment, CPU build
#   scripts/setup.sh --cuda       the same, then the CUDA build (needs the CUDA toolkit, no GPU)
#   scripts/setup.sh --sanitize   the CPU build with AddressSanitizer + UBSan, in build-asan/
#   scripts/setup.sh --deps-only  packages and Python environment only
#
# LibTorch is PyPI's torch wheel, pinned in scripts/requirements.txt and installed into the
# virtual environment .venv (git-ignored; the downloaded wheels are kept, so a second setup does
# not download again). With
# MEDSEG_BUILD_TESTS=ON the test tools of scripts/requirements-test.txt (MONAI, nibabel) go there
# too.
#
# Environment:
#   MEDSEG_BUILD_DIR       build folder (default: build, build-cuda with --cuda, build-asan with
#                          --sanitize)
#   MEDSEG_BUILD_TYPE      CMake build type (default: Release)
#   MEDSEG_BUILD_TESTS     ON or OFF (default: ON)
#   MEDSEG_VENV            the virtual environment (default: .venv in the project)
#   MEDSEG_WHEELHOUSE      where downloaded wheels are kept (default: ~/.cache/medseg/wheels)
#   MEDSEG_TORCH_DIR       build against this torch package folder instead (e.g. a GPU machine's
#                          preinstalled torch); no virtual environment is made then
#   MEDSEG_INSTALL_PREFIX  when set, `cmake --install` into it after building
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cuda=OFF deps_only=0 sanitize=OFF
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=ON ;;
    --deps-only) deps_only=1 ;;
    --sanitize) sanitize=ON ;;
    *) echo "setup: unknown option '$arg' (expected --cuda, --sanitize or --deps-only)" >&2; exit 2 ;;
  esac
done
build_tests="${MEDSEG_BUILD_TESTS:-ON}"

# Debian 12 packages. libgloo-dev: Gloo's headers (its code is inside libtorch_cpu).
packages=(
  build-essential cmake ninja-build ccache pkg-config python3-venv
  libnifti2-dev zlib1g-dev libdeflate-dev libgloo-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  libpng-dev libgtest-dev libgmock-dev
  python3-numpy  # tests run scripts/read_records.py with the system Python
  python3-matplotlib  # scripts/plot_metrics.py (the demo's learning curves)
  clang  # scripts/fuzz.sh: libFuzzer, AddressSanitizer, UndefinedBehaviorSanitizer
  iproute2  # tests/dist/network_faults_test.cpp: `ip netns`, the hosts' network namespaces
)
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

# The project's Python environment: LibTorch (and the test tools). Reinstalled only when a
# requirements file changed.
if [ -z "${MEDSEG_TORCH_DIR:-}" ]; then
  venv="${MEDSEG_VENV:-$root/.venv}"
  requirements=(scripts/requirements.txt)
  [ "$build_tests" = ON ] && requirements+=(scripts/requirements-test.txt)
  stamp="$(cat "${requirements[@]}" | sha256sum | cut -c1-16)"
  if [ "$(cat "$venv/.medseg-requirements" 2>/dev/null)" != "$stamp" ]; then
    echo "setup: installing ${requirements[*]} into $venv"
    [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
    # Wheels are kept in a download folder outside the project, so a second setup (a fresh clone,
    # a new virtual environment) installs without downloading.
    wheelhouse="${MEDSEG_WHEELHOUSE:-$HOME/.cache/medseg/wheels}"
    pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
    requirement_args=($(printf -- '-r %s ' "${requirements[@]}"))
    if ! "${pip[@]}" install --no-index --find-links "$wheelhouse" "${requirement_args[@]}" \
         2>/dev/null; then
      "${pip[@]}" download -d "$wheelhouse" "${requirement_args[@]}"
      "${pip[@]}" install --no-index --find-links "$wheelhouse" "${requirement_args[@]}"
    fi
    echo "$stamp" > "$venv/.medseg-requirements"
  fi
  MEDSEG_TORCH_DIR="$("$venv/bin/python" -c \
    'import importlib.util; print(importlib.util.find_spec("torch").submodule_search_locations[0])')"
  python="$venv/bin/python"
else
  python="$(command -v python3)"
fi
((deps_only)) && exit 0

# CPU build; with --cuda the CUDA build too (into its own folder).
build() {
  local build_dir=$1 cuda_flag=$2 sanitize_flag=${3:-OFF}
  local build_type="${MEDSEG_BUILD_TYPE:-Release}"
  [ "$sanitize_flag" = ON ] && build_type="${MEDSEG_BUILD_TYPE:-RelWithDebInfo}"
  local args=(-G Ninja -DCMAKE_BUILD_TYPE="$build_type"
              -DMEDSEG_BUILD_TESTS="$build_tests" -DMEDSEG_CUDA="$cuda_flag"
              -DMEDSEG_SANITIZE="$sanitize_flag"
              -DMEDSEG_TORCH_DIR="$MEDSEG_TORCH_DIR" -DMEDSEG_PYTHON="$python")
  if command -v ccache >/dev/null; then
    # Paths under the project are hashed relative to it, so fresh clones reuse the cache.
    export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
    args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  [ -n "${MEDSEG_INSTALL_PREFIX:-}" ] && args+=(-DCMAKE_INSTALL_PREFIX="$MEDSEG_INSTALL_PREFIX")
  local configure_log
  if ! configure_log="$(cmake -S . -B "$build_dir" "${args[@]}" 2>&1)"; then
    echo "$configure_log" >&2
    exit 1
  fi
  grep '^-- medseg:' <<<"$configure_log" || true
  cmake --build "$build_dir" -j "$(nproc)"
  if [ -n "${MEDSEG_INSTALL_PREFIX:-}" ]; then
    cmake --install "$build_dir" >/dev/null
  fi
}

if [ "$cuda" = ON ]; then
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  if ! command -v nvcc >/dev/null; then
    echo "setup: --cuda needs the CUDA toolkit (nvcc on PATH or in /usr/local/cuda/bin)" >&2
    exit 2
  fi
  build "${MEDSEG_BUILD_DIR:-build-cuda}" ON
elif [ "$sanitize" = ON ]; then
  build "${MEDSEG_BUILD_DIR:-build-asan}" OFF ON
else
  build "${MEDSEG_BUILD_DIR:-build}" OFF
fi
