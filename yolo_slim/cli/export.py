"""``python -m yolo_slim export ckpt=PATH [format=onnx|ultralytics|torchscript] ...``: one deployable file, checked."""

from __future__ import annotations

import pickle
from pathlib import Path

from omegaconf import DictConfig

from yolo_slim.cli.errors import users_input
from yolo_slim.cli.settings import require_imgsz, require_positive_int, require_stride_multiple
from yolo_slim.models import CheckpointFormatError, count_parameters, load_yolov5
from yolo_slim.models.export import check_onnx, check_torchscript, export_onnx, export_torchscript
from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint

SUFFIXES = {"onnx": ".onnx", "ultralytics": ".pt", "torchscript": ".torchscript"}  # format -> default suffix


def run(config: DictConfig) -> None:
    with users_input():
        checkpoint = Path(str(config.ckpt))
        kind = str(config.format)
        if kind not in SUFFIXES:
            raise ValueError(f"format must be one of {', '.join(SUFFIXES)}, found {kind!r}")
        if not checkpoint.is_file():
            raise ValueError(f"ckpt={str(checkpoint)!r} does not exist; give a yolo_slim .ckpt (from `train` or "
                             f"`prune`) or an ultralytics .pt")
        if not isinstance(config.half, bool):
            raise ValueError(f"half must be true or false, found {config.half!r}")
        imgsz = require_imgsz(config.imgsz, "imgsz")
        opset = require_positive_int(config.opset, "opset", minimum=11)
        output = checkpoint.with_suffix(SUFFIXES[kind]) if config.output is None else Path(str(config.output))
        if output.resolve() == checkpoint.resolve():
            raise ValueError(f"output would overwrite ckpt={str(checkpoint)!r}; give output=OTHER_PATH")
        try:
            model = load_yolov5(checkpoint)
        except (CheckpointFormatError, pickle.UnpicklingError) as error:
            raise ValueError(f"ckpt={str(checkpoint)!r} is not a YOLOv5 checkpoint yolo_slim can read: "
                             f"{error}") from error
        require_stride_multiple(imgsz, model, "imgsz")  # 64 for the P6 layouts, 128 for P7
    size = f"{count_parameters(model):,} parameters"
    if kind == "onnx":
        export_onnx(model, output, imgsz=imgsz, opset=opset)
        difference = check_onnx(model, output, imgsz)
        print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, {size}, {imgsz}x{imgsz}, opset {opset}, "
              f"dynamic batch)")
        print(f"onnxruntime vs torch on 2 random images: max abs difference {difference:.2e}")
    elif kind == "torchscript":
        export_torchscript(model, output, imgsz=imgsz)
        difference = check_torchscript(model, output, imgsz)
        print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, {size}, {imgsz}x{imgsz}, BatchNorm folded, "
              f"free batch axis)")
        print(f"TorchScript vs torch on 2 random images: max abs difference {difference:.2e}")
    else:
        write_ultralytics_checkpoint(model, output, half=config.half)
        reread = load_yolov5(output)  # the file must read back through the safe loader, to its own spec
        if reread.spec != model.spec:
            raise RuntimeError(f"{output} reads back as another architecture; please report this")
        print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, {size}, {'fp16' if config.half else 'fp32'}, "
              f"ultralytics release layout: their detect.py / val.py / export.py --weights {output.name})")
