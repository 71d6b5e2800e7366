"""Tiny YOLO datasets written with Pillow: white rectangles (the objects) on black images.

The label of every object is the exact box of its white pixels, so a test can check that a
transform moved a box together with the pixels it describes (:func:`white_box`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

Box = tuple[int, int, int, int]  # pixel x1, y1, x2, y2 (edges: x2 is one past the last white column)

# name -> (width, height, [(cls, box)]); None as the object list = no label file (background).
TRAIN_IMAGES: dict[str, tuple[int, int, list[tuple[int, Box]] | None]] = {
    "img0.jpg": (80, 60, [(0, (10, 10, 30, 40))]),
    "img1.png": (64, 64, [(1, (5, 5, 25, 25)), (0, (40, 30, 60, 60))]),
    "img2.jpg": (100, 50, [(1, (50, 10, 90, 40))]),
    "img3.png": (50, 90, [(0, (10, 20, 40, 70))]),
    "img4.jpg": (64, 48, None),
    "img5.png": (48, 64, [(1, (8, 8, 40, 56))]),
}
VAL_IMAGES: dict[str, tuple[int, int, list[tuple[int, Box]] | None]] = {
    "v0.jpg": (64, 64, [(0, (16, 16, 48, 48))]),
    "v1.png": (80, 40, [(1, (10, 5, 70, 35))]),
    "v2.jpg": (40, 80, [(0, (5, 10, 35, 70))]),
}


def write_image(path: Path, width: int, height: int, boxes: Sequence[Box] = ()) -> Path:
    """A black image with white rectangles; the format follows the suffix."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        pixels[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(pixels).save(path, **options)
    return path


def label_row(class_id: int, box: Box, width: int, height: int) -> str:
    x1, y1, x2, y2 = box
    values = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
    return f"{class_id} " + " ".join(f"{value:.6f}" for value in values)


def write_split(root: Path, split: str, images: dict[str, tuple[int, int, list[tuple[int, Box]] | None]]) -> None:
    for name, (width, height, objects) in images.items():
        image_path = write_image(root / "images" / split / name, width, height, [box for _, box in objects or []])
        if objects is not None:
            label_path = root / "labels" / split / f"{image_path.stem}.txt"
            label_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.write_text("".join(label_row(cls, box, width, height) + "\n" for cls, box in objects))


def white_box(image: torch.Tensor, threshold: int = 127) -> Box | None:
    """Pixel-edge box of the bright pixels of a (3, H, W) uint8 image; None if there are none."""
    bright = image.float().mean(dim=0) > threshold
    ys, xs = torch.nonzero(bright, as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.fixture
def yolo_dataset(tmp_path: Path) -> Path:
    """A valid dataset (6 train images, one a background; 3 val images, 2 classes); its data.yaml."""
    root = tmp_path / "dataset"
    write_split(root, "train", TRAIN_IMAGES)
    write_split(root, "val", VAL_IMAGES)
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["square", "box"]}))
    return data_yaml


@pytest.fixture
def helpers() -> SimpleNamespace:
    """This module's helpers, for tests (a conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(write_image=write_image, label_row=label_row, write_split=write_split,
                           white_box=white_box, TRAIN_IMAGES=TRAIN_IMAGES, VAL_IMAGES=VAL_IMAGES)
