"""``python -m yolo_slim predict ckpt=PATH source=IMAGES [compare=OTHER]``: detections on the user's images.

Writes into the run folder: one annotated picture per image, ``labels/<image>.txt`` (YOLO rows with the
score: ``class cx cy w h score``, normalised, as ultralytics' ``detect.py --save-txt --save-conf``),
``predictions.json`` (COCO results: ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in pixels,
``score``), ``compare/`` side-by-side pictures with ``compare=``, and ``summary.json`` (counts, skipped
files, per-image times, and ``sources``: the file of each name used, since images in different folders
may share a name and are then written as ``name_2``, ``name_3`` ...). Images that cannot be decoded are
skipped and reported.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from collections.abc import Container
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torchvision.io import write_jpeg, write_png
from tqdm import tqdm

from yolo_slim.cli.errors import users_input
from yolo_slim.cli.settings import read_detector, require_bool, require_imgsz, require_number, require_positive_int
from yolo_slim.data.dataset import decode_rgb
from yolo_slim.files import write_text_atomically
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.models.spec import DEFAULT_IMGSZ
from yolo_slim.predict import Detector, draw_detections, image_sources, predict_image, side_by_side

log = logging.getLogger(__name__)


def run(config: DictConfig) -> None:
    with users_input():
        paths = image_sources(str(config.source))
        asked = None if config.imgsz is None else require_imgsz(config.imgsz, "imgsz")
        nms = NMSConfig(conf_threshold=require_number(config.conf, "conf", minimum=0, maximum=1),
                        iou_threshold=require_number(config.iou, "iou", minimum=0, maximum=1),
                        max_det=require_positive_int(config.max_det, "max_det"), multi_label=False)
        save_images = require_bool(config.save_images, "save_images")
        if config.compare and _same_file(config.ckpt, config.compare):
            raise ValueError(f"compare={str(config.compare)!r} is the file ckpt= already names; give compare= another "
                             f"model (e.g. the dense one) to set beside it")
        tried = asked or DEFAULT_IMGSZ  # the size an export that does not say its own is tried at
        detectors = [read_detector(config.ckpt, "ckpt", tried)] + ([read_detector(config.compare, "compare", tried)]
                                                           if config.compare else [])
        # imgsz=null: the size ckpt= was trained at, when it says (a yolo_slim .ckpt does), as val and prune do.
        imgsz = asked or detectors[0].trained_imgsz or DEFAULT_IMGSZ
        sizes = [_size(detector, imgsz, asked is not None) for detector in detectors]
        if len(detectors) > 1:
            _warn_if_other_classes(*detectors)
    labels = _labels([detector.path for detector in detectors])
    folder = Path(HydraConfig.get().runtime.output_dir)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    if len(detectors) > 1:
        (folder / "compare").mkdir(exist_ok=True)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    times = torch.zeros(len(detectors), 3)
    sources: dict[str, str] = {}  # the name each image is written under -> its file (names clash across folders)
    for path in tqdm(paths, desc="predict", unit="image"):
        try:
            image = decode_rgb(str(path))
        except Exception as error:  # noqa: BLE001 - any decoder failure means the same: skip and report it
            skipped[str(path)] = f"{type(error).__name__}: {error}".splitlines()[0]
            continue
        name = _unique(path.stem, sources)
        sources[name] = str(path)
        predictions = [predict_image(d, image, size, nms) for d, size in zip(detectors, sizes)]
        for row, prediction in enumerate(predictions):
            times[row] += torch.tensor(prediction.milliseconds)
        main = predictions[0]
        _write_labels(folder / "labels" / f"{name}.txt", main)
        results += _coco_rows(name, main)
        if save_images or len(detectors) > 1:
            pictures = [draw_detections(image, p.detections, _class_names(d, p.detections))
                        for d, p in zip(detectors, predictions)]
            if save_images:
                _write_picture(pictures[0], folder / f"{name}{_picture_suffix(path)}")
            if len(detectors) > 1:
                titles = [f"{label}: {len(p.detections)} boxes, {p.milliseconds[1]:.1f} ms"
                          for label, p in zip(labels, predictions)]
                side_by_side(pictures[1], pictures[0], titles[1], titles[0]).save(folder / "compare" / f"{name}.jpg")
    write_text_atomically(folder / "predictions.json", json.dumps(results))
    done = len(paths) - len(skipped)
    speeds = {str(d.path): dict(zip(("preprocess_ms", "inference_ms", "nms_ms"), (times[i] / max(done, 1)).tolist()))
              for i, d in enumerate(detectors)}
    summary = {"images": done, "skipped": skipped, "detections": len(results), "speed_per_image": speeds,
               "imgsz": list(sizes[0]),  # [height, width]
               "sources": sources}
    write_text_atomically(folder / "summary.json", json.dumps(summary, indent=2))
    for detector, label, (height, width) in zip(detectors, labels, sizes):
        speed = speeds[str(detector.path)]
        print(f"{label} ({detector.kind}): {speed['preprocess_ms']:.1f} ms pre-process, "
              f"{speed['inference_ms']:.1f} ms inference, {speed['nms_ms']:.1f} ms NMS per image at "
              f"1x3x{height}x{width}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): " + "; ".join(f"{p} ({why})" for p, why in skipped.items()))
    renamed = [name for name, source in sources.items() if name != Path(source).stem]
    if renamed:
        print(f"{len(renamed)} image(s) share a name with another in another folder and are written as "
              f"{', '.join(renamed[:3])}{' ...' if len(renamed) > 3 else ''}: summary.json's \"sources\" maps each "
              f"name to its file")
    print(f"{done} images, {len(results)} detections -> {folder}")


def _warn_if_other_classes(main: Detector, other: Detector) -> None:
    """compare= is meant for two versions of one detector (dense and slimmed); other class lists make its
    side-by-side pictures compare two tasks, which is worth a word but not a refusal (names may be renamed)."""
    if main.names and other.names and main.names != other.names:
        differ = next((i for i, pair in enumerate(zip(main.names, other.names)) if pair[0] != pair[1]),
                      min(len(main.names), len(other.names)))
        log.warning("ckpt= and compare= detect other classes (%d and %d classes; class %d is %s in ckpt= and %s in "
                    "compare=): their pictures are not a comparison of one task", len(main.names), len(other.names),
                    differ, _class_at(main.names, differ), _class_at(other.names, differ))


def _class_at(names: list[str], index: int) -> str:
    return repr(names[index]) if index < len(names) else "missing"


def _size(detector: Detector, imgsz: int, asked: bool) -> tuple[int, int]:
    """The (height, width) ``detector`` runs at: the file's own when it was exported at a fixed size."""
    if detector.imgsz is not None:
        if asked and detector.imgsz != (imgsz, imgsz):
            log.warning("%s was exported at %dx%d (height x width): it runs at that size, not imgsz=%d",
                        detector.path, *detector.imgsz, imgsz)
        return detector.imgsz
    if imgsz % detector.stride:
        raise ValueError(f"imgsz must be a multiple of {detector.path.name}'s largest stride {detector.stride}, "
                         f"found {imgsz}")
    return imgsz, imgsz


def _same_file(first: Any, second: Any) -> bool:
    try:
        return os.path.samefile(str(first), str(second))
    except OSError:  # one of them is missing: loading it says so
        return False


def _labels(paths: list[Path]) -> list[str]:
    """What each model is called in titles and the printout: its file name, or as many trailing folders as tell
    two models apart (``dense/best.ckpt`` and ``pruned/best.ckpt``)."""
    absolute = [path.absolute() for path in paths]  # not resolve(): a link keeps the name the user gave
    for depth in range(1, max(len(path.parts) for path in absolute) + 1):
        labels = ["/".join(path.parts[-depth:]) for path in absolute]
        if len(set(labels)) == len(labels):
            return labels
    return [str(path) for path in absolute]


def _class_names(detector: Detector, detections: torch.Tensor) -> list[str]:
    if detector.names:
        return detector.names
    count = int(detections[:, 5].max()) + 1 if len(detections) else 0
    return [str(i) for i in range(count)]


def _unique(stem: str, used: Container[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3`` ... when images in different folders share a name."""
    name, number = stem, 1
    while name in used:
        number += 1
        name = f"{stem}_{number}"
    return name


def _write_labels(path: Path, prediction: Any) -> None:
    rows = []
    for x1, y1, x2, y2, score, label in prediction.detections.tolist():
        cx, cy = (x1 + x2) / 2 / prediction.width, (y1 + y2) / 2 / prediction.height
        w, h = (x2 - x1) / prediction.width, (y2 - y1) / prediction.height
        rows.append(f"{int(label)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f} {score:.5f}\n")
    path.write_text("".join(rows))


def _coco_rows(name: str, prediction: Any) -> list[dict[str, Any]]:
    image_id: int | str = int(name) if name.isdigit() else name  # as ultralytics' val.py --save-json
    return [{"image_id": image_id, "category_id": int(label), "bbox": [round(v, 3) for v in (x1, y1, x2 - x1, y2 - y1)],
             "score": round(score, 5)} for x1, y1, x2, y2, score, label in prediction.detections.tolist()]


def _picture_suffix(path: Path) -> str:
    """The source's own suffix, case kept (``X.JPG`` is drawn as ``X.JPG``, as ultralytics' detect.py does) for
    the two formats torchvision writes; any other format (bmp, webp, tif ...) is drawn as png."""
    return path.suffix if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"


def _write_picture(picture: torch.Tensor, path: Path) -> None:
    (write_png if path.suffix.lower() == ".png" else write_jpeg)(picture, str(path))
