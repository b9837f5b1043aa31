#!/usr/bin/env python3
"""Learning curves of a medseg training job, from its metrics.jsonl, as one PNG.

Four panels over the global step: the training loss; the validation Dice per class (TC, WT, ET)
and their mean; the learning rate; samples per second with where a step's time went (the shares
medseg measures: data wait, copy, forward, backward, sync, optimiser, checkpoint, other).

usage: plot_metrics.py METRICS_JSONL [--out PNG] [--title TEXT]
Uses matplotlib (Debian's python3-matplotlib; scripts/setup.sh installs it).
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

DICE_CLASSES = [("val_dice_tc", "TC"), ("val_dice_wt", "WT"), ("val_dice_et", "ET"),
                ("val_mean_dice", "mean")]


def read_entries(path):
    entries = []
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as error:
                sys.exit(f"plot_metrics: {path} line {number} is not JSON: {error}")
    return entries


def series(entries, kind, key):
    points = [(e["step"], e[key]) for e in entries if e.get("type") == kind and key in e]
    return [p[0] for p in points], [p[1] for p in points]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics")
    parser.add_argument("--out", default="learning_curves.png")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    entries = read_entries(args.metrics)
    if not any(e.get("type") == "train" for e in entries):
        sys.exit(f"plot_metrics: {args.metrics} has no training entries (\"type\": \"train\")")

    figure, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    loss, dice, rate, speed = axes.flat
    loss.plot(*series(entries, "train", "train_loss"), color="tab:blue")
    loss.set(title="training loss", xlabel="step", ylabel="loss")

    for key, label in DICE_CLASSES:
        steps, values = series(entries, "validation", key)
        if steps:
            dice.plot(steps, values, marker="o", markersize=3, label=label,
                      linewidth=2.5 if key == "val_mean_dice" else 1.2)
    dice.set(title="validation Dice", xlabel="step", ylabel="Dice", ylim=(0, 1))
    if dice.lines:
        dice.legend(loc="lower right")
    else:
        dice.text(0.5, 0.5, "no validation yet", ha="center", transform=dice.transAxes)

    rate.plot(*series(entries, "train", "learning_rate"), color="tab:green")
    rate.set(title="learning rate", xlabel="step", ylabel="learning rate")

    speed.plot(*series(entries, "train", "samples_per_second"), color="tab:purple")
    speed.set(title="throughput and step time", xlabel="step", ylabel="samples/s")
    shares = [e for e in entries if e.get("type") == "train" and "step_time_share" in e]
    if shares:
        parts = list(shares[0]["step_time_share"])
        twin = speed.twinx()
        twin.stackplot([e["step"] for e in shares],
                       [[e["step_time_share"].get(p, 0.0) for e in shares] for p in parts],
                       labels=parts, alpha=0.25)
        twin.set(ylabel="share of the step", ylim=(0, 1))
        twin.legend(loc="upper left", fontsize="small", ncol=2)
    if args.title:
        figure.suptitle(args.title)
    figure.savefig(args.out, dpi=100)
    print(f"plot_metrics: wrote {args.out}")


if __name__ == "__main__":
    main()
