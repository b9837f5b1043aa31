#!/usr/bin/env bash
# Tests the SageMaker launch kit (scripts/sagemaker) with both SDK major versions: makes the
# virtual environments .venv-sagemaker-v2 and .venv-sagemaker-v3 (git-ignored) with the pinned
# requirements-v2.txt / requirements-v3.txt, then runs the unittest suite tests/sagemaker_kit in
# each (the two suites in parallel). Idempotent: an environment is rebuilt only when its
# requirements file (or /usr/bin/python3's version) changed; downloaded wheels are kept in the
# wheelhouse, as scripts/setup.sh does. Prints how long it took.
# Exits non-zero when any test fails.
#
#   scripts/sagemaker/test_kit.sh
#
# Environment:
#   MEDSEG_BINARY      the medseg binary the end-to-end tests run (default: build/medseg)
#   MEDSEG_WHEELHOUSE  where downloaded wheels are kept (default: ~/.cache/medseg/wheels)
set -euo pipefail
start=$SECONDS
# A relative MEDSEG_BINARY is relative to where the script was started.
[ -n "${MEDSEG_BINARY:-}" ] && MEDSEG_BINARY="$(realpath -m "$MEDSEG_BINARY")"
cd "$(dirname "$0")/../.."
root=$PWD
export MEDSEG_BINARY="${MEDSEG_BINARY:-$root/build/medseg}"
if [ ! -x "$MEDSEG_BINARY" ]; then
  echo "test_kit: no medseg binary at $MEDSEG_BINARY (build it: scripts/setup.sh, or set MEDSEG_BINARY)" >&2
  exit 2
fi
wheelhouse="${MEDSEG_WHEELHOUSE:-$HOME/.cache/medseg/wheels}"

# Makes (or keeps) the virtual environment $1 holding exactly the pins of requirements file $2.
# A stamp of the requirements file and the Python version says whether the environment is current.
make_venv() {
  local venv=$1 requirements=$2 stamp
  stamp="$( { cat "$requirements"; /usr/bin/python3 --version; } | sha256sum | cut -c1-16)"
  [ "$(cat "$venv/.medseg-requirements" 2>/dev/null)" = "$stamp" ] && return
  echo "test_kit: installing $requirements into $venv"
  rm -rf "$venv"  # a fresh environment, so no package of older pins is left behind
  /usr/bin/python3 -m venv "$venv"
  local pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
  if ! "${pip[@]}" install --no-index --find-links "$wheelhouse" -r "$requirements" 2>/dev/null; then
    "${pip[@]}" download -d "$wheelhouse" -r "$requirements"
    "${pip[@]}" install --no-index --find-links "$wheelhouse" -r "$requirements"
  fi
  echo "$stamp" > "$venv/.medseg-requirements"
}

versions=(v2 v3)
for version in "${versions[@]}"; do
  make_venv ".venv-sagemaker-$version" "scripts/sagemaker/requirements-$version.txt"
done
echo "test_kit: environments ready after $((SECONDS - start)) s"

# Both suites at once (each waits mostly on its own SDK's imports); their output is shown in turn.
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
pids=()
for version in "${versions[@]}"; do
  ".venv-sagemaker-$version/bin/python" -m unittest discover -s tests/sagemaker_kit -t tests/sagemaker_kit \
    >"$logs/$version.log" 2>&1 &
  pids+=($!)
done
failed=()
for i in "${!versions[@]}"; do
  status=0
  wait "${pids[$i]}" || status=$?
  echo "== SDK ${versions[$i]} ($(grep "^sagemaker==" "scripts/sagemaker/requirements-${versions[$i]}.txt"))"
  cat "$logs/${versions[$i]}.log"
  ((status == 0)) || failed+=("${versions[$i]}")
done

# One summary line over both suites, from unittest's "Ran N tests" and "FAILED (failures=F,
# errors=E)" / "OK (skipped=S)" lines.
total() {  # the sum of the numbers in the first match of regex $1 on each log line
  awk -v re="$1" 'match($0, re) { n = substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", n); s += n }
                  END { print s + 0 }' "$logs"/*.log
}
ran=$(total '^Ran [0-9]+ test') skipped=$(total 'skipped=[0-9]+')
bad=$(($(total 'failures=[0-9]+') + $(total 'errors=[0-9]+')))
echo "test_kit: $((ran - bad - skipped)) passed, $bad failed, $skipped skipped"

elapsed=$((SECONDS - start))
if ((${#failed[@]})); then
  echo "test_kit: FAILED with SDK ${failed[*]} after ${elapsed} s" >&2
  exit 1
fi
echo "test_kit: all tests passed with SDK ${versions[*]} in ${elapsed} s"
