"""``python -m yolo_slim val ckpt=PATH [data.path=...]``: mAP of a trained checkpoint, or of a file exported from
one (``.onnx``, ``.torchscript``), as ultralytics' ``val.py --weights`` takes either."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from yolo_slim.cli.errors import users_input
from yolo_slim.cli.settings import (checkpoint_datamodule, evaluation_datamodule, load_checkpoint_module,
                                    make_trainer, plain, read_detector, require_imgsz, trainer_arguments)
from yolo_slim.data import YOLODataModule
from yolo_slim.lit.evaluation import ExportedDetectorValidation
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.models.spec import DEFAULT_IMGSZ

log = logging.getLogger(__name__)
EXPORTS = (".onnx", ".torchscript")  # read by yolo_slim.predict's runtime, as `predict` reads them


def run(config: DictConfig) -> None:
    with users_input():
        checkpoint = Path(str(config.ckpt))
        nms = NMSConfig(**plain(config.nms))
        trainer_args = trainer_arguments(config.trainer)
        if checkpoint.suffix.lower() in EXPORTS:
            module, datamodule, imgsz = _exported(checkpoint, config.data, nms)
            # The file runs where `predict` runs it: onnxruntime's CPU provider, TorchScript on the CPU.
            trainer_args.update(accelerator="cpu", devices=1, precision="32-true")
        else:
            module = load_checkpoint_module(checkpoint, nms)
            datamodule, imgsz = checkpoint_datamodule(config.data, module, augment=None)
        data = datamodule.data_yaml
        trainer = make_trainer(trainer_args, logger=False, enable_checkpointing=False)
    # stdout carries the result alone (`val ... > result.json`): Lightning's progress bar, which tqdm writes to
    # whatever sys.stdout is when the bar is made, goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    if trainer.is_global_zero:  # on several devices every rank has the (synchronised) result; one prints it
        print(json.dumps({"checkpoint": str(checkpoint), "data": str(data), "imgsz": imgsz,
                          "map50": float(results["val/map50"]), "map": float(results["val/map"])}, indent=2))


def _exported(path: Path, data_config: DictConfig,
              nms: NMSConfig) -> tuple[L.LightningModule, YOLODataModule, int]:
    """An exported file's validation module and data. It carries no data location, and it runs at the square
    size it was exported at (validation letterboxes every image to ``data.imgsz`` squared)."""
    asked = None if data_config.imgsz is None else require_imgsz(data_config.imgsz, "data.imgsz")
    detector = read_detector(path, "ckpt", asked or DEFAULT_IMGSZ)  # as predict reads it
    imgsz = DEFAULT_IMGSZ
    if detector.imgsz is not None:
        height, width = detector.imgsz
        if height != width:
            raise ValueError(f"ckpt={str(path)!r} was exported at {height}x{width}; val letterboxes images to a square "
                             f"(data.imgsz): export it at one size (export imgsz={max(height, width)})")
        if asked is not None and asked != height:
            raise ValueError(f"data.imgsz={asked}, but ckpt={str(path)!r} runs only at the size it was exported at, "
                             f"{height}: leave data.imgsz out, or export it again at imgsz={asked}")
        imgsz = height
    datamodule, imgsz = evaluation_datamodule(data_config, None, data=None, imgsz=imgsz, stride=detector.stride,
                                              names=detector.names, source="exported file")
    log.info("validating %s (%s) at %d", path, detector.kind, imgsz)
    return ExportedDetectorValidation(detector.run, nms), datamodule, imgsz
