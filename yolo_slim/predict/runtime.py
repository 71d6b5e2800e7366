"""One interface over the files a user predicts with: yolo_slim ``.ckpt``, ultralytics ``.pt``, ``.torchscript``
and ``.onnx`` (onnxruntime), each taking (B, 3, H, W) float images in [0, 1] and returning YOLOv5's decoded
predictions (B, N, 5 + nc)."""

from __future__ import annotations

import ast
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from yolo_slim.models import fuse_batchnorm, load_yolov5


@dataclass
class Detector:
    """A model ready for inference.

    Attributes:
        path: The file it was loaded from.
        kind: ``torch`` (a ``.ckpt`` or ``.pt``, BatchNorm folded), ``torchscript`` or ``onnx``.
        names: Class names.
        stride: Largest stride; input sizes must be multiples of it.
        imgsz: The input size a traced or ONNX file was exported at; None when any multiple of ``stride`` runs.
        run: The forward: (B, 3, H, W) float32 in [0, 1] -> (B, N, 5 + nc) decoded, on the CPU.
    """

    path: Path
    kind: str
    names: list[str]
    stride: int
    imgsz: int | None
    run: Callable[[torch.Tensor], torch.Tensor]


def load_detector(path: str | Path) -> Detector:
    """Load ``path`` by its suffix: ``.onnx``, ``.torchscript``, else a checkpoint through the safe loader.

    Raises:
        FileNotFoundError: no such file.
        CheckpointFormatError, UnsafeCheckpointError: a checkpoint that is no YOLOv5 or names code outside
            the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    if path.suffix == ".onnx":
        return _onnx(path)
    if path.suffix == ".torchscript":
        return _torchscript(path)
    model = fuse_batchnorm(load_yolov5(path))

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    return Detector(path, "torch", list(model.names), int(model.stride.max()), None, run)


def _torchscript(path: Path) -> Detector:
    extra = {"config.txt": ""}  # written by export format=torchscript, as ultralytics' export.py writes it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; the file format is not
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    config = json.loads(extra["config.txt"] or "{}")
    names = _names(config.get("names"))
    shape = config.get("shape")

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            output = module(images)
        return output[0] if isinstance(output, (tuple, list)) else output  # ultralytics' files return a tuple

    return Detector(path, "torchscript", names, int(config.get("stride", 32)), int(shape[-1]) if shape else None, run)


def _onnx(path: Path) -> Detector:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map  # written by export format=onnx (and by ultralytics)
    names = _names(metadata.get("names"))
    size = session.get_inputs()[0].shape[-1]
    input_name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: images.numpy()})[0])

    return Detector(path, "onnx", names, int(metadata.get("stride", 32)), size if isinstance(size, int) else None, run)


def _names(stored: object) -> list[str]:
    """Class names from a file's metadata: a list, a {index: name} dict, or either written as text (JSON by
    yolo_slim, Python's repr by ultralytics); [] when absent (the predictor then numbers the classes)."""
    if isinstance(stored, str):
        try:
            stored = ast.literal_eval(stored)  # reads both JSON objects and Python dict reprs; never runs code
        except (ValueError, SyntaxError):
            return []
    if isinstance(stored, dict):
        return [str(stored[k]) for k in sorted(stored, key=int)]
    return [str(n) for n in stored] if isinstance(stored, (list, tuple)) else []
