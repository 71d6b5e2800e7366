"""``python -m yolo_slim export ckpt=PATH [imgsz=640] [opset=17] [output=null]``: ONNX file + parity check."""

from __future__ import annotations

import pickle
from pathlib import Path

from omegaconf import DictConfig

from yolo_slim.cli.settings import require_imgsz, require_positive_int
from yolo_slim.models import CheckpointFormatError, count_parameters, load_yolov5
from yolo_slim.models.export import check_onnx, export_onnx


def run(config: DictConfig) -> None:
    checkpoint = Path(str(config.ckpt))
    if not checkpoint.is_file():
        raise ValueError(f"ckpt={str(checkpoint)!r} does not exist; give a yolo_slim .ckpt (from `train` or "
                         f"`prune`) or an ultralytics .pt")
    imgsz = require_imgsz(config.imgsz, "imgsz")
    opset = require_positive_int(config.opset, "opset", minimum=11)
    output = checkpoint.with_suffix(".onnx") if config.output is None else Path(str(config.output))
    try:
        model = load_yolov5(checkpoint)
    except (CheckpointFormatError, pickle.UnpicklingError) as error:
        raise ValueError(f"ckpt={str(checkpoint)!r} is not a YOLOv5 checkpoint yolo_slim can read: {error}") from error
    export_onnx(model, output, imgsz=imgsz, opset=opset)
    difference = check_onnx(model, output, imgsz)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, {count_parameters(model):,} parameters, "
          f"{imgsz}x{imgsz}, opset {opset}, dynamic batch)")
    print(f"onnxruntime vs torch on 2 random images: max abs difference {difference:.2e}")
