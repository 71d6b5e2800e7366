"""Pictures of detections: boxes with class names and scores on the image, and two models side by side."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_bounding_boxes


def class_colours(count: int) -> list[tuple[int, int, int]]:
    """One distinct, saturated colour per class (hues spread by the golden ratio, so neighbours differ)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)) for i in range(count)]


def draw_detections(image: torch.Tensor, detections: torch.Tensor, names: list[str]) -> torch.Tensor:
    """``image`` (3, H, W) uint8 with ``detections`` (n, 6) ``x1, y1, x2, y2, score, class`` in its pixels drawn."""
    if detections.numel() == 0:
        return image.clone()
    classes = detections[:, 5].long().tolist()
    colours = class_colours(max(len(names), max(classes) + 1))
    scores = detections[:, 4].tolist()
    labels = [f"{names[c] if c < len(names) else c} {score:.2f}" for c, score in zip(classes, scores)]
    width = max(1, round(max(image.shape[-2:]) / 320))  # lines that stay visible on large images
    return draw_bounding_boxes(image, detections[:, :4].float(), labels=labels, colors=[colours[c] for c in classes],
                               width=width)


def side_by_side(left: torch.Tensor, right: torch.Tensor, left_title: str, right_title: str) -> Image.Image:
    """Two (3, H, W) uint8 pictures of one image next to each other, each under its title."""
    height, width = left.shape[-2:]
    strip = 18
    canvas = Image.new("RGB", (2 * width + 4, height + strip), (255, 255, 255))
    for column, (picture, title) in enumerate(((left, left_title), (right, right_title))):
        x = column * (width + 4)
        canvas.paste(Image.fromarray(np.ascontiguousarray(picture.permute(1, 2, 0).numpy())), (x, strip))
        ImageDraw.Draw(canvas).text((x + 3, 3), title, fill=(0, 0, 0))
    return canvas


def comparison_sheet(images: torch.Tensor, left: list[torch.Tensor], right: list[torch.Tensor], names: list[str],
                     left_title: str, right_title: str) -> Image.Image:
    """Rows of ``side_by_side`` pictures, one per image of ``images`` (K, 3, H, W) uint8, the detections of
    two models (each a list of (n, 6) in those pixels) drawn on either side."""
    rows = [side_by_side(draw_detections(image, a, names), draw_detections(image, b, names), left_title, right_title)
            for image, a, b in zip(images, left, right)]
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), (255, 255, 255))
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    return sheet
