"""``python -m yolo_slim export ckpt=PATH [format=onnx|ultralytics|torchscript] ...``: one deployable file, checked."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from yolo_slim.cli.errors import users_input
from yolo_slim.files import written_beside
from yolo_slim.cli.settings import (not_a_file, require_bool, require_imgsz, require_positive_int,
                                    require_stride_multiple)
from yolo_slim.models import CheckpointFormatError, count_parameters, load_yolov5
from yolo_slim.models.export import (MIN_OPSET, check_onnx, check_torchscript, export_onnx, export_torchscript,
                                     max_opset)
from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint

SUFFIXES = {"onnx": ".onnx", "ultralytics": ".pt", "torchscript": ".torchscript"}  # format -> the suffix it writes


def run(config: DictConfig) -> None:
    with users_input():
        checkpoint = Path(str(config.ckpt))
        kind = str(config.format)
        if kind not in SUFFIXES:
            raise ValueError(f"format must be one of {', '.join(SUFFIXES)}, found {kind!r}")
        if not checkpoint.is_file():
            raise ValueError(f"ckpt={str(checkpoint)!r} {not_a_file(checkpoint)}; give a yolo_slim .ckpt (from "
                             f"`train` or `prune`) or an ultralytics .pt")
        if checkpoint.suffix.lower() in (SUFFIXES["onnx"], SUFFIXES["torchscript"]):
            raise ValueError(f"ckpt={str(checkpoint)!r} is already an export; export reads the checkpoint it came "
                             f"from (a yolo_slim .ckpt or an ultralytics .pt)")
        half = require_bool(config.half, "half")
        overwrite = require_bool(config.overwrite, "overwrite")
        height, width = _image_size(config.imgsz)
        opset = require_positive_int(config.opset, "opset", minimum=MIN_OPSET, maximum=max_opset())
        output = _output(config.output, checkpoint, kind, overwrite)
        try:
            model = load_yolov5(checkpoint)
        except (CheckpointFormatError, pickle.UnpicklingError) as error:
            raise ValueError(f"ckpt={str(checkpoint)!r} is not a YOLOv5 checkpoint yolo_slim can read: "
                             f"{error}") from error
        for side in (height, width):
            require_stride_multiple(side, model, "imgsz")  # 64 for the P6 layouts, 128 for P7
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"output={str(output)!r} cannot be written: {error.strerror}") from None
    size = f"{count_parameters(model):,} parameters"
    # Written under a temporary name and renamed once its check passes (parity_line): a failed export leaves no
    # broken file, and with overwrite=true the file a deployment may be running is replaced only by a checked one.
    with written_beside(output) as partial:
        if kind == "onnx":
            export_onnx(model, partial, imgsz=(height, width), opset=opset)
            check = parity_line("onnxruntime", check_onnx(model, partial, (height, width)), output)
            shape = f"{height}x{width}, opset {opset}, dynamic batch"
        elif kind == "torchscript":
            export_torchscript(model, partial, imgsz=(height, width))
            check = parity_line("TorchScript", check_torchscript(model, partial, (height, width)), output)
            shape = f"{height}x{width}, BatchNorm folded, free batch axis"
        else:
            write_ultralytics_checkpoint(model, partial, half=half)
            reread = load_yolov5(partial)  # the file must read back through the safe loader, to its own spec
            if reread.spec != model.spec:
                raise RuntimeError(f"{output} reads back as another architecture; please report this")
            check = f"ultralytics release layout: their detect.py / val.py / export.py --weights {output.name}"
            shape = "fp16" if half else "fp32"
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, {size}, {shape})")
    print(check)


# The largest difference from torch an export may show on the check's random images, in input pixels (boxes) or
# probability (scores). float32 rounding gives 1e-4 to 1e-3 (tests/models/test_export.py); an export that
# computes something else (a misread weight, a wrong layout) is off by whole pixels.
PARITY_TOLERANCE = 0.05


def parity_line(runtime: str, difference: float, output: Path) -> str:
    """The check's printed line, or a RuntimeError (raised before the rename: ``output`` is then left as it was)
    when ``runtime``'s outputs are further than :data:`PARITY_TOLERANCE` from torch's, or not numbers."""
    if not difference <= PARITY_TOLERANCE:  # also NaN
        raise RuntimeError(f"{runtime} gives outputs up to {difference:.3g} away from torch's on the same images "
                           f"(more than {PARITY_TOLERANCE}): {output} was not written; please report this")
    return f"{runtime} vs torch on 2 random images: max abs difference {difference:.2e}"


def _image_size(value: Any) -> tuple[int, int]:
    """``imgsz``: one side (square) or ``[height, width]``, as ultralytics' ``export.py --imgsz 384 640``."""
    if isinstance(value, (ListConfig, list, tuple)):
        if len(value) != 2:
            raise ValueError(f"imgsz must be one size or [height, width], found {list(value)!r}")
        return require_imgsz(value[0], "imgsz height"), require_imgsz(value[1], "imgsz width")
    side = require_imgsz(value, "imgsz")
    return side, side


def _output(setting: Any, checkpoint: Path, kind: str, overwrite: bool) -> Path:
    """Where the file goes: next to ``checkpoint`` by default, inside ``output=`` when that is a folder (or
    ends in ``/``).

    The suffix must be the format's, since predict and ultralytics' DetectMultiBackend pick the runtime by it.
    An existing file is kept unless ``overwrite=true``: it may be the export a deployment runs.
    """
    suffix = SUFFIXES[kind]
    output = checkpoint.with_suffix(suffix) if setting is None else Path(str(setting))
    # A trailing slash names a folder, to be made if it does not exist (Path drops the slash).
    if output.is_dir() or (setting is not None and str(setting).endswith(("/", os.sep))):
        output = output / f"{checkpoint.stem}{suffix}"
    if output.suffix.lower() != suffix:
        raise ValueError(f"output={str(output)!r} must end in {suffix}, the suffix format={kind} writes (predict "
                         f"and ultralytics' tools choose the runtime by it)")
    blocking = next((folder for folder in output.parents if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"output={str(output)!r} cannot be written: {blocking} is a file, not a folder")
    # The folder is made only once the checkpoint has loaded (a bad ckpt= leaves nothing behind); here the
    # deepest folder that exists must take a new entry. A file made and dropped at once: os.access would say
    # yes to root, and to folders such as /proc.
    existing = next(folder for folder in output.parents if folder.exists())
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise ValueError(f"output={str(output)!r} cannot be written: {error.strerror} "
                         f"({error.filename or existing})") from None
    if output.exists():
        if output.resolve() == checkpoint.resolve():
            raise ValueError(f"output={str(output)!r} is ckpt= itself; give output=OTHER_PATH")
        if not overwrite:
            raise ValueError(f"output={str(output)!r} already exists; give overwrite=true to replace it, or another "
                             f"output=")
    return output
