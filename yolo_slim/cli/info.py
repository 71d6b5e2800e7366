"""``python -m yolo_slim info model=yolov5s [imgsz=640] [model.weights=PATH]``."""

from __future__ import annotations

from omegaconf import DictConfig

from yolo_slim.cli.errors import users_input
from yolo_slim.cli.settings import build_model, require_imgsz, require_stride_multiple
from yolo_slim.models.info import format_table, model_info


def run(config: DictConfig) -> None:
    with users_input():
        imgsz = require_imgsz(config.imgsz, "imgsz")
        model = build_model(config.model)
        require_stride_multiple(imgsz, model, "imgsz")  # 64 for the P6 layouts, 128 for P7
    print(format_table(model_info(model, imgsz)))
