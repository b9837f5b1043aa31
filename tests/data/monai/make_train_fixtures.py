"""Reference values for medseg's losses, Dice metric and sliding-window inference, made by MONAI.

Regenerate from the repository root, after scripts/setup.sh made the project's Python environment
(the committed values were made with MONAI 1.4.0 and torch 1.13; the pinned versions give the same
values to 1e-6, which the tests with fresh values check):

    .venv/bin/python tests/data/monai/make_train_fixtures.py

Writes tests/data/monai/train/*.bin (raw little-endian float32, C-order) and train/manifest.json.
The C++ tests rebuild the same inputs from these files and compare.

Fresh values for the live comparison the tests run with the project's MONAI (scripts/setup.sh):
    .venv/bin/python tests/data/monai/make_train_fixtures.py --out DIR --seed N --random-shapes
draws the inputs from the seed and, with --random-shapes, also the shapes, window sizes,
overlaps and window batch sizes.
"""
import argparse
import json
import os
import random

import monai
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.metrics import DiceMetric

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "train"))
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--random-shapes", action="store_true")
args = parser.parse_args()
OUT = args.out
os.makedirs(OUT, exist_ok=True)
manifest = {"monai_version": monai.__version__, "torch_version": torch.__version__, "seed": args.seed}
shapes = random.Random(args.seed)


def save(name, tensor):
    tensor.detach().to(torch.float32).contiguous().numpy().tofile(os.path.join(OUT, name))
    return {"file": name, "shape": list(tensor.shape)}


torch.manual_seed(args.seed)
# Losses: logits [2, 3, 6, 5, 4], binary targets with one empty (batch, channel).
loss_shape = (2, 3, 6, 5, 4)
if args.random_shapes:
    loss_shape = (shapes.randint(2, 4), 3) + tuple(shapes.randint(1, 12) for _ in range(3))
logits = torch.randn(*loss_shape) * 2
target = (torch.rand(*loss_shape) > 0.6).float()
target[1, 2] = 0
dice = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
# Dice + BCE: MONAI's DiceCELoss would apply softmax cross-entropy to multi-channel targets, which
# is wrong for overlapping TC/WT/ET channels, so the reference is DiceLoss + BCE-with-logits.
dice_ce = dice + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
manifest["losses"] = {"logits": save("loss_logits.bin", logits), "target": save("loss_target.bin", target),
                      "dice": dice.item(), "dice_bce": dice_ce.item()}

# Dice metric: 3 cases, channel 1 of case 2 has empty ground truth (skipped).
metric_shape = (3, 3, 7, 6, 5)
if args.random_shapes:
    metric_shape = (shapes.randint(3, 5), 3) + tuple(shapes.randint(1, 12) for _ in range(3))
prediction = (torch.rand(*metric_shape) > 0.5).float()
truth = (torch.rand(*metric_shape) > 0.5).float()
truth[2, 1] = 0
metric_mean = DiceMetric(include_background=True, reduction="mean")
metric_batch = DiceMetric(include_background=True, reduction="mean_batch")
metric_mean(y_pred=prediction, y=truth)
metric_batch(y_pred=prediction, y=truth)
manifest["dice_metric"] = {"prediction": save("metric_prediction.bin", prediction),
                           "truth": save("metric_truth.bin", truth),
                           "mean": metric_mean.aggregate().item(),
                           "per_channel": metric_batch.aggregate().tolist()}


# Sliding window: a predictor whose output depends on the position inside the window, so the
# blending of overlapping windows shows in the result.
def pattern(roi):
    i = torch.arange(roi[0]).view(-1, 1, 1).float()
    j = torch.arange(roi[1]).view(1, -1, 1).float()
    k = torch.arange(roi[2]).view(1, 1, -1).float()
    return 1 + 0.01 * i + 0.02 * j - 0.03 * k


window_cases = [
    ("constant_025", (20, 17, 11), (8, 8, 8), 0.25, "constant", 4),
    ("gaussian_05", (20, 17, 11), (8, 8, 8), 0.5, "gaussian", 3),
    ("padded", (6, 17, 9), (8, 8, 8), 0.25, "gaussian", 2),
]
if args.random_shapes:
    window_cases = []
    for i, mode in enumerate(["constant", "gaussian", "constant", "gaussian"]):
        roi = tuple(shapes.randint(3, 10) for _ in range(3))
        # image sizes below, at and above the window (the smaller ones are padded)
        shape = tuple(shapes.randint(max(1, r - 3), 3 * r) for r in roi)
        window_cases.append((f"random_{i}", shape, roi, shapes.choice([0.0, 0.25, 0.5, 0.7]), mode,
                             shapes.randint(1, 5)))
cases = []
for name, shape, roi, overlap, mode, batch in window_cases:
    image = torch.randn(1, 2, *shape)
    weights = pattern(roi)

    def predictor(windows):
        return torch.cat([windows * weights, windows[:, :1] * 2 * weights], dim=1)

    output = sliding_window_inference(image, roi, batch, predictor, overlap=overlap, mode=mode)
    cases.append({"name": name, "roi": list(roi), "overlap": overlap, "blend": mode,
                  "batch_size": batch, "input": save(f"sw_{name}_input.bin", image),
                  "output": save(f"sw_{name}_output.bin", output)})
manifest["sliding_window"] = cases

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
print("wrote", OUT)
