#!/usr/bin/env bash
# README command 1: set up, write a small synthetic BraTS-like data set, lay out a local ML root
# exactly as SageMaker does and run a full `medseg train` job on it (the MONAI default UNet, about
# a minute on 2 CPU cores), then show what the job left in the model folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
demo_dir="${MEDSEG_DEMO_DIR:-demo}"
rm -rf "$demo_dir"
build/medseg synth --out "$demo_dir/data" --cases 10 --shape 96 96 64 --seed 0
# Hyperparameters as a SageMaker client sends them: every value a string, some JSON-encoded.
scripts/local_run.sh --ml-root "$demo_dir/ml" --data "$demo_dir/data" \
  -p epochs=60 -p batch_size=2 -p 'roi_size=[48, 48, 32]' -p 'optimizer="adam"' \
  -p learning_rate=1e-3 -p validation_fraction=0.2 -p val_interval=5 -p log_interval=20 \
  train
echo
echo "demo: the job wrote $demo_dir/ml/model:"
ls -l "$demo_dir/ml/model"
echo "demo: metrics.json:"
cat "$demo_dir/ml/model/metrics.json"
# The learning curves (Debian's matplotlib) and where TensorBoard finds the event files.
/usr/bin/python3 scripts/plot_metrics.py "$demo_dir/ml/output/data/metrics.jsonl" \
  --out "$demo_dir/learning_curves.png" --title "medseg demo: 10 synthetic cases, 2 CPU cores"
echo "demo: TensorBoard event files in $demo_dir/ml/output/tensorboard" \
  "(tensorboard --logdir $demo_dir/ml/output/tensorboard)"
