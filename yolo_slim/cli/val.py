"""``python -m yolo_slim val ckpt=PATH [data.path=...]``: mAP of a trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from yolo_slim.cli.errors import users_input
from yolo_slim.cli.settings import (checkpoint_datamodule, load_checkpoint_module, make_trainer, plain,
                                    trainer_arguments)
from yolo_slim.models.postprocess import NMSConfig


def run(config: DictConfig) -> None:
    with users_input():
        checkpoint = Path(str(config.ckpt))
        module = load_checkpoint_module(checkpoint, NMSConfig(**plain(config.nms)))
        datamodule, imgsz = checkpoint_datamodule(config.data, module, augment=None)
        data = datamodule.data_yaml
        trainer = make_trainer(trainer_arguments(config.trainer), logger=False, enable_checkpointing=False)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    if trainer.is_global_zero:  # on several devices every rank has the (synchronised) result; one prints it
        print(json.dumps({"checkpoint": str(checkpoint), "data": str(data), "imgsz": imgsz,
                          "map50": float(results["val/map50"]), "map": float(results["val/map"])}, indent=2))
