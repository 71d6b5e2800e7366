"""``python -m yolo_slim info [model=yolov5n] [imgsz=640] [model.weights=PATH]``, or ``info ckpt=PATH``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from yolo_slim.cli.errors import users_input
from yolo_slim.cli.settings import build_model, not_a_file, require_imgsz, require_stride_multiple, typed_overrides
from yolo_slim.models import load_yolov5
from yolo_slim.models.info import format_table, model_info


def run(config: DictConfig) -> None:
    with users_input():
        imgsz = require_imgsz(config.imgsz, "imgsz")
        if config.ckpt is None:
            model = build_model(config.model)
        else:  # the ckpt= every other command takes
            checkpoint = Path(str(config.ckpt))
            if config.model.weights is not None:
                raise ValueError(f"give ckpt= or model.weights=, not both (found ckpt={str(checkpoint)!r} and "
                                 f"model.weights={config.model.weights!r})")
            # The model group always has a value (its default): only one typed on the command line is refused.
            typed = typed_overrides("model")
            if typed:
                raise ValueError(f"give ckpt= or model=, not both (found ckpt={str(checkpoint)!r} and {typed[0]}): "
                                 f"the checkpoint holds its own architecture")
            if not checkpoint.is_file():
                raise ValueError(f"ckpt={str(checkpoint)!r} {not_a_file(checkpoint)}; give a yolo_slim .ckpt or an "
                                 f"ultralytics .pt")
            model = load_yolov5(checkpoint)
        require_stride_multiple(imgsz, model, "imgsz")  # 64 for the P6 layouts, 128 for P7
    print(format_table(model_info(model, imgsz)))
