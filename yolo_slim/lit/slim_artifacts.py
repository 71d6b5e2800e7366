"""What SlimCallback and the ``prune`` command leave for a person: charts in the run folder and in TensorBoard,
and the separation figures of every epoch as a CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L

from yolo_slim.models import YOLOv5
from yolo_slim.slim.report import producer_gammas

SEPARATION_FILE = "separation.csv"


def log_images(trainer: L.Trainer, pictures: dict[str, Path], step: int) -> None:
    """Send PNGs to every logger of ``trainer`` that takes images (TensorBoard's ``add_image``); others are skipped."""
    import numpy
    from PIL import Image

    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if not hasattr(experiment, "add_image"):
            continue
        for tag, path in pictures.items():
            with Image.open(path) as picture:
                pixels = numpy.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
            experiment.add_image(tag, pixels, step, dataformats="HWC")


def write_histogram(trainer: L.Trainer, network: YOLOv5, name: str, title: str) -> None:
    """``<name>.png`` in the run folder: |γ| of every producer; also logged as an image."""
    from yolo_slim.slim.plots import plot_gamma_histogram  # matplotlib: imported when used

    folder = Path(trainer.default_root_dir)
    folder.mkdir(parents=True, exist_ok=True)
    picture = plot_gamma_histogram(producer_gammas(network), folder / f"{name}.png", title=title)
    log_images(trainer, {f"slim/{name}": picture}, trainer.global_step)


def write_prune_charts(trainer: L.Trainer, before: YOLOv5, after: YOLOv5, imgsz: int, suffix: str,
                       title: str) -> None:
    """The per-layer table and the two charts of one prune, in the run folder and TensorBoard."""
    from yolo_slim.slim.plots import write_prune_artifacts

    pictures = write_prune_artifacts(Path(trainer.default_root_dir), before, after, imgsz, suffix,
                                     histogram_title=title)
    log_images(trainer, pictures, trainer.global_step)


def append_separation_row(folder: Path, row: dict[str, float | int]) -> Path:
    """Append one epoch's separation figures to ``separation.csv`` (header written with the first row).

    A resumed run appends to the same file; an epoch seen twice (resumed mid-epoch) appears twice,
    the later row being the one that counts.
    """
    path = Path(folder) / SEPARATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    header = None
    if path.exists():
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), None)
    # After the last prune there is no removal to measure: those columns stay empty.
    fields = header or list(row)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="", extrasaction="ignore")
        if header is None:
            writer.writeheader()
        writer.writerow(row)
    return path
