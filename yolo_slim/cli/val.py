"""``python -m yolo_slim val ckpt=PATH [data.path=...]``: mAP of a trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from yolo_slim.cli.settings import plain, require_imgsz, require_positive_int
from yolo_slim.data import YOLODataModule
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.models.postprocess import NMSConfig


def run(config: DictConfig) -> None:
    checkpoint = Path(str(config.ckpt))
    if not checkpoint.is_file():
        raise ValueError(f"ckpt={str(checkpoint)!r} does not exist; give a checkpoint written by `train` "
                         f"(e.g. outputs/train/<run>/checkpoints/best.ckpt)")
    module = YOLOv5Module.load_from_checkpoint(checkpoint, map_location="cpu", nms=NMSConfig(**plain(config.nms)))
    data = config.data.path if config.data.path is not None else module.hparams.data
    imgsz = require_imgsz(config.data.imgsz if config.data.imgsz is not None else module.hparams.imgsz, "data.imgsz")
    datamodule = YOLODataModule(data=data, imgsz=imgsz,
                                batch_size=require_positive_int(config.data.batch_size, "data.batch_size"),
                                workers=require_positive_int(config.data.workers, "data.workers", minimum=0),
                                augment=None, cache_dir=config.data.cache_dir)
    if len(datamodule.names) != len(module.names):
        raise ValueError(f"data {data} has {len(datamodule.names)} classes but the checkpoint's model has "
                         f"{len(module.names)}")
    trainer = L.Trainer(**plain(config.trainer), logger=False, enable_checkpointing=False)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    print(json.dumps({"checkpoint": str(checkpoint), "data": str(data), "imgsz": imgsz,
                      "map50": float(results["val/map50"]), "map": float(results["val/map"])}, indent=2))
