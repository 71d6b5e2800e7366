"""ONNX and TorchScript export of a YOLOv5 (dense or compacted), each with a parity check.

The exported graph is the eval-mode network: input ``images`` (B, 3, H, W) float32 in [0, 1],
output ``predictions`` (B, N, 5 + nc) decoded as in :meth:`YOLOv5.forward` (``cx, cy, w, h`` in
input pixels, objectness, class probabilities); no NMS. The batch axis is dynamic, the image size
fixed at export (the decoding grids are traced as constants of that size).

A compacted model is an ordinary :class:`YOLOv5` with narrower layers, so it exports the same way;
prune before any Conv+BN fusion (onnxruntime fuses at load time, which is harmless after pruning).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch

from yolo_slim.models.fuse import fuse_batchnorm
from yolo_slim.models.yolo import YOLOv5

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "predictions"
MIN_OPSET = 11  # SiLU, Resize with nearest mode and dynamic shapes as the TorchScript exporter writes them


def max_opset() -> int:
    """The newest opset torch's TorchScript exporter supports (20 in torch 2.14): above it torch warns that the
    opset is not supported, and from 24 it fails mid-export. torch keeps the figure in a private module, read
    here rather than copied, so that a newer torch raises it."""
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


def export_onnx(model: YOLOv5, path: str | Path, imgsz: int | tuple[int, int] = 640, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """Write ``model`` as an ONNX file; ``model`` itself is left untouched (a float32 CPU copy is exported).

    Args:
        model: The network, dense or compacted.
        path: Output file (parent folders are created).
        imgsz: Input size, an int (square) or (height, width); multiples of the largest stride.
        opset: ONNX opset version, from 11 to :func:`max_opset`.
        dynamic_batch: Make the batch axis of input and output symbolic (``batch``).

    Returns:
        The path written.

    Raises:
        ValueError: ``imgsz`` is not a positive multiple of the model's largest stride, or ``opset`` is
            outside 11 .. :func:`max_opset`.
    """
    height, width = _checked_size(model, imgsz)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset():
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {max_opset()}, found {opset!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = copy.deepcopy(model).float().cpu().eval()
    example = torch.zeros(1, network.spec.in_channels, height, width)  # (B, C, H, W)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about the forward's Python-level size check; it holds for the traced size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch deprecates the TorchScript exporter; using it is the deliberate choice explained below.
        warnings.simplefilter("ignore", DeprecationWarning)
        # dynamo=False picks the TorchScript exporter: torch 2.14's default (dynamo) exporter needs the
        # onnxscript package, an extra dependency we do not want; this one needs only `onnx`.
        torch.onnx.export(network, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamic_axes=axes,
                          do_constant_folding=True)
    # The names as Python writes a dict, as ultralytics' export does: their DetectMultiBackend eval()s this
    # text and indexes it by int (names[0]); a JSON object's string keys would fail there.
    _add_metadata(path, {"stride": str(int(network.stride.max())), "names": str(dict(enumerate(model.names)))})
    log.info("exported %s (%dx%d, opset %d, %.2f MB)", path, height, width, opset, path.stat().st_size / 1e6)
    return path


def _add_metadata(path: Path, entries: dict[str, str]) -> None:
    """Store ``entries`` in the ONNX file's metadata, where ``predict`` (and ultralytics' DetectMultiBackend)
    read the class names and the stride."""
    import onnx

    saved = onnx.load(str(path))
    for key, value in entries.items():
        entry = saved.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(saved, str(path))


def check_onnx(model: YOLOv5, path: str | Path, imgsz: int | tuple[int, int] = 640, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime's and torch's outputs on a random batch.

    The batch has 2 images, or the file's batch size if it was exported with ``dynamic_batch=False``.

    The outputs are decoded predictions, so the figure is in input pixels for box coordinates and in
    probability units for the scores; float32 rounding gave ~1e-4 on yolov5n at 128
    (see tests/models/test_export.py).

    Args:
        model: The network that was exported (run in torch as a float32 CPU eval copy).
        path: The ONNX file from :func:`export_onnx`.
        imgsz: The size it was exported at.
        seed: Seed of the random images, for a reproducible figure.

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: ``imgsz`` is not a positive multiple of the model's largest stride or not the
            file's input size, or the file's output does not have the model's shape.
    """
    try:
        import onnxruntime
    except ImportError as error:  # a dependency of yolo_slim, but the check should say what is missing
        raise ImportError("check_onnx needs onnxruntime: pip install onnxruntime") from error
    height, width = _checked_size(model, imgsz)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch, channels, *size = session.get_inputs()[0].shape  # symbolic axes come back as strings
    if size != [height, width]:
        raise ValueError(f"{path} takes images of {size[0]}x{size[1]} but imgsz={imgsz!r} was given; "
                         f"pass the imgsz it was exported at")
    batch = batch if isinstance(batch, int) else 2  # a file exported with dynamic_batch=False fixes it
    images, expected = _reference_outputs(model, batch, channels, height, width, seed)
    (found,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    return _difference(torch.from_numpy(found), expected, path, "onnxruntime")


def export_torchscript(model: YOLOv5, path: str | Path, imgsz: int | tuple[int, int] = 640) -> Path:
    """Write ``model`` as a traced TorchScript file with its BatchNorms folded (``model`` is left untouched).

    Same input and output as the ONNX file (the batch axis stays free, the image size is fixed at
    ``imgsz``). The file carries ``config.txt`` with ``shape``, ``stride`` and ``names``, the extra
    file ultralytics' ``export.py`` writes and their ``DetectMultiBackend`` reads, so their
    ``detect.py --weights model.torchscript`` runs it too.

    Raises:
        ValueError: ``imgsz`` is not a positive multiple of the model's largest stride.
    """
    height, width = _checked_size(model, imgsz)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = fuse_batchnorm(copy.deepcopy(model).float().cpu())
    example = torch.zeros(1, network.spec.in_channels, height, width)  # (B, C, H, W)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the forward's size check, as for ONNX
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript; still what users load
        traced = torch.jit.trace(network, example)
    config = {"shape": list(example.shape), "stride": int(network.stride.max()), "names": dict(enumerate(model.names))}
    traced.save(str(path), _extra_files={"config.txt": json.dumps(config)})
    log.info("exported %s (%dx%d, %.2f MB)", path, height, width, path.stat().st_size / 1e6)
    return path


def check_torchscript(model: YOLOv5, path: str | Path, imgsz: int | tuple[int, int] = 640, seed: int = 0) -> float:
    """Largest absolute difference between the TorchScript file's and the unfused torch model's outputs on
    a random batch of 2 (the trace was made at batch 1, so this also checks that the batch axis is free)."""
    height, width = _checked_size(model, imgsz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; the file format is not
        scripted = torch.jit.load(str(path), map_location="cpu")
    images, expected = _reference_outputs(model, 2, model.spec.in_channels, height, width, seed)
    with torch.no_grad():
        found = scripted(images)
    return _difference(found, expected, path, "TorchScript")


def _reference_outputs(model: YOLOv5, batch: int, channels: int, height: int, width: int,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, C, H, W) and the float32 eval model's decoded outputs (B, N, 5 + nc) on them."""
    network = copy.deepcopy(model).float().cpu().eval()
    images = torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return images, network(images)


def _difference(found: torch.Tensor, expected: torch.Tensor, path: str | Path, runtime: str) -> float:
    if tuple(found.shape) != tuple(expected.shape):
        raise ValueError(f"{path} does not hold this model: {runtime} returned shape {tuple(found.shape)}, "
                         f"torch {tuple(expected.shape)}")
    return float((found.float() - expected).abs().max())


def _checked_size(model: YOLOv5, imgsz: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    largest = int(model.stride.max())
    for value in (height, width):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % largest:
            raise ValueError(f"imgsz must be a positive multiple of {largest} (an int or (height, width)), "
                             f"found {imgsz!r}")
    return height, width
