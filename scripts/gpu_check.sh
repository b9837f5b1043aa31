#!/usr/bin/env bash
# The GPU checks in one command, for a GPU machine that has PyTorch 2.x with CUDA, the CUDA toolkit,
# CMake and Ninja, but none of medseg's other dependencies and no package registry.
#
#   scripts/gpu_check.sh --prepare       here, with Debian's and PyPI's registries: downloads the
#                                        Debian packages medseg builds against and MONAI's wheel
#                                        into .device/ (git-ignored; carry it to the GPU machine)
#   scripts/gpu_check.sh [RESULTS_DIR]   on the GPU machine, from the repository root:
#     1. unpacks .device/debs into /tmp/sysroot (never into /) and builds build-cuda/ against that
#        machine's torch (MEDSEG_GPU_PYTHON, default python3) with NCCL;
#     2. runs the GPU tests (ctest label gpu): CUDA forward == CPU, bf16 and fp16 training learn the
#        synthetic set, fp16 loss scaling recovers from an overflow, an NCCL group of one, and on
#        two or more GPUs two NCCL workers == one worker with twice the batch;
#     3. `medseg bench train --device cuda` at roi 128x128x64, batch 2, 4 and 8, amp bf16 and off;
#     4. the same training step in MONAI (scripts/bench_monai.py, MONAI from .device/wheels): eager
#        bf16 and fp32 at each batch, torch.compile bf16 at batch MEDSEG_GPU_COMPILE_BATCH (4);
#     5. writes every figure, and medseg/MONAI ratios, to RESULTS_DIR/gpu_check.txt (default: $OUT
#        when set, else /tmp/gpu-check) and the full log beside it.
# Meant to finish within 8 minutes on one H100/H200.
#
# Device tool:  run(command="scripts/gpu_check.sh", carry=[".device"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
      libnifti2-dev libnifti2-2 libznz3 zlib1g-dev nlohmann-json3-dev libcli11-dev
      libcpp-httplib-dev libgtest-dev libgmock-dev libdeflate-dev libdeflate0 libgloo-dev)
monai_requirement="$(grep -E '^monai==' scripts/requirements-test.txt)"

if [ "${1:-}" = "--prepare" ]; then
  grep -qx '/.device/' .gitignore || { echo "gpu_check: .device/ must be git-ignored" >&2; exit 1; }
  rm -rf .device/debs .device/wheels
  mkdir -p .device/debs .device/wheels
  apt-get update -qq >/dev/null 2>&1 || true
  (cd .device/debs && apt-get download -qq "${debs[@]}")
  python3 -m pip download -q --no-deps --only-binary=:all: -d .device/wheels "$monai_requirement"
  du -sh .device
  exit 0
fi

results_dir="${1:-${OUT:-/tmp/gpu-check}}"
mkdir -p "$results_dir"
results="$results_dir/gpu_check.txt"
log="$results_dir/gpu_check.log"
: > "$results"
exec > >(tee -a "$log") 2>&1
record() { echo "$*" | tee -a "$results"; }
started=$SECONDS

[ -d .device/debs ] || { echo "gpu_check: no .device/debs: run scripts/gpu_check.sh --prepare first and carry .device" >&2; exit 2; }
python="${MEDSEG_GPU_PYTHON:-python3}"
torch_dir="$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
record "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
record "torch: $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())')"

# 1. Build against this machine's torch, with the carried Debian packages.
mkdir -p /tmp/sysroot
for f in .device/debs/*.deb; do dpkg -x "$f" /tmp/sysroot; done
export LD_LIBRARY_PATH="/tmp/sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="/usr/local/cuda/bin:$PATH"
build_dir="${MEDSEG_BUILD_DIR:-build-cuda}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMEDSEG_CUDA=ON \
  -DMEDSEG_TORCH_DIR="$torch_dir" -DMEDSEG_PYTHON="$python" -DCMAKE_PREFIX_PATH=/tmp/sysroot/usr \
  | grep -E '^-- medseg:|Error' || true
cmake --build "$build_dir" -j "$(nproc)" | tail -1
record "build: $((SECONDS - started)) s; $("$build_dir"/medseg --version)"

# 2. The GPU tests.
set +e
ctest --test-dir "$build_dir" -L gpu --output-on-failure --timeout 300 > "$results_dir/gpu_tests.log" 2>&1
tests_status=$?
set -e
grep -E '^\[ GPU|tests passed|\(Failed\)|\(Skipped\)|Not Run' "$results_dir/gpu_tests.log" \
  | tee -a "$results"
record "gpu tests: exit $tests_status after $((SECONDS - started)) s"

# 3. medseg's training step.
for amp in bf16 off; do
  for batch in 2 4 8; do
    out="$("$build_dir"/medseg bench train --device cuda --roi 128 128 64 --batch "$batch" \
           --amp "$amp" --warmup 5 --steps 20 2>&1)" || out="error: $(echo "$out" | tail -2)"
    sps="$(echo "$out" | sed -n 's/^train_samples_per_second=//p')"
    mib="$(echo "$out" | sed -n 's/^train_peak_memory_mib=//p')"
    record "medseg_${amp}_b${batch}_samples_per_second=${sps:-error}"
    record "medseg_${amp}_b${batch}_peak_memory_mib=${mib:-error}"
  done
done
# 3b. Each GPU switch's effect at batch 4 bf16 (one change from the defaults each), and the two
#     data paths of a real training job: host loader threads + pinned side-stream copies, and
#     the device-resident case cache (crops on the GPU).
bench_variant() {  # name, then extra bench train arguments
  local name="$1"; shift
  local out sps
  out="$("$build_dir"/medseg bench train --device cuda --roi 128 128 64 --batch 4 --amp bf16 \
         --warmup 5 --steps 20 "$@" 2>&1)" || out="error: $(echo "$out" | tail -2)"
  sps="$(echo "$out" | sed -n 's/^train_samples_per_second=//p')"
  record "medseg_variant_${name}_samples_per_second=${sps:-error}"
  record "medseg_variant_${name}_data_seconds_median=$(echo "$out" | sed -n 's/^train_data_seconds_median=//p')"
}
bench_variant defaults
bench_variant no_cudnn_benchmark --set train.cudnn_benchmark=false
bench_variant channels_last --set train.channels_last=true
bench_variant unfused_adam --set optim.fused=false
bench_variant input_loader --input loader --cases 8 --shape 160 160 96
bench_variant input_device_cache --input device-cache --cases 8 --shape 160 160 96
record "medseg bench: done after $((SECONDS - started)) s"

# 4. MONAI's training step, eager and compiled.
mkdir -p /tmp/site
"$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl
PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 "$python" scripts/bench_monai.py --device cuda \
  --roi 128 128 64 --batch 2 4 8 --amp bf16 off --warmup 5 --steps 20 | tee -a "$results"
PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 "$python" scripts/bench_monai.py --device cuda \
  --roi 128 128 64 --batch "${MEDSEG_GPU_COMPILE_BATCH:-4}" --amp --compile --warmup 5 --steps 20 \
  | grep '^monai_compile' | tee -a "$results"
record "monai bench: done after $((SECONDS - started)) s"

# 5. Side by side: medseg / MONAI samples per second (> 1: medseg is faster).
record "--- medseg vs MONAI (samples/s, ratio medseg/MONAI) ---"
"$python" - "$results" <<'EOF' | tee -a "$results"
import re, sys
values = dict(re.findall(r"^(\w+)=([0-9.]+)$", open(sys.argv[1]).read(), re.M))
for amp in ("bf16", "off"):
    for batch in (2, 4, 8):
        ours = values.get(f"medseg_{amp}_b{batch}_samples_per_second")
        for mode in ("eager", "compile"):
            theirs = values.get(f"monai_{mode}_{amp}_b{batch}_samples_per_second")
            if ours and theirs:
                print(f"ratio_{amp}_b{batch}_vs_monai_{mode}={float(ours) / float(theirs):.2f}"
                      f"  # medseg {ours} vs MONAI {mode} {theirs}")
EOF
record "total: $((SECONDS - started)) s"
exit "$tests_status"
