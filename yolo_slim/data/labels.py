"""Scan a split: check every image and label file once, keep what is usable, count what is not.

Labels are YOLO text files, one object per row ``class cx cy w h`` normalised to [0, 1], or a
polygon ``class x1 y1 x2 y2 x3 y3 ...`` (ultralytics' segment labels), which becomes its bounding
box; found by ultralytics' rule (:func:`label_path_for`). A missing label file means a background
image, as in ultralytics; they are counted and named in the report, since a whole split without
label files is almost always labels looked for in the wrong place. Everything else that is wrong is
*recoverable*: the bad row or image is skipped and counted in a :class:`DataReport` with a few
``path:line`` examples, so that one bad file among thousands neither stops training nor passes
silently.

Worked example (nc = 2), ``labels/train/a.txt``::

    0 0.5 0.5 0.2 0.2      kept
    1 0.5 0.5 0.2 0.2      kept
    1 0.5 0.5 0.2 0.2      duplicate_row  (a.txt:3)
    2 0.5 0.5 0.2 0.2      bad_class      (a.txt:4, nc = 2)
    0 0.98 0.5 0.1 0.2     kept, clipped to x2 = 1 (an object leaving the frame)
    0 0.1 0.1 0.3 0.1 0.2 0.4   kept as the box around the polygon: 0 0.2 0.25 0.2 0.3
    0 320 240 50 60        out_of_bounds  (pixels, not normalised)

The result of a scan is cached (:func:`scan_split`'s ``cache_path``) with a fingerprint of the
file list, sizes and modification times, so that a restart does not re-read a large dataset.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from yolo_slim.data.dataset_config import IMAGE_SUFFIXES
from yolo_slim.files import write_atomically

log = logging.getLogger(__name__)

# Bump when the scan's rules or the cache layout change, so that old caches are rebuilt.
FORMAT_VERSION = 4  # 3: label files read as UTF-8 with an optional BOM; 4: polygons bounded by their box
# A normalised value above 1 by more than this means the row is not normalised (pixels, most
# likely) and is dropped. A box whose values are normalised but whose edges overhang the image
# (an object leaving the frame, an annotation dragged past the border) is clipped to it, as
# ultralytics' loader does.
COORDINATE_TOLERANCE = 1e-2
MAX_EXAMPLES = 3
_EXIF_ORIENTATION = 0x0112
_JPEG_END_OF_IMAGE = b"\xff\xd9"
_LABELIMG_CLASSES = "classes.txt"  # LabelImg writes the class names beside the labels: not a label file

# kind -> what it means; the order is the order of the checks and of the summary.
PROBLEM_KINDS: dict[str, str] = {
    "missing_image": "image listed but missing (image skipped)",
    "corrupt_image": "image unreadable, corrupt or truncated (image skipped)",
    "unreadable_label": "label file unreadable as text (image skipped)",
    "orphan_label": "label file with no image (ignored)",
    "wrong_column_count": "row neither a box (5 columns) nor a polygon (class and 3 or more x y points) "
                          "(row skipped)",
    "not_a_number": "row with a value that is not a finite number (row skipped)",
    "negative_value": "row with a negative value (row skipped)",
    "bad_class": "class id not an integer in [0, nc) (row skipped)",
    "zero_size_box": "box with zero width or height (row skipped)",
    "out_of_bounds": f"value above 1 by more than {COORDINATE_TOLERANCE:g}: not normalised to the image "
                     "(row skipped)",
    "duplicate_row": "row repeating an earlier row of the same file (row skipped)",
}


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One usable image of a split.

    Attributes:
        path: The image file.
        labels: (n, 5) float32 rows ``[cls, cx, cy, w, h]`` normalised to the image; n may be 0.
        size: ``(height, width)`` in pixels, after EXIF orientation (as it will be decoded).
    """

    path: Path
    labels: np.ndarray
    size: tuple[int, int]


@dataclass
class DataReport:
    """What a scan found: totals, and per problem kind a count and up to 3 examples."""

    images: int = 0  # listed in the split
    usable_images: int = 0
    objects: int = 0  # label rows kept
    backgrounds: int = 0  # usable images without objects
    clipped_boxes: int = 0  # kept after clipping to the image
    polygon_boxes: int = 0  # polygon rows kept as their bounding boxes
    missing_labels: int = 0  # usable images without a label file (background images)
    missing_label_example: str = ""  # where the first of them was looked for
    from_cache: bool = False
    problems: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add_problem(self, kind: str, where: str) -> None:
        """Count one problem of ``kind`` (a key of :data:`PROBLEM_KINDS`) found at ``where``."""
        assert kind in PROBLEM_KINDS, kind
        self.problems[kind] = self.problems.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(where)

    @property
    def problem_count(self) -> int:
        return sum(self.problems.values())

    def summary(self, title: str = "data") -> str:
        """A multi-line, human-readable account of the scan."""
        source = " (from cache)" if self.from_cache else ""
        lines = [f"{title}{source}: {self.images} images listed, {self.usable_images} usable "
                 f"({self.backgrounds} background), {self.objects} objects"]
        if self.problems:
            lines.append(f"  {self.problem_count} problems:")
        for kind, meaning in PROBLEM_KINDS.items():
            if self.problems.get(kind):
                lines.append(f"    {kind} x{self.problems[kind]}: {meaning}; e.g. "
                             + ", ".join(self.examples.get(kind, [])))
        if self.clipped_boxes:
            lines.append(f"  {self.clipped_boxes} boxes clipped to the image (they overhung its border)")
        if self.polygon_boxes:
            lines.append(f"  {self.polygon_boxes} polygon rows kept as their bounding boxes")
        if self.missing_labels:
            lines.append(f"  {self.missing_labels} images without a label file, taken as background; "
                         f"e.g. {self.missing_label_example} (labels are looked for where the last "
                         f"'/images/' of the image path becomes '/labels/', else beside the image)")
        return "\n".join(lines)

    def log(self, logger: logging.Logger, title: str = "data") -> None:
        """Log :meth:`summary` once: as a warning if anything was skipped or no image has a label file, else as info."""
        no_labels_at_all = self.usable_images > 0 and self.missing_labels == self.usable_images
        level = logging.WARNING if self.problems or no_labels_at_all else logging.INFO
        logger.log(level, "%s", self.summary(title))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (ints, strings, dicts, lists) for a ``weights_only`` cache."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        return cls(**data)


def label_path_for(image_path: Path) -> Path:
    """ultralytics' rule: the last ``/images/`` becomes ``/labels/``, the suffix ``.txt``.

    Without an ``/images/`` folder in the path, the label file sits beside the image.
    """
    text = str(image_path)
    marker = f"{os.sep}images{os.sep}"
    head, found, tail = text.rpartition(marker)
    if found:
        text = f"{head}{os.sep}labels{os.sep}{tail}"
    return Path(os.path.splitext(text)[0] + ".txt")


def default_cache_path(image_paths: Sequence[Path], split: str) -> Path | None:
    """Where a split's scan is cached: beside its labels folder, as ultralytics does.

    ``images/train/*.jpg`` -> ``labels/train.yolo_slim.cache``. The name differs from
    ultralytics' ``labels/train.cache`` (a numpy pickle) so that the two tools never overwrite
    each other's file. When several splits share one labels folder, the split name is added.
    Returns None when there is no sensible place (no images, or labels at a filesystem root).
    """
    if not image_paths:
        return None
    labels_folder = label_path_for(Path(image_paths[0])).parent
    if not labels_folder.name:
        return None
    name = labels_folder.name if labels_folder.name == split else f"{labels_folder.name}-{split}"
    return labels_folder.with_name(f"{name}.yolo_slim.cache")


def scan_split(image_paths: Sequence[Path], nc: int, cache_path: Path | None = None
               ) -> tuple[list[ImageRecord], DataReport]:
    """Check the images and labels of one split.

    Args:
        image_paths: The split's images (as :class:`~yolo_slim.data.dataset_config.DatasetConfig`
            lists them).
        nc: Number of classes; a class id >= nc is a problem.
        cache_path: Where to read/write the cached scan; None for no cache. A cache that does
            not match the files (or cannot be read) is rebuilt; one that cannot be written is
            skipped with a debug message.

    Returns:
        The usable images, in the order given, and the report.

    Raises:
        ValueError: ``nc`` is not a positive integer.
    """
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ValueError(f"scan_split: nc must be a positive integer; found {nc!r}")
    cache_path = Path(cache_path) if cache_path is not None else None
    image_paths = [Path(path) for path in image_paths]
    label_paths = [label_path_for(path) for path in image_paths]
    label_listing = _list_label_folders(label_paths)
    fingerprint = _fingerprint(image_paths, label_paths, label_listing, nc) if cache_path else ""
    if cache_path is not None:
        cached = _load_cache(cache_path, fingerprint)
        if cached is not None:
            return cached
    records, report = _scan(image_paths, label_paths, label_listing, nc)
    if cache_path is not None:
        _save_cache(cache_path, fingerprint, records, report)
    return records, report


def _scan(image_paths: list[Path], label_paths: list[Path], label_listing: list[Path], nc: int
          ) -> tuple[list[ImageRecord], DataReport]:
    report = DataReport(images=len(image_paths))
    records = []
    for image_path, label_path in zip(image_paths, label_paths):
        size = _check_image(image_path, report)
        if size is None:
            continue
        labels = _read_labels(label_path, nc, report)
        if labels is None:
            continue
        if labels is _NO_LABEL_FILE:
            report.missing_labels += 1
            report.missing_label_example = report.missing_label_example or str(label_path)
            labels = np.zeros((0, 5), dtype=np.float32)
        records.append(ImageRecord(path=image_path, labels=labels, size=size))
        report.objects += len(labels)
        report.backgrounds += len(labels) == 0
    report.usable_images = len(records)
    for orphan in _orphan_labels(set(label_paths), label_listing):
        report.add_problem("orphan_label", str(orphan))
    return records, report


def _check_image(path: Path, report: DataReport) -> tuple[int, int] | None:
    """(height, width) of a readable image; None (and a counted problem) otherwise."""
    if not path.is_file():
        report.add_problem("missing_image", str(path))
        return None
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = _exif_orientation(image, path)
            image_format = image.format
            # verify() walks the file's structure (PNG chunks and their CRCs, ...) without
            # decoding pixels; it catches a truncated PNG but not a truncated JPEG ...
            image.verify()
        if image_format == "JPEG":
            # ... so for JPEG check the end-of-image marker, as ultralytics does. Some cameras
            # append data after it (a phone's motion photo, a maker's trailer): such a file decodes
            # whole, so only a file that also fails to decode is taken as truncated. (ultralytics
            # re-saves such files in place; we never write to the user's dataset.)
            with open(path, "rb") as file:
                file.seek(-2, os.SEEK_END)
                if file.read() != _JPEG_END_OF_IMAGE:
                    _decode_whole(path)
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ValueError ...)
        log.debug("corrupt image %s: %s", path, error)
        report.add_problem("corrupt_image", str(path))
        return None
    # EXIF orientations 5-8 rotate by 90 degrees: the decoded image has width and height swapped.
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _exif_orientation(image: Image.Image, path: Path) -> int:
    """The EXIF orientation (1 to 8); 1 when the EXIF block is missing or unreadable.

    A damaged EXIF block does not make the pixels unusable: the image is kept, unrotated.
    """
    # From the raw EXIF block that opening the file already read: Image.getexif() would decode
    # a PNG's pixels (and then verify() refuses to run).
    try:
        raw = image.info.get("exif")
        if raw:
            exif = Image.Exif()
            exif.load(raw)
            orientation = int(exif.get(_EXIF_ORIENTATION, 1))
        elif image.format == "TIFF":  # TIFF keeps orientation among its own tags, read at open
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1))
        else:
            orientation = 1
    except Exception as error:  # Pillow raises SyntaxError, TypeError, struct.error ... on a bad block
        log.debug("unreadable EXIF in %s (%s); taking orientation 1", path, error)
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _decode_whole(path: Path) -> None:
    """Decode every pixel with Pillow; raises OSError ("image file is truncated") when data is missing."""
    with Image.open(path) as image:
        image.load()


# _read_labels' answer for an image without a label file (a background image, counted apart).
_NO_LABEL_FILE = np.zeros((0, 5), dtype=np.float32)


def _read_labels(label_path: Path, nc: int, report: DataReport) -> np.ndarray | None:
    """The kept rows (n, 5); an empty array for a background image (:data:`_NO_LABEL_FILE` when the
    file does not exist); None if unreadable."""
    try:
        # utf-8-sig: Windows tools (Notepad, some exporters) start a file with a BOM, which would make the
        # first row's class unparseable; the locale's encoding is not the files' either.
        text = label_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return _NO_LABEL_FILE
    except (OSError, UnicodeDecodeError) as error:
        log.debug("unreadable label file %s: %s", label_path, error)
        report.add_problem("unreadable_label", str(label_path))
        return None
    rows: list[tuple[float, ...]] = []
    seen: set[tuple[float, ...]] = set()
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue  # blank lines are harmless
        parsed = _parse_row(fields, nc)
        if isinstance(parsed, str):
            report.add_problem(parsed, f"{label_path}:{line_number}")
            continue
        row, clipped = parsed
        if row in seen:
            report.add_problem("duplicate_row", f"{label_path}:{line_number}")
            continue
        report.clipped_boxes += clipped
        report.polygon_boxes += len(fields) > 5
        seen.add(row)
        rows.append(row)
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def _parse_row(fields: list[str], nc: int) -> tuple[tuple[float, ...], bool] | str:
    """``((cls, cx, cy, w, h), clipped)`` for a usable row, else the problem kind.

    A polygon row (class, then 3 or more ``x y`` points) gives the box around its points, as
    ultralytics' ``segments2boxes`` does.
    """
    polygon = len(fields) >= 7 and len(fields) % 2 == 1
    if len(fields) != 5 and not polygon:
        return "wrong_column_count"
    try:
        values = [float(value) for value in fields]
    except ValueError:
        return "not_a_number"
    if not all(math.isfinite(value) for value in values):
        return "not_a_number"
    class_id = values[0]
    if polygon:
        xs, ys = values[1::2], values[2::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        center_x, center_y, width, height = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    else:
        _, center_x, center_y, width, height = values
        x1, y1 = center_x - width / 2, center_y - height / 2
        x2, y2 = center_x + width / 2, center_y + height / 2
    # The bounds are checked on (cx, cy, w, h), as ultralytics checks them; for a polygon on the box around
    # its points, so a segment whose points overhang the border is clipped like an overhanging box.
    # Coordinates may undershoot 0 by the tolerance (rounded by an annotation tool; clipped below).
    box = (center_x, center_y, width, height)
    if class_id < 0 or any(value < -COORDINATE_TOLERANCE for value in box):
        return "negative_value"
    if any(value > 1 + COORDINATE_TOLERANCE for value in box):
        return "out_of_bounds"
    if class_id != int(class_id) or class_id >= nc:
        return "bad_class"
    if x2 <= x1 or y2 <= y1:
        return "zero_size_box"
    clipped = min(x1, y1) < 0 or max(x2, y2) > 1
    if clipped:
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)
        if x2 <= x1 or y2 <= y1:
            return "zero_size_box"
    if clipped or polygon:
        center_x, center_y, width, height = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    return (class_id, center_x, center_y, width, height), clipped


def _list_label_folders(label_paths: list[Path]) -> list[Path]:
    """Every .txt in the folders the split's labels live in (to find orphans), sorted."""
    found = []
    for folder in sorted({path.parent for path in label_paths}):
        try:
            with os.scandir(folder) as entries:
                found += [Path(entry.path) for entry in entries
                          if entry.name.endswith(".txt") and entry.is_file()]
        except OSError:
            continue  # no labels folder: every image of it is a background image
    return sorted(found)


def _orphan_labels(expected: set[Path], label_listing: list[Path]) -> list[Path]:
    """Label files with no image of the same stem in the matching images folder.

    A label file not in this split is not necessarily an orphan: several .txt-listed splits
    may share one labels folder, so we look for the image on disk, not in the split.
    """
    orphans, stems_by_folder = [], {}
    for label_path in label_listing:
        if label_path in expected or label_path.name == _LABELIMG_CLASSES:
            continue
        image_folder = _image_folder_for(label_path.parent)
        if image_folder not in stems_by_folder:
            stems_by_folder[image_folder] = _image_stems(image_folder)
        if label_path.stem not in stems_by_folder[image_folder]:
            orphans.append(label_path)
    return orphans


def _image_folder_for(label_folder: Path) -> Path:
    text = str(label_folder) + os.sep
    head, found, tail = text.rpartition(f"{os.sep}labels{os.sep}")
    return Path(f"{head}{os.sep}images{os.sep}{tail}") if found else label_folder


def _image_stems(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {os.path.splitext(entry.name)[0] for entry in entries
                    if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES}
    except OSError:
        return set()


def _fingerprint(image_paths: list[Path], label_paths: list[Path], label_listing: list[Path], nc: int) -> str:
    """A hash of everything the scan's result depends on, from ``stat`` alone (no file is read)."""
    digest = hashlib.sha256(f"yolo_slim labels v{FORMAT_VERSION} nc={nc}\n".encode())
    for path in [*image_paths, *label_paths, *label_listing]:
        try:
            status = os.stat(path)
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _load_cache(cache_path: Path, fingerprint: str) -> tuple[list[ImageRecord], DataReport] | None:
    if not cache_path.is_file():
        return None
    try:
        cache = torch.load(cache_path, map_location="cpu", weights_only=True)
        if cache.get("version") != FORMAT_VERSION or cache.get("fingerprint") != fingerprint:
            log.debug("label cache %s is stale; rescanning", cache_path)
            return None
        labels = cache["labels"].numpy()
        bounds = np.concatenate([[0], np.cumsum(cache["counts"].numpy())])
        records = [ImageRecord(path=Path(path), labels=labels[bounds[index]:bounds[index + 1]],
                               size=(int(size[0]), int(size[1])))
                   for index, (path, size) in enumerate(zip(cache["paths"], cache["sizes"].tolist()))]
        report = DataReport.from_dict(cache["report"])
    except Exception as error:  # a corrupt or foreign file: any failure means "rebuild"
        log.debug("label cache %s unreadable (%s); rescanning", cache_path, error)
        return None
    report.from_cache = True
    return records, report


def _save_cache(cache_path: Path, fingerprint: str, records: list[ImageRecord], report: DataReport) -> None:
    # Labels are stored as one concatenated tensor plus per-image counts: one tensor instead of
    # one per image keeps save/load fast for large datasets.
    labels = [record.labels for record in records]
    cache = {
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "paths": [str(record.path) for record in records],
        "sizes": torch.tensor([list(record.size) for record in records], dtype=torch.int64).reshape(-1, 2),
        "counts": torch.tensor([len(rows) for rows in labels], dtype=torch.int64),
        "labels": torch.from_numpy(np.concatenate(labels) if labels else np.zeros((0, 5), np.float32)),
        "report": report.to_dict(),
    }
    try:  # a reader (another rank, a crash) never sees half a file
        write_atomically(cache_path, lambda file: torch.save(cache, file), binary=True)
    except (OSError, RuntimeError) as error:
        log.debug("label cache %s not written (%s); continuing without a cache", cache_path, error)
