#!/usr/bin/env bash
# README command 2: install what is missing, build, and run every test (ctest), then the SageMaker
# launch kit's tests against the real SageMaker SDK v2 and v3 (scripts/sagemaker/test_kit.sh), then
# each fuzz harness for 15 seconds (scripts/fuzz.sh; MEDSEG_FUZZ_SECONDS changes it).
#
# Builds the CPU binary (build/) and runs the whole suite with it. Where the CUDA toolkit is
# installed (CI's machines have it; no GPU is needed) it also builds the CUDA binary (build-cuda/,
# with NCCL) and runs its build checks and GPU tests, which skip with their reason where there is
# no GPU. Under CI=true a missing CUDA toolkit is a failure, not a skip.
#
#   scripts/test.sh --sanitize   instead: the CPU build with AddressSanitizer + UBSan (build-asan/)
#                                and the whole ctest suite under it; a finding fails its test.
#                                The memory-bound tests are left out: ASan's shadow memory does
#                                not fit their cgroup limits.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
  scripts/setup.sh --sanitize
  # LibTorch is not instrumented: its containers cannot be checked for overflow, and its
  # process-lifetime allocations are not leaks.
  export ASAN_OPTIONS="detect_leaks=0:detect_container_overflow=0:abort_on_error=1:${ASAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
  exec ctest --test-dir "${MEDSEG_BUILD_DIR:-build-asan}" --output-on-failure -j "$(nproc)" \
    --timeout 1200 -E '^BoundedMemoryTest\.'
fi
scripts/setup.sh
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  scripts/setup.sh --cuda
  cuda_build=1
elif [ "${CI:-}" = true ]; then
  echo "test: CI must build the CUDA binary, but there is no CUDA toolkit (nvcc) here" >&2
  exit 1
else
  echo "test: no CUDA toolkit (nvcc) here: the CUDA build is not checked"
  cuda_build=0
fi
if ((cuda_build)); then
  # The CUDA binary: its version line names NCCL (linked, not compiled out) and the GPU tests run
  # (or say why they skip).
  ctest --test-dir build-cuda --output-on-failure -j "$(nproc)" --timeout 600 -R '^(CliTest|Gpu)'
fi
ctest --test-dir "${MEDSEG_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 600
MEDSEG_BINARY="${MEDSEG_BUILD_DIR:-build}/medseg" scripts/sagemaker/test_kit.sh
# The parsers of untrusted bytes under libFuzzer + ASan + UBSan, briefly, from the seed corpus (a
# long run: scripts/fuzz.sh 600).
scripts/fuzz.sh "${MEDSEG_FUZZ_SECONDS:-15}"
