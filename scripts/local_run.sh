#!/usr/bin/env bash
# Runs any medseg command the way SageMaker would, without Docker: lays out an ML root (like
# /opt/ml) with hyperparameters.json (string values, as SageMaker writes them),
# inputdataconfig.json, resourceconfig.json and one folder per channel, then runs
# `medseg <command>` with MEDSEG_ML_ROOT pointing at it.
#
#   scripts/local_run.sh [options] [--] COMMAND [ARGS...]
#
# Options:
#   --ml-root DIR            where to lay out the ML root (default: a new temporary folder)
#   --channel NAME=DIR       a data channel in File mode (repeatable); e.g. --channel train=data/
#   --data DIR               shorthand for --channel train=DIR
#   --hyperparameters FILE   a hyperparameters.json to use as is
#   -p, --hp KEY=VALUE       one hyperparameter, stored as a string (repeatable)
#   --binary PATH            the medseg binary (default: build/medseg)
#
# Example:
#   scripts/local_run.sh --data demo/data -p epochs=2 -p 'roi_size=[64, 64, 32]' train
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

ml_root=""
channels=()
hyperparameters_file=""
hyperparameters=()
binary="${MEDSEG_BINARY:-$repo/build/medseg}"
while (($#)); do
  case "$1" in
    --ml-root) ml_root="$2"; shift 2 ;;
    --channel) channels+=("$2"); shift 2 ;;
    --data) channels+=("train=$2"); shift 2 ;;
    --hyperparameters) hyperparameters_file="$2"; shift 2 ;;
    -p|--hp) hyperparameters+=("$2"); shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "local_run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
(($#)) || { echo "local_run.sh: name a medseg command, e.g. train (see --help)" >&2; exit 2; }
[ -x "$binary" ] || { echo "local_run.sh: $binary not found; run scripts/setup.sh first" >&2; exit 2; }
[ -n "$ml_root" ] || ml_root="$(mktemp -d "${TMPDIR:-/tmp}/medseg-ml.XXXXXX")"

json_string() {  # JSON-quotes its argument
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\t'/\\t}"
  printf '"%s"' "${s//$'\n'/\\n}"
}

mkdir -p "$ml_root/input/config" "$ml_root/input/data" "$ml_root/model" "$ml_root/output/data" \
         "$ml_root/checkpoints"
rm -f "$ml_root/output/failure"

if [ -n "$hyperparameters_file" ]; then
  cp "$hyperparameters_file" "$ml_root/input/config/hyperparameters.json"
else
  {
    printf '{'
    separator=""
    for entry in "${hyperparameters[@]+"${hyperparameters[@]}"}"; do
      printf '%s\n  %s: %s' "$separator" "$(json_string "${entry%%=*}")" "$(json_string "${entry#*=}")"
      separator=","
    done
    printf '\n}\n'
  } > "$ml_root/input/config/hyperparameters.json"
fi

{
  printf '{'
  separator=""
  for entry in "${channels[@]+"${channels[@]}"}"; do
    name="${entry%%=*}"
    source_dir="$(cd "${entry#*=}" && pwd)"
    rm -rf "${ml_root:?}/input/data/$name"
    ln -s "$source_dir" "$ml_root/input/data/$name"
    printf '%s\n  %s: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}' \
      "$separator" "$(json_string "$name")"
    separator=","
  done
  printf '\n}\n'
} > "$ml_root/input/config/inputdataconfig.json"

cat > "$ml_root/input/config/resourceconfig.json" <<JSON
{"current_host": "algo-1", "current_instance_type": "local", "current_group_name": "homogeneousCluster",
 "hosts": ["algo-1"], "network_interface_name": "lo"}
JSON
cat > "$ml_root/input/config/checkpointconfig.json" <<JSON
{"LocalPath": "$ml_root/checkpoints"}
JSON

# The image's malloc settings (see Dockerfile), unless the caller chose others.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1}"
echo "local_run.sh: ML root $ml_root" >&2
status=0
MEDSEG_ML_ROOT="$ml_root" TRAINING_JOB_NAME="${TRAINING_JOB_NAME:-local-$(date +%Y%m%d-%H%M%S)}" \
  "$binary" "$@" || status=$?
if [ -f "$ml_root/output/failure" ]; then
  echo "local_run.sh: the job failed (exit $status); $ml_root/output/failure says:" >&2
  sed 's/^/  /' "$ml_root/output/failure" >&2
fi
exit "$status"
