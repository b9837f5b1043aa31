#!/usr/bin/env bash
# README command 1: set up, write a small synthetic BraTS-like data set, lay out a local ML root
# exactly as SageMaker does and run `medseg train` on it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
demo_dir="${MEDSEG_DEMO_DIR:-demo}"
rm -rf "$demo_dir"
build/medseg synth --out "$demo_dir/data" --cases 8 --shape 96 96 64 --seed 0
# Hyperparameters as a SageMaker client sends them: every value a string, some JSON-encoded.
scripts/local_run.sh --ml-root "$demo_dir/ml" --data "$demo_dir/data" \
  -p epochs=20 -p batch_size=2 -p 'roi_size=[64, 64, 32]' -p 'optimizer="adam"' \
  -p learning_rate=1e-3 -p validation_fraction=0.25 -p log_interval=5 \
  train
