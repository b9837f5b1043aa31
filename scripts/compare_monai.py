#!/usr/bin/env python3
"""Convergence of medseg against MONAI: steps and seconds to a validation mean Dice.

For each seed, one synthetic data set (`medseg synth`, Decathlon Task01 layout) is split into a
training folder and a validation folder (the last --val-cases cases), and both frameworks train on
it with the same recipe:

  MONAI's default UNet (4 -> 3, channels 16..256, strides 2, 2 residual units), sigmoid Dice loss
  (squared denominators, smooth 1e-5), Adam (lr 1e-3, weight decay 1e-5 as L2, eps 1e-8), batch 2,
  RandSpatialCrop 48x48x32 (random_size=False) + RandFlip(prob 0.5, axis 0), no intensity
  augmentation; static transforms: msd labels -> TC/WT/ET, RAS, spacing 1 mm (the synthetic data's
  own spacing: no resampling), NormalizeIntensity(nonzero, channel_wise) on the whole volume.
  Every --steps-per-epoch steps: sliding-window validation on the whole validation volumes (roi
  48x48x32, overlap 0.25, sw batch 4, constant blend), sigmoid >= 0.5, mean Dice (per case the mean
  of TC/WT/ET, then the mean over cases; = MONAI DiceMetric(include_background=True,
  reduction="mean"), the same as reduction="mean_batch" then mean when no channel is empty).

medseg runs as `scripts/local_run.sh ... train` with train / validation channels; its validation
Dice comes from <ml-root>/output/data/metrics.jsonl, and its training seconds from the log's
timestamps with log_interval=1: each step's time is the time from the previous log line to that
step's progress line, so validation, best-model writing and epoch-end checkpoints are excluded
(what runs after the last log line of such a block, before the next step, is counted). MONAI runs
in this process: a plain loop (CacheDataset for the static transforms, the random transforms
applied inline, num_workers=0), each step timed with perf_counter (crop + forward + backward +
Adam), validation excluded. Both with 2 compute threads (--threads) on the CPU.

`seconds` is the measured training time to the first validation at or above the threshold;
`est_seconds` = steps to it x the run's median step time, which a busy machine disturbs less.
Prints a table and `name=value` lines (medseg_steps_to_dice_0.80_median=..., ratio_...), and
writes summary.json to --out. By default a run stops once it reaches the highest threshold
(--no-early-stop trains all --steps).
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime

THRESHOLDS = (0.7, 0.8, 0.85)
LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) ")
PROGRESS = re.compile(r" info epoch (\d+)/\d+ step (\d+)/(\d+) loss ")
VALIDATION = re.compile(r" info epoch (\d+) validation: mean Dice ([0-9.]+|nan)")


def log(message):
    print(f"[compare_monai {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data

def make_data(medseg, root, cases, val_cases, shape, seed, threads):
    """Writes `cases` synthetic cases and splits them into root/train and root/validation."""
    raw = os.path.join(root, "all")
    if not os.path.exists(os.path.join(raw, "dataset.json")):
        shutil.rmtree(raw, ignore_errors=True)
        subprocess.run([medseg, "synth", "--out", raw, "--cases", str(cases), "--shape",
                        *map(str, shape), "--seed", str(seed), "--threads", str(threads)],
                       check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(raw, "dataset.json")) as f:
        dataset = json.load(f)
    entries = sorted(dataset["training"], key=lambda e: e["image"])
    split = {"train": entries[:len(entries) - val_cases], "validation": entries[-val_cases:]}
    lists = {}
    for name, part in split.items():
        folder = os.path.join(root, name)
        shutil.rmtree(folder, ignore_errors=True)
        for sub in ("imagesTr", "labelsTr"):
            os.makedirs(os.path.join(folder, sub))
        for entry in part:
            for key in ("image", "label"):
                rel = os.path.normpath(entry[key])
                os.symlink(os.path.join(raw, rel), os.path.join(folder, rel))
        meta = dict(dataset, training=part, numTraining=len(part))
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump(meta, f, indent=2)
        lists[name] = [{k: os.path.join(folder, os.path.normpath(e[k])) for k in ("image", "label")}
                       for e in part]
    return lists


# ----------------------------------------------------------------------------- medseg

def parse_time(line):
    match = LOG_TIME.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() if match else None


def run_medseg(args, seed, data_root, run_dir):
    ml_root = os.path.join(run_dir, "ml")
    shutil.rmtree(ml_root, ignore_errors=True)
    epochs = math.ceil(args.steps / args.steps_per_epoch)
    hp = {
        "epochs": epochs, "steps_per_epoch": args.steps_per_epoch, "val_interval": 1,
        "batch_size": args.batch, "roi_size": json.dumps(args.roi), "pixdim": "[1.0, 1.0, 1.0]",
        "data.normalize": "volume", "label_scheme": "msd",
        "augment.flip_prob": 0.5, "augment.flip_axes": "[0]",
        "augment.scale_intensity_prob": 0, "augment.shift_intensity_prob": 0,
        "model.channels": "[16, 32, 64, 128, 256]", "model.strides": "[2, 2, 2, 2]",
        "num_res_units": 2, "dropout": 0.0,
        "optimizer": "adam", "lr": args.lr, "weight_decay": args.weight_decay,
        "lr_schedule": "constant", "warmup_steps": 0, "loss": "dice", "amp": "off",
        "device": "cpu", "num_threads": args.threads, "nproc_per_node": 1, "seed": seed,
        "log_interval": 1, "overlap": 0.25, "sw_batch_size": 4, "blend": "constant",
        "sliding_window.threshold": 0.5, "checkpoint_keep": 1, "checkpoint_every_minutes": 0,
        "resume": "false",
    }
    command = [os.path.join(args.repo, "scripts", "local_run.sh"), "--binary", args.medseg,
               "--ml-root", ml_root, "--channel", "train=" + os.path.join(data_root, "train"),
               "--channel", "validation=" + os.path.join(data_root, "validation")]
    for key, value in hp.items():
        command += ["-p", f"{key}={value}"]
    command.append("train")
    log(f"medseg seed {seed}: {epochs} epochs x {args.steps_per_epoch} steps")
    log_path = os.path.join(run_dir, "medseg.log")
    started = time.perf_counter()
    train_seconds = 0.0
    previous_time = None
    step_seconds = []  # cumulative training seconds after each step
    step_times = []    # seconds of each step
    validations = []   # (epoch, dice) in log order
    stopped_early = False
    with open(log_path, "w") as log_file:
        environment = dict(os.environ)
        if args.medseg_config:
            environment["MEDSEG_DEFAULT_CONFIG"] = args.medseg_config
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True, env=environment)
        for line in process.stdout:
            log_file.write(line)
            stamp = parse_time(line)
            if stamp is None:
                continue
            if PROGRESS.search(line) and previous_time is not None:
                train_seconds += stamp - previous_time
                step_seconds.append(train_seconds)
                step_times.append(stamp - previous_time)
            match = VALIDATION.search(line)
            if match:
                dice = float(match.group(2))
                validations.append((int(match.group(1)), dice))
                if args.early_stop and dice >= max(THRESHOLDS) and not stopped_early:
                    stopped_early = True
                    os.killpg(process.pid, signal.SIGTERM)  # the job checkpoints and exits 0
            previous_time = stamp
        rc = process.wait()
    wall = time.perf_counter() - started
    if rc != 0 and not stopped_early:
        raise RuntimeError(f"medseg exited {rc}; see {log_path}")
    curve = []
    with open(os.path.join(ml_root, "output", "data", "metrics.jsonl")) as f:
        for line in f:
            entry = json.loads(line)
            if "val_mean_dice" in entry:
                step = int(entry["step"])
                seconds = step_seconds[step - 1] if 0 < step <= len(step_seconds) else float("nan")
                curve.append({"step": step, "train_seconds": seconds,
                              "dice": float(entry["val_mean_dice"]),
                              "tc": entry.get("val_dice_tc"), "wt": entry.get("val_dice_wt"),
                              "et": entry.get("val_dice_et")})
    shutil.rmtree(os.path.join(ml_root, "checkpoints"), ignore_errors=True)
    shutil.rmtree(os.path.join(ml_root, "cache"), ignore_errors=True)
    return {"curve": curve, "wall_seconds": wall, "steps_run": len(step_seconds),
            "train_seconds": train_seconds, "step_seconds_median": median_of(step_times), "log": log_path, "stopped_early": stopped_early}


# ----------------------------------------------------------------------------- MONAI

def label_to_msd_channels(label):
    """msd (Task01) labels 1 edema, 2 non-enhancing, 3 enhancing -> TC (2, 3), WT (1-3), ET (3)."""
    import torch
    return torch.cat([(label == 2) | (label == 3), (label >= 1) & (label <= 3), label == 3],
                     dim=0).float()


def run_monai(args, seed, lists, run_dir):
    import numpy as np
    import torch
    from monai.data import CacheDataset
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceLoss
    from monai.metrics import DiceMetric
    from monai.networks.nets import UNet
    from monai.transforms import (Compose, EnsureChannelFirstd, Lambdad, LoadImaged,
                                  NormalizeIntensityd, Orientationd, RandFlipd,
                                  RandSpatialCropd, Spacingd)
    from monai.utils import set_determinism

    torch.set_num_threads(args.threads)
    set_determinism(seed=seed)
    keys = ["image", "label"]
    static = Compose([
        LoadImaged(keys=keys, image_only=False),
        EnsureChannelFirstd(keys=keys),
        Lambdad(keys="label", func=label_to_msd_channels),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest")),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ])
    augment = Compose([
        RandSpatialCropd(keys=keys, roi_size=args.roi, random_size=False),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
    ])
    augment.set_random_state(seed=seed)
    train_cases = CacheDataset(lists["train"], static, cache_rate=1.0, num_workers=0,
                               progress=False)
    val_cases = CacheDataset(lists["validation"], static, cache_rate=1.0, num_workers=0,
                             progress=False)
    set_determinism(seed=seed)  # weights from the seed, whatever the loading drew
    net = UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(16, 32, 64, 128, 256),
               strides=(2, 2, 2, 2), num_res_units=2)
    loss_function = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    metric = DiceMetric(include_background=True, reduction="mean")
    order_rng = np.random.RandomState(seed)

    def validate():
        net.eval()
        with torch.no_grad():
            for case in val_cases:
                image = case["image"].as_tensor().unsqueeze(0).float()
                logits = sliding_window_inference(image, args.roi, 4, net, overlap=0.25,
                                                  mode="constant")
                prediction = (torch.sigmoid(logits) >= 0.5).float()
                metric(y_pred=prediction, y=case["label"].as_tensor().unsqueeze(0))
        per_channel = metric.aggregate(reduction="mean_batch")
        mean = metric.aggregate().item()
        metric.reset()
        net.train()
        return mean, [float(v) for v in per_channel]

    log(f"MONAI seed {seed}: {args.steps} steps, validation every {args.steps_per_epoch}")
    started = time.perf_counter()
    train_seconds = 0.0
    curve = []
    order = []
    step_times = []
    step = 0
    stopped_early = False
    net.train()
    while step < args.steps:
        if not order:  # an epoch: whole permutations of the training cases, cut to its samples
            need = args.steps_per_epoch * args.batch
            while len(order) < need:
                order += list(order_rng.permutation(len(train_cases)))
            order = order[:need]
        step_started = time.perf_counter()
        samples = [augment(train_cases[order.pop(0)]) for _ in range(args.batch)]
        image = torch.stack([s["image"].as_tensor() for s in samples]).float()
        label = torch.stack([s["label"].as_tensor() for s in samples]).float()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(net(image), label)
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - step_started)
        train_seconds += step_times[-1]
        step += 1
        if step % args.steps_per_epoch == 0 or step == args.steps:
            dice, channels = validate()
            curve.append({"step": step, "train_seconds": train_seconds, "dice": dice,
                          "tc": channels[0], "wt": channels[1], "et": channels[2]})
            log(f"MONAI seed {seed} step {step}: loss {loss.item():.4f} val mean Dice "
                f"{dice:.4f} (train {train_seconds:.1f} s)")
            if args.early_stop and dice >= max(THRESHOLDS):
                stopped_early = True
                break
    return {"curve": curve, "wall_seconds": time.perf_counter() - started, "steps_run": step,
            "train_seconds": train_seconds, "step_seconds_median": median_of(step_times), "stopped_early": stopped_early}


# ----------------------------------------------------------------------------- summary

def median_of(values):
    return statistics.median(values) if values else float("nan")


def first_reaching(curve, threshold):
    for point in curve:
        if point["dice"] >= threshold:
            return point
    return None


def fmt(value, digits=1):
    return "not reached" if value is None else f"{value:.{digits}f}"


def median_or_none(values):
    """Median over seeds; a seed that never reached the threshold counts as +infinity, so the
    median is 'not reached' when half or more of the seeds did not reach it."""
    ordered = sorted(math.inf if v is None else v for v in values)
    if not ordered:
        return None
    median = statistics.median(ordered)
    return None if math.isinf(median) or math.isnan(median) else median


def summarise(args, results):
    frameworks = ("medseg", "monai")
    summary = {"recipe": {k: getattr(args, k) for k in (
        "seeds", "first_seed", "steps", "steps_per_epoch", "cases", "val_cases", "shape", "roi",
        "batch", "lr", "weight_decay", "threads", "early_stop")},
        "seconds": "training seconds only (validation, checkpoints and model writing excluded)",
        "thresholds": list(THRESHOLDS), "runs": results, "to_dice": {}}
    lines = []
    table = []
    header = f"{'threshold':>9}  {'metric':<11} {'framework':<9} {'median':>11}  per seed"
    table.append(header)
    table.append("-" * len(header))
    for threshold in THRESHOLDS:
        key = f"{threshold:.2f}"
        entry = {}
        for kind, field in (("steps", "step"), ("seconds", "train_seconds"),
                            ("est_seconds", "est_seconds")):
            medians = {}
            for framework in frameworks:
                values = []
                for run in results:
                    point = first_reaching(run[framework]["curve"], threshold)
                    if point is None:
                        values.append(None)
                    elif field == "est_seconds":  # steps x the run's median step time
                        values.append(point["step"] * run[framework]["step_seconds_median"])
                    else:
                        values.append(float(point[field]))
                median = median_or_none(values)
                medians[framework] = median
                entry[f"{framework}_{kind}"] = {"median": median, "per_seed": values}
                digits = 0 if kind == "steps" else 1
                table.append(f"{key:>9}  {kind:<11} {framework:<9} {fmt(median, digits):>11}  "
                             + ", ".join(fmt(v, digits) for v in values))
                lines.append(f"{framework}_{kind}_to_dice_{key}_median={fmt(median, digits)}")
                for run, value in zip(results, values):
                    lines.append(f"{framework}_{kind}_to_dice_{key}_seed{run['seed']}="
                                 f"{fmt(value, digits)}")
            ratio = (medians["medseg"] / medians["monai"]
                     if medians["medseg"] is not None and medians["monai"] else None)
            entry[f"ratio_{kind}"] = ratio
            table.append(f"{key:>9}  {kind:<11} {'ratio':<9} {fmt(ratio, 2):>11}  "
                         "(medseg / MONAI medians)")
            lines.append(f"ratio_{kind}_to_dice_{key}={fmt(ratio, 3)}")
        summary["to_dice"][key] = entry
    table.append("")
    for framework in frameworks:
        per_step = [run[framework]["train_seconds"] / max(1, run[framework]["steps_run"])
                    for run in results]
        best = [max((p["dice"] for p in run[framework]["curve"]), default=float("nan"))
                for run in results]
        median_step = statistics.median(run[framework]["step_seconds_median"] for run in results)
        summary[f"{framework}_seconds_per_step_mean"] = statistics.median(per_step)
        summary[f"{framework}_seconds_per_step_median"] = median_step
        table.append(f"{framework}: training seconds/step: mean {statistics.median(per_step):.3f}, "
                     f"median step {median_step:.3f} (median over seeds); best val Dice per seed "
                     + ", ".join(f"{b:.4f}" for b in best))
        lines.append(f"{framework}_seconds_per_step_mean={statistics.median(per_step):.4f}")
        lines.append(f"{framework}_seconds_per_step_median={median_step:.4f}")
    return summary, table, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--medseg", default="build/medseg", help="medseg binary")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=810, help="training steps per run (at most)")
    parser.add_argument("--steps-per-epoch", type=int, default=15,
                        help="validate every this many steps (medseg: one epoch)")
    parser.add_argument("--out", default="/tmp/compare_monai", help="work and result folder")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--val-cases", type=int, default=5,
                        help="the last cases go to the validation folder")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64])
    parser.add_argument("--roi", type=int, nargs=3, default=[48, 48, 32])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--medseg-config", default="",
                        help="shipped YAML for medseg (MEDSEG_DEFAULT_CONFIG); default: the "
                             "binary's own lookup (config/brats_unet.yaml of the source tree)")
    parser.add_argument("--frameworks", nargs="+", default=["medseg", "monai"],
                        choices=["medseg", "monai"], help="(both are needed for ratios)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="print the summary of the seeds finished so far in --out "
                             "(runs_partial.json, e.g. of an interrupted run) and exit")
    parser.add_argument("--no-early-stop", dest="early_stop", action="store_false",
                        help="train all --steps even after reaching the highest threshold")
    args = parser.parse_args()
    args.repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args.medseg = os.path.abspath(args.medseg)
    args.out = os.path.abspath(args.out)
    if args.summarise_only:
        with open(os.path.join(args.out, "runs_partial.json")) as f:
            results = json.load(f)
        args.seeds = len(results)
        report(args, results, float("nan"))
        return
    if not os.access(args.medseg, os.X_OK):
        sys.exit(f"compare_monai: {args.medseg} is not an executable medseg binary")
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    results = []
    empty = {"curve": [], "wall_seconds": 0.0, "steps_run": 0, "train_seconds": 0.0,
             "step_seconds_median": float("nan")}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run_dir = os.path.join(args.out, f"seed{seed}")
        os.makedirs(run_dir, exist_ok=True)
        lists = make_data(args.medseg, os.path.join(run_dir, "data"), args.cases, args.val_cases,
                          args.shape, seed, args.threads)
        run = {"seed": seed, "train_cases": len(lists["train"]),
               "validation_cases": len(lists["validation"])}
        run["medseg"] = (run_medseg(args, seed, os.path.join(run_dir, "data"), run_dir)
                         if "medseg" in args.frameworks else empty)
        run["monai"] = run_monai(args, seed, lists, run_dir) if "monai" in args.frameworks else empty
        for framework in ("medseg", "monai"):
            curve = run[framework]["curve"]
            if curve:
                log(f"seed {seed} {framework}: {run[framework]['steps_run']} steps, "
                    f"{run[framework]['train_seconds']:.1f} s training, "
                    f"{run[framework]['wall_seconds']:.1f} s wall, last Dice "
                    f"{curve[-1]['dice']:.4f}")
        results.append(run)
        with open(os.path.join(args.out, "runs_partial.json"), "w") as f:
            json.dump(results, f, indent=1)
    report(args, results, time.perf_counter() - started)


def report(args, results, wall_seconds):
    summary, table, lines = summarise(args, results)
    summary["wall_seconds"] = wall_seconds
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"steps and training seconds to validation mean Dice ({len(results)} seeds; "
          f"validation every {args.steps_per_epoch} steps)")
    print("\n".join(table))
    print("\n".join(lines))
    print(f"wall_seconds={summary['wall_seconds']:.0f}")
    print(f"summary_json={os.path.join(args.out, 'summary.json')}")


if __name__ == "__main__":
    main()
