"""Read an ultralytics ``data.yaml`` into a :class:`DatasetConfig`: the dataset root, the image
paths of each split and the class names.

The format, as ultralytics' ``check_dataset`` / ``LoadImagesAndLabels`` read it::

    path: ../datasets/coco128   # optional root; relative to this yaml's folder
    train: images/train2017     # a folder (searched recursively), a .txt list, or a list of those
    val: images/train2017
    test:                       # optional
    names: {0: person, 1: bicycle}   # or a list: [person, bicycle]
    nc: 2                       # optional; must agree with names

One deliberate difference: ultralytics resolves a relative ``path`` against its own checkout;
we resolve it against the yaml's folder, so that a dataset folder can be moved as a whole, and only where
nothing is there, against the current folder (run from their checkout, their own yamls then work as they are). As in
ultralytics, a split entry ``../x`` that does not exist is tried as ``x``: Roboflow's exports write
``train: ../train/images`` in a yaml that sits beside ``train/``. A ``test`` entry that points to
nothing is left out with a warning (ultralytics checks only ``val``); ``train`` and ``val`` must exist.
Only the split folders and lists are read here; whether each image exists and is readable is
checked later, per image, by :func:`yolo_slim.data.labels.scan_split`, which can count and skip
bad images instead of refusing the whole dataset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

# Suffixes (lower-case) of the files we treat as images; ultralytics' IMG_FORMATS minus the
# ones neither torchvision nor Pillow decodes without extra plugins (dng, mpo, pfm).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
SPLIT_KEYS = ("train", "val", "test")
REQUIRED_KEYS = ("train", "val", "names")


class DataConfigError(ValueError):
    """A data.yaml (or the dataset it points to) that cannot be used; the message names the file."""


@dataclass(frozen=True)
class DatasetConfig:
    """A parsed data.yaml.

    Attributes:
        root: The dataset root that relative split entries are resolved against.
        splits: Split name (``train``, ``val``, optionally ``test``) -> image paths, sorted and
            de-duplicated. Paths from .txt lists are kept even if the file is missing: the scan
            counts those as problems.
        names: Class names; the class id is the index.
        yaml_path: The absolute path of the data.yaml that was read.
    """

    root: Path
    splits: dict[str, list[Path]]
    names: list[str]
    yaml_path: Path

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """Read a data.yaml and list the images of each split.

    Args:
        path: The data.yaml file.

    Returns:
        The parsed config.

    Raises:
        DataConfigError: the file is missing or not a yaml mapping, ``train``/``val``/``names``
            is missing, ``names`` and ``nc`` disagree, dict ids are not 0..n-1, a split entry
            points to nothing, or a split holds no images.
    """
    yaml_path = Path(path).expanduser().absolute()
    if yaml_path.is_dir():
        found = sorted(p.name for p in yaml_path.glob("*.y*ml"))[:3]
        hint = f" (it holds {', '.join(found)})" if found else " (the yaml that lists its train:, val: and names:)"
        raise DataConfigError(f"data.yaml {str(yaml_path)!r} is a folder; give the data yaml file{hint}")
    if not yaml_path.is_file():
        raise DataConfigError(f"data.yaml {str(yaml_path)!r} does not exist")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DataConfigError(f"data.yaml {str(yaml_path)!r} cannot be read as yaml: {error}") from error
    if not isinstance(data, dict):
        raise DataConfigError(f"data.yaml {str(yaml_path)!r} must hold a mapping with keys "
                              f"{', '.join(REQUIRED_KEYS)}; found {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if data.get(key) in (None, "", [], {})]
    if missing:
        raise DataConfigError(f"data.yaml {str(yaml_path)!r} lacks {', '.join(missing)}; "
                              f"required keys: {', '.join(REQUIRED_KEYS)} (optional: path, test, nc)")
    root = _resolve_root(data.get("path"), yaml_path)
    names = _parse_names(data["names"], data.get("nc"), yaml_path)
    splits = {}
    for split in SPLIT_KEYS:
        if data.get(split) in (None, "", []):
            continue  # only test may get here: train and val were checked above
        try:
            splits[split] = _split_images(split, data[split], root, yaml_path)
        except DataConfigError as error:
            if split in REQUIRED_KEYS:
                raise
            # An exported dataset often names a test split it did not include; training needs none.
            log.warning("%s; the %s split is left out", error, split)
    return DatasetConfig(root=root, splits=splits, names=names, yaml_path=yaml_path)


def _resolve_root(path_value: Any, yaml_path: Path) -> Path:
    if path_value in (None, ""):
        return yaml_path.parent
    if not isinstance(path_value, (str, os.PathLike)):
        raise DataConfigError(f"data.yaml {str(yaml_path)!r}: 'path' must be a folder path; "
                              f"found {path_value!r}")
    root = Path(path_value).expanduser()
    if root.is_absolute():
        return root
    beside = Path(os.path.normpath(yaml_path.parent / root))
    from_here = Path(os.path.normpath(Path.cwd() / root))
    if not beside.is_dir() and from_here.is_dir():
        # ultralytics' own yamls (their data/coco128.yaml: `path: ../datasets/coco128`) mean their checkout,
        # where their commands run: a user running ours from there means the same folder.
        log.info("data.yaml 'path' %r is not a folder beside %s; using %s, from the current folder (as "
                 "ultralytics resolves it from its checkout)", str(path_value), yaml_path.name, from_here)
        return from_here
    return beside


def _parse_names(names_value: Any, nc_value: Any, yaml_path: Path) -> list[str]:
    where = f"data.yaml {str(yaml_path)!r}"
    if isinstance(names_value, Mapping):
        ids = list(names_value)
        if not all(isinstance(key, int) and not isinstance(key, bool) for key in ids):
            raise DataConfigError(f"{where}: 'names' dict keys must be integer class ids; found {ids!r}")
        if sorted(ids) != list(range(len(ids))):
            raise DataConfigError(f"{where}: 'names' dict ids must be contiguous 0..{len(ids) - 1}; "
                                  f"found {sorted(ids)!r}")
        names = [str(names_value[index]) for index in range(len(ids))]
    elif isinstance(names_value, list):
        names = [str(name) for name in names_value]
    else:
        raise DataConfigError(f"{where}: 'names' must be a dict {{id: name}} or a list of names; "
                              f"found {type(names_value).__name__} {names_value!r}")
    if nc_value is not None:
        if not isinstance(nc_value, int) or isinstance(nc_value, bool) or nc_value != len(names):
            raise DataConfigError(f"{where}: 'nc' must equal the number of names ({len(names)}); "
                                  f"found nc={nc_value!r}. Remove 'nc' or fix 'names'.")
    return names


def _split_images(split: str, value: Any, root: Path, yaml_path: Path) -> list[Path]:
    entries = value if isinstance(value, list) else [value]
    images: set[Path] = set()
    for entry in entries:
        if not isinstance(entry, (str, os.PathLike)):
            raise DataConfigError(f"data.yaml {str(yaml_path)!r}: split '{split}' entries must be folder "
                                  f"or .txt paths; found {entry!r}")
        source = _resolve_entry(str(entry), root)
        if source.is_dir():
            images.update(images_in_folder(source))
        elif source.is_file() and source.suffix.lower() == ".txt":
            images.update(images_in_list(source, root))
        else:
            kind = "is not a folder or a .txt list" if source.exists() else "does not exist"
            raise DataConfigError(f"data.yaml {str(yaml_path)!r}: split '{split}' entry {str(entry)!r} "
                                  f"(resolved to {str(source)!r}) {kind}; expected a folder of images, "
                                  f"a .txt file listing images, or a list of those")
    if not images:
        raise DataConfigError(f"data.yaml {str(yaml_path)!r}: split '{split}' ({value!r}) holds no images "
                              f"with suffix {', '.join(sorted(IMAGE_SUFFIXES))}")
    return sorted(images)


def _resolve_entry(entry: str, root: Path) -> Path:
    source = Path(entry).expanduser()
    if source.is_absolute():
        return source
    resolved = Path(os.path.normpath(root / source))
    if not resolved.exists() and entry.startswith("../"):
        # ultralytics' check_dataset does the same retry; Roboflow's data.yaml relies on it.
        beside = Path(os.path.normpath(root / entry[3:]))
        if beside.exists():
            log.info("split entry %r does not exist under %s; using %s (as ultralytics does)", entry, root, beside)
            return beside
    return resolved


def images_in_folder(folder: Path) -> Iterable[Path]:
    """Every file below ``folder`` with an image suffix (also `predict`'s folder sources).

    Hidden files are left out, as ultralytics' glob leaves them: macOS writes a ``._name.jpg``
    resource fork beside every image copied to a foreign filesystem, and none of them decodes.
    """
    # os.walk rather than Path.rglob: a large dataset folder lists several times faster.
    for directory, _, files in os.walk(folder, followlinks=True):
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                yield Path(directory, name)


def images_in_list(list_path: Path, root: Path) -> list[Path]:
    """The image entries of a ``.txt`` list (also `predict`'s list sources, with ``root`` the list's folder)."""
    # ultralytics' convention: an entry starting with './' is relative to the list's folder.
    # Other relative entries are taken relative to the dataset root (ultralytics uses the working
    # directory, which would make a dataset depend on where training was started).
    images, skipped = [], 0
    for line in list_path.read_text(encoding="utf-8-sig").splitlines():  # a BOM would hide the first entry
        entry = line.strip()
        if not entry:
            continue
        if os.path.splitext(entry)[1].lower() not in IMAGE_SUFFIXES:
            skipped += 1
            continue
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = (list_path.parent if entry.startswith("./") else root) / path
        images.append(Path(os.path.normpath(path)))
    if skipped:
        log.warning("%s: skipped %d entries without an image suffix (%s)", list_path, skipped,
                    ", ".join(sorted(IMAGE_SUFFIXES)))
    return images
