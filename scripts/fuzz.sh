#!/usr/bin/env bash
# Builds medseg's libFuzzer harnesses (fuzz/: NIfTI files, record shards and streams, the job's
# configuration, tar archives, training checkpoints, model.pth files) with clang, AddressSanitizer and UndefinedBehaviorSanitizer into build-fuzz/, and
# runs each for SECONDS (default 60) from its committed seed corpus (fuzz/corpus/<harness>; what
# the run discovers goes to build-fuzz/corpus/<harness>, not into the repository).
#
#   scripts/fuzz.sh [SECONDS] [HARNESS...]      e.g. scripts/fuzz.sh 600 fuzz_nifti
#
# A finding (a sanitizer report, a signal, an InternalError or foreign exception escaping a parser,
# an allocation over 1 GiB, an input taking over 10 s) stops that harness; its input is saved as
# build-fuzz/findings/<harness>/crash-* (or leak-, timeout-, oom-) and the script exits 1. Prints
# `<harness>_executions=N` per harness. Reproduce one: build-fuzz/<harness> <file>.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
harnesses=("$@")
((${#harnesses[@]})) ||
  harnesses=(fuzz_nifti fuzz_records fuzz_config fuzz_archive fuzz_checkpoint fuzz_model)

if ! command -v clang++ >/dev/null; then
  echo "fuzz: installing clang"
  sudo=""
  [ "$(id -u)" != 0 ] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang >/dev/null
fi
scripts/setup.sh --deps-only >/dev/null
build=build-fuzz
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# The checkpoint and model.pth harnesses link the LibTorch of the project's environment.
if [ -n "${MEDSEG_TORCH_DIR:-}" ]; then
  torch_dir="$MEDSEG_TORCH_DIR"
else
  torch_dir="$(.venv/bin/python -c \
    'import importlib.util; print(importlib.util.find_spec("torch").submodule_search_locations[0])')"
fi
if [ ! -f "$build/build.ninja" ] || ! grep -q "^MEDSEG_TORCH_DIR:PATH=$torch_dir\$" "$build/CMakeCache.txt"; then
  CXX=clang++ cmake -S fuzz -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMEDSEG_TORCH_DIR="$torch_dir" "${launcher[@]}" >/dev/null
fi
cmake --build "$build" --target "${harnesses[@]}"

status=0
for harness in "${harnesses[@]}"; do
  corpus="$build/corpus/$harness" findings="$build/findings/$harness"
  mkdir -p "$corpus" "$findings"
  log="$build/$harness.log"
  echo "fuzz: $harness for $seconds s"
  # LibTorch's PyTorchStreamReader leaks miniz's state (a few kB) when its constructor throws on
  # a damaged archive; medseg refuses the file and the process ends, so leaks are not checked in
  # the harnesses that load through LibTorch.
  leaks=1
  case "$harness" in fuzz_checkpoint | fuzz_model) leaks=0 ;; esac
  if ! UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=$leaks \
      "$build/$harness" "$corpus" "fuzz/corpus/$harness" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -max_len=1048576 \
      -artifact_prefix="$findings/" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz: $harness found a problem (input in $findings/):" >&2
    grep -E 'ERROR|runtime error|finding|SUMMARY|==[0-9]+==' "$log" | head -20 >&2 || tail -30 "$log" >&2
    status=1
  fi
  executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  echo "${harness}_executions=${executions:-0}"
done
exit "$status"
