#!/usr/bin/env bash
# Trains medseg and MONAI side by side on the same synthetic data with the same recipe, for N
# seeds, and prints steps- and seconds-to-Dice (0.7 / 0.8 / 0.85) per framework and their ratios
# (a table, then name=value lines); writes summary.json to --out. The logic is in
# scripts/compare_monai.py (its --help lists every option; unknown options are passed on).
#
#   scripts/compare_monai.sh [--medseg PATH] [--seeds N] [--steps N] [--out DIR] [...]
#
#   --medseg PATH   the medseg binary (default: build/medseg)
#   --seeds N       seeds 0..N-1, each with its own data set (default: 3)
#   --steps N       training steps per run at most (default: 810; a run stops at Dice 0.85
#                   unless --no-early-stop)
#   --out DIR       work folder and summary.json (default: /tmp/compare_monai)
#
# Needs .venv (scripts/setup.sh) with torch, monai, nibabel and numpy. Uses 2 compute threads.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python="$repo/.venv/bin/python"
[ -x "$python" ] || { echo "compare_monai.sh: $python not found; run scripts/setup.sh" >&2; exit 2; }
"$python" -c 'import monai, nibabel' 2>/dev/null ||
  { echo "compare_monai.sh: the venv lacks monai or nibabel (pip install monai nibabel)" >&2; exit 2; }
medseg="build/medseg"
args=()
while (($#)); do
  case "$1" in
    --medseg) medseg="$2"; shift 2 ;;
    --seeds|--steps|--out) args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exec "$python" scripts/compare_monai.py --help ;;
    *) args+=("$1"); shift ;;
  esac
done
[ -x "$medseg" ] || { echo "compare_monai.sh: $medseg not found; build it (scripts/setup.sh)" >&2; exit 2; }
exec "$python" -u scripts/compare_monai.py --medseg "$medseg" "${args[@]+"${args[@]}"}"
