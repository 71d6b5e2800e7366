"""What ``predict source=`` may name: one image, a folder, a glob pattern or a ``.txt`` list of images."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from yolo_slim.data.dataset_config import IMAGE_SUFFIXES


def image_sources(source: str | Path) -> list[Path]:
    """The image files ``source`` names, sorted (a folder is searched recursively).

    A ``.txt`` source lists one image per line, relative to the list's folder unless absolute.
    Files are chosen by suffix only; whether they decode is found out when they are read.

    Raises:
        ValueError: ``source`` names nothing, or nothing with an image suffix.
    """
    text = str(source)
    path = Path(text)
    allowed = ", ".join(sorted(IMAGE_SUFFIXES))
    if path.is_dir():
        found = [Path(directory, name) for directory, _, names in os.walk(path, followlinks=True)
                 for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    elif path.is_file() and path.suffix.lower() == ".txt":
        entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        found = [entry if entry.is_absolute() else path.parent / entry for entry in map(Path, entries)]
        missing = [str(p) for p in found if not p.is_file()]
        if missing:
            raise ValueError(f"source={text!r} lists {len(missing)} files that do not exist, e.g. {missing[0]!r}")
    elif path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"source={text!r} is not an image ({allowed}) nor a .txt list of images")
        found = [path]
    elif glob.has_magic(text):
        found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    else:
        raise ValueError(f"source={text!r} does not exist; give an image, a folder, a glob pattern or a .txt list")
    if not found:
        raise ValueError(f"source={text!r} holds no image files ({allowed})")
    return sorted(found)
