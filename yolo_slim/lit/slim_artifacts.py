"""What SlimCallback and the ``prune`` command leave for a person: charts in the run folder and in TensorBoard,
and the separation figures of every epoch as a CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch

from yolo_slim.files import write_atomically
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

    A resumed run appends to the same file, after :func:`drop_separation_rows_from` took out the rows of the
    epochs it runs again.
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


def drop_separation_rows_from(folder: Path, epoch: int) -> None:
    """Remove the rows of ``epoch`` and later from ``separation.csv``, for a fit resumed at ``epoch``.

    A run killed after an epoch's row was written but before that epoch's checkpoint was saved runs the
    epoch again, and would otherwise leave two rows for it. Rewritten atomically: a kill now leaves the old file.
    """
    path = Path(folder) / SEPARATION_FILE
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    kept = [row for row in rows if _epoch_of(row) < epoch]
    if fields is None or len(kept) == len(rows):
        return

    def write(file: Any) -> None:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)

    write_atomically(path, write)


def _epoch_of(row: dict[str, str]) -> float:
    try:
        return float(row.get("epoch") or "nan")
    except ValueError:
        return float("nan")  # a row cut short by a kill: not below any epoch, so dropped


PREDICTIONS_FILE = "predictions.png"


class PredictionPictures:
    """``predictions.png``: a few validation images with the dense network's detections (taken just before
    the first prune) beside the final network's (at the end), in the run folder and TensorBoard."""

    def __init__(self, count: int = 4) -> None:
        self.count = count
        self.images: torch.Tensor | None = None  # (K, 3, S, S) uint8, letterboxed as validation sees them
        self.dense: list[torch.Tensor] = []

    def capture_dense(self, trainer: L.Trainer | None, network: YOLOv5, datamodule: Any = None) -> None:
        from yolo_slim.predict import detect_batch

        self.images = _first_images(datamodule if datamodule is not None else getattr(trainer, "datamodule", None),
                                    self.count)
        if self.images is not None:
            self.dense = detect_batch(network, self.images)

    def state(self) -> list[torch.Tensor]:
        """The dense network's detections, for the checkpoint: a run resumed after its prune draws the
        same picture (its images are the first validation batch again)."""
        return [detections.cpu() for detections in self.dense]

    def restore(self, dense: list[torch.Tensor], datamodule: Any = None) -> None:
        """Take back :meth:`state`; with ``datamodule``, its first validation images too (else :meth:`write`
        reads them from its trainer's datamodule)."""
        self.dense = list(dense)
        if datamodule is not None:
            self.images = _first_images(datamodule, self.count)

    def write(self, folder: Path, network: YOLOv5, trainer: L.Trainer | None = None,
              final_title: str = "final") -> Path | None:
        from yolo_slim.predict import comparison_sheet, detect_batch

        if self.images is None and self.dense and trainer is not None:  # resumed after the prune
            self.images = _first_images(getattr(trainer, "datamodule", None), self.count)
        if self.images is None or len(self.dense) != len(self.images):
            return None
        final = detect_batch(network, self.images)
        path = Path(folder) / PREDICTIONS_FILE
        comparison_sheet(self.images, self.dense, final, list(network.names), "dense (before the prune)",
                         final_title).save(path)
        if trainer is not None:
            log_images(trainer, {"slim/predictions": path}, trainer.global_step)
        return path


def _first_images(source: Any, count: int) -> torch.Tensor | None:
    """The first ``count`` validation images, (K, 3, S, S) uint8 letterboxed as validation sees them."""
    if source is None or not hasattr(source, "val_dataloader"):
        return None  # a fit without a datamodule: no validation images to draw
    # A fresh loader's workers draw their seed from torch's global generator: fork it, so that
    # drawing this picture leaves the rest of the run exactly as it would have been without it.
    with torch.random.fork_rng(devices=[]):
        batch = next(iter(source.val_dataloader()), None)
    images = batch.get("images") if isinstance(batch, dict) else None
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        return None  # not YOLODataModule's batches (B, 3, S, S) uint8: nothing this can draw on
    return images[:count].cpu()
