"""What ``predict source=`` may name: one image, a folder, a glob pattern or a ``.txt`` list of images."""

from __future__ import annotations

import glob
from pathlib import Path

from yolo_slim.data.dataset_config import IMAGE_SUFFIXES, images_in_folder, images_in_list


def image_sources(source: str | Path) -> list[Path]:
    """The image files ``source`` names, sorted (a folder is searched recursively).

    A ``.txt`` source lists one image per line, relative to the list's folder unless absolute (entries
    without an image suffix are skipped with a warning, as in a data.yaml split).
    Files are chosen by suffix only; whether they decode is found out when they are read.

    Raises:
        ValueError: ``source`` names nothing, or nothing with an image suffix.
    """
    text = str(source)
    path = Path(text)
    allowed = ", ".join(sorted(IMAGE_SUFFIXES))
    if path.is_dir():
        found = list(images_in_folder(path))
    elif path.is_file() and path.suffix.lower() == ".txt":
        found = images_in_list(path, path.parent)  # data.yaml's rules, relative entries from the list's folder
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
