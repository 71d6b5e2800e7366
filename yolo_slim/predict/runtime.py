"""One interface over the files a user predicts with: yolo_slim ``.ckpt``, ultralytics ``.pt``, ``.torchscript``
and ``.onnx`` (onnxruntime), each taking (B, 3, H, W) float images in [0, 1] and returning YOLOv5's decoded
predictions (B, N, 5 + nc) in float32.

An exported file is checked when it is loaded, by one forward on a blank image: it must take 3-channel
images and give first a tensor laid out as YOLOv5's (objectness and class scores in [0, 1], one column
per class name), followed by nothing or Detect's raw maps. Exports of other layouts (YOLOv8 / YOLO11's
(B, 4 + nc, N), segmentation models' two outputs) would otherwise run and give nonsense boxes.
"""

from __future__ import annotations

import ast
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from yolo_slim.models import CheckpointFormatError, fuse_batchnorm
from yolo_slim.models.checkpoint import network_from_checkpoint, read_checkpoint

SUPPORTED = "a yolo_slim .ckpt, an ultralytics YOLOv5 .pt, or a .torchscript / .onnx exported from either"


@dataclass
class Detector:
    """A model ready for inference.

    Attributes:
        path: The file it was loaded from.
        kind: ``torch`` (a ``.ckpt`` or ``.pt``, BatchNorm folded), ``torchscript`` or ``onnx``.
        names: Class names.
        stride: Largest stride; input sizes must be multiples of it.
        imgsz: ``(height, width)`` a traced or ONNX file was exported at; None when any multiple of ``stride`` runs.
        run: The forward: (B, 3, H, W) float32 in [0, 1] -> (B, N, 5 + nc) decoded float32, on the CPU (a file
            exported in fp16 gets its input cast to fp16).
        trained_imgsz: The size a checkpoint says it was trained at (a yolo_slim ``.ckpt``'s ``imgsz``, an
            ultralytics training ``.pt``'s ``opt.imgsz``); None when it does not say.
    """

    path: Path
    kind: str
    names: list[str]
    stride: int
    imgsz: tuple[int, int] | None
    run: Callable[[torch.Tensor], torch.Tensor]
    trained_imgsz: int | None = None


def load_detector(path: str | Path, imgsz: int = 640) -> Detector:
    """Load ``path`` by its suffix (any case): ``.onnx``, ``.torchscript``, else a checkpoint through the safe loader.

    ``imgsz`` is the side an exported file is tried at when it does not say its own size (a TorchScript file
    without ``config.txt``, an ONNX file with free height and width).

    Raises:
        FileNotFoundError: no such file.
        CheckpointFormatError: a file that cannot be read, is no YOLOv5 detector, or takes other than 3 channels;
            the message names the file.
        UnsafeCheckpointError: a checkpoint that names code outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx(path, imgsz)
    if suffix == ".torchscript":
        return _torchscript(path, imgsz)
    content = read_checkpoint(path)
    model = fuse_batchnorm(network_from_checkpoint(content, path))
    _check_channels(path, model.spec.in_channels)

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    return Detector(path, "torch", list(model.names), int(model.stride.max()), None, run, _trained_imgsz(content))


def _trained_imgsz(content: object) -> int | None:
    """The training size a checkpoint records: Lightning's ``hyper_parameters`` (yolo_slim's ``imgsz``), or the
    ``opt`` of an ultralytics training checkpoint (``imgsz``, ``img_size`` before v5)."""
    if not isinstance(content, Mapping):
        return None
    for section, key in (("hyper_parameters", "imgsz"), ("opt", "imgsz"), ("opt", "img_size")):
        stored = content.get(section)
        value = stored.get(key) if isinstance(stored, Mapping) else getattr(stored, key, None)
        if isinstance(value, (list, tuple)) and value:  # ultralytics before v6: [train, test]
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _torchscript(path: Path, imgsz: int) -> Detector:
    extra = {"config.txt": ""}  # written by export format=torchscript, as ultralytics' export.py writes it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; the file format is not
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        config = json.loads(extra["config.txt"] or "{}")
    except (RuntimeError, ValueError) as error:  # torch's message is many lines of C++ context: keep the first
        raise CheckpointFormatError(f"{path} is not a TorchScript file torch can read "
                                    f"({_first_line(error)}); expected {SUPPORTED}") from None
    shape = config.get("shape") if isinstance(config, dict) else None
    if not isinstance(config, dict) or (shape is not None and not _is_image_shape(shape)):
        raise CheckpointFormatError(f"{path}: its config.txt is not the {{shape, stride, names}} that export writes")
    if shape is not None:
        _check_channels(path, shape[1])
    # The first floating tensor tells the precision: ultralytics' `export.py --half` writes fp16 weights.
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    dtype = tensors[0].dtype if tensors else torch.float32

    def forward(images: torch.Tensor) -> Any:
        with torch.inference_mode():
            return module(images.to(dtype))

    detector = Detector(path, "torchscript", _names(config.get("names")), _stride(path, config.get("stride")),
                        (int(shape[2]), int(shape[3])) if shape else None, _predictions_of(forward))
    _check_layout(detector, forward, detector.imgsz or (imgsz, imgsz))
    return detector


def _onnx(path: Path, imgsz: int) -> Detector:
    import numpy as np
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's errors (InvalidProtobuf, Fail ...) share no other base
        raise CheckpointFormatError(f"{path} is not an ONNX file onnxruntime can load "
                                    f"({_first_line(error)}); expected {SUPPORTED}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        found = ", ".join(f"{i.name} {i.shape}" for i in inputs)
        raise CheckpointFormatError(f"{path} takes {found}; expected one image input (batch, 3, height, width)")
    _, channels, height, width = inputs[0].shape  # symbolic axes come back as strings
    if isinstance(channels, int):
        _check_channels(path, channels)
    precisions = {"tensor(float)": np.float32, "tensor(float16)": np.float16}  # `export.py --half` writes fp16
    if inputs[0].type not in precisions:
        raise CheckpointFormatError(f"{path} takes {inputs[0].type} images; expected tensor(float) or tensor(float16)")
    precision, input_name = precisions[inputs[0].type], inputs[0].name
    metadata = session.get_modelmeta().custom_metadata_map  # written by export format=onnx (and by ultralytics)

    def forward(images: torch.Tensor) -> list[Any]:
        return session.run(None, {input_name: images.numpy().astype(precision, copy=False)})

    # A side the file fixes is kept; a file that fixes only one gets imgsz for the other, and runs at that.
    size = (height if isinstance(height, int) else imgsz, width if isinstance(width, int) else imgsz)
    fixed = isinstance(height, int) or isinstance(width, int)
    detector = Detector(path, "onnx", _names(metadata.get("names")), _stride(path, metadata.get("stride")),
                        size if fixed else None, _predictions_of(forward))
    _check_layout(detector, forward, size)
    return detector


def _check_layout(detector: Detector, forward: Callable[[torch.Tensor], Any], size: tuple[int, int]) -> None:
    """Run ``forward`` once on a grey image of ``size`` and refuse what is not YOLOv5's decoded output
    (B, N, 5 + nc)."""
    height, width = size
    try:
        outputs = forward(torch.full((1, 3, height, width), 0.5))
    except Exception as error:  # noqa: BLE001 - whatever the runtime raises, the file does not run as a detector
        hint = "" if detector.imgsz else "; it does not say its input size: give imgsz= the size it was exported at"
        raise CheckpointFormatError(f"{detector.path} does not run on a 1x3x{height}x{width} image "
                                    f"({_first_line(error)}){hint}") from None
    outputs = _flattened(outputs)
    shapes = [tuple(o.shape) if hasattr(o, "shape") else type(o).__name__ for o in outputs]
    predictions = torch.as_tensor(outputs[0]).float() if outputs and hasattr(outputs[0], "shape") else None
    classes = predictions.shape[-1] - 5 if predictions is not None and predictions.ndim == 3 else 0
    # After the predictions, only Detect's raw maps (B, anchors, ny, nx, 5 + nc) may follow: a file exported
    # from ultralytics' PyPI package returns them too (its export flag misses the Detect class the .pt names).
    # Checked in this order so that the score range is read only off a (1, N >= 1, 5 + classes) tensor.
    wrong = (classes < 1 or predictions.shape[0] != 1 or predictions.shape[1] == 0
             or any(len(shape) != 5 or shape[-1] != classes + 5 for shape in shapes[1:])
             or (bool(detector.names) and classes != len(detector.names))
             or not _are_probabilities(predictions[..., 4:]))
    if wrong:
        named = f", {len(detector.names)} classes as its metadata names" if detector.names else ""
        raise CheckpointFormatError(
            f"{detector.path} is not a YOLOv5 detector's export: it returned {len(outputs)} output(s) of shape(s) "
            f"{', '.join(map(str, shapes))}; expected (batch, boxes, 5 + classes) with scores in [0, 1]{named} "
            f"(exports of YOLOv8 / YOLO11, or of segmentation models, are laid out otherwise)")


def _predictions_of(forward: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Detector's ``run`` from a file's forward: its first output (the predictions) as float32; ultralytics'
    files return a tuple, perhaps with Detect's raw maps after it."""
    return lambda images: torch.as_tensor(_flattened(forward(images))[0]).float()


def _flattened(outputs: Any) -> list[Any]:
    """A forward's outputs as one list: a tensor, a tuple, or a tuple holding a list (TorchScript's form)."""
    if isinstance(outputs, (tuple, list)):
        return [leaf for output in outputs for leaf in _flattened(output)]
    return [outputs]


def _are_probabilities(scores: torch.Tensor) -> bool:
    return bool(torch.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1)


def _stride(path: Path, stored: object) -> int:
    """The largest stride a file's metadata gives (32 when it gives none, as ultralytics assumes)."""
    try:
        stride = int(stored if stored is not None else 32)
    except (TypeError, ValueError):
        stride = 0
    if stride <= 0:
        raise CheckpointFormatError(f"{path}: its metadata gives the stride {stored!r}; expected a positive int")
    return stride


def _check_channels(path: Path, channels: int) -> None:
    if channels != 3:
        raise CheckpointFormatError(f"{path} takes {channels}-channel images; predict feeds RGB images (3 channels)")


def _is_image_shape(shape: object) -> bool:
    return isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _names(stored: object) -> list[str]:
    """Class names from a file's metadata: a list, a {index: name} dict, or either written as text (JSON by
    yolo_slim, Python's repr by ultralytics); [] when absent (the predictor then numbers the classes)."""
    if isinstance(stored, str):
        try:
            stored = ast.literal_eval(stored)  # reads both JSON objects and Python dict reprs; never runs code
        except (ValueError, SyntaxError):
            return []
    if isinstance(stored, dict):
        try:
            return [str(stored[k]) for k in sorted(stored, key=int)]
        except (TypeError, ValueError):  # keys that are no class indices: number the classes instead
            return []
    return [str(n) for n in stored] if isinstance(stored, (list, tuple)) else []
