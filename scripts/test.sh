#!/usr/bin/env bash
# README command 2: install what is missing, build, and run every test (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build_dir="${MEDSEG_BUILD_DIR:-build}"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 600
