"""Reference values for medseg's losses, Dice metric and sliding-window inference, made by MONAI.

Regenerate (Debian 12: python3-torch, MONAI 1.4.0 source at /tmp/monai, see NOTES.md) from the
repository root:

    PYTHONPATH=/tmp/monai /usr/bin/python3 tests/data/monai/make_train_fixtures.py

Writes tests/data/monai/train/*.bin (raw little-endian float32, C-order) and train/manifest.json.
The C++ tests rebuild the same inputs from these files and compare.
"""
import json
import os

import monai
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.metrics import DiceMetric

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train")
os.makedirs(OUT, exist_ok=True)
manifest = {"monai_version": monai.__version__, "torch_version": torch.__version__}


def save(name, tensor):
    tensor.detach().to(torch.float32).contiguous().numpy().tofile(os.path.join(OUT, name))
    return {"file": name, "shape": list(tensor.shape)}


torch.manual_seed(0)
# Losses: logits [2, 3, 6, 5, 4], binary targets with one empty (batch, channel).
logits = torch.randn(2, 3, 6, 5, 4) * 2
target = (torch.rand(2, 3, 6, 5, 4) > 0.6).float()
target[1, 2] = 0
dice = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
# Dice + BCE: MONAI's DiceCELoss would apply softmax cross-entropy to multi-channel targets, which
# is wrong for overlapping TC/WT/ET channels, so the reference is DiceLoss + BCE-with-logits.
dice_ce = dice + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
manifest["losses"] = {"logits": save("loss_logits.bin", logits), "target": save("loss_target.bin", target),
                      "dice": dice.item(), "dice_bce": dice_ce.item()}

# Dice metric: 3 cases, channel 1 of case 2 has empty ground truth (skipped).
prediction = (torch.rand(3, 3, 7, 6, 5) > 0.5).float()
truth = (torch.rand(3, 3, 7, 6, 5) > 0.5).float()
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


cases = []
for name, shape, roi, overlap, mode, batch in [
    ("constant_025", (20, 17, 11), (8, 8, 8), 0.25, "constant", 4),
    ("gaussian_05", (20, 17, 11), (8, 8, 8), 0.5, "gaussian", 3),
    ("padded", (6, 17, 9), (8, 8, 8), 0.25, "gaussian", 2),
]:
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
