#!/usr/bin/env python3
"""Reads a folder of TensorBoard event files with TensorBoard's own reader and prints what it found
as JSON: {"scalars": {tag: [[step, value], ...]}, "images": {tag: [{"step", "width", "height",
"pixels_width", "pixels_height", "colours": {"red": n, "green": n, "yellow": n},
"colours_right_half": {...}}]}}. The PNG pictures are decoded with Pillow; "colours" counts the
pixels of medseg's outline colours, "colours_right_half" those in the right half (where the
validation picture shows the prediction).

usage: read_tensorboard.py FOLDER
"""
import io
import json
import sys

from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

OUTLINE_COLOURS = {"red": (255, 0, 0), "green": (0, 220, 0), "yellow": (255, 220, 0)}


def main():
    accumulator = event_accumulator.EventAccumulator(
        sys.argv[1], size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    result = {"scalars": {}, "images": {}}
    for tag in tags["scalars"]:
        result["scalars"][tag] = [[event.step, event.value] for event in accumulator.Scalars(tag)]
    for tag in tags["images"]:
        pictures = []
        for event in accumulator.Images(tag):
            image = Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")
            pixels = list(image.getdata())
            right_half = [p for i, p in enumerate(pixels) if i % image.width >= image.width // 2]
            pictures.append({
                "step": event.step, "width": event.width, "height": event.height,
                "pixels_width": image.width, "pixels_height": image.height,
                "colours": {name: sum(1 for p in pixels if p == rgb)
                            for name, rgb in OUTLINE_COLOURS.items()},
                "colours_right_half": {name: sum(1 for p in right_half if p == rgb)
                                       for name, rgb in OUTLINE_COLOURS.items()},
            })
        result["images"][tag] = pictures
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
