"""Load official ultralytics YOLOv5 ``.pt`` files without their code and without running theirs.

A release checkpoint (v5.0 .. v7.0) is a pickle of the whole model: ``{"model": DetectionModel,
"ema": ..., ...}``, its classes under ``models.yolo`` / ``models.common`` (``yolov5.models.*``
when saved from the PyPI package), usually in fp16. ``torch.load(weights_only=False)`` would
import those classes and let the file call any function it names. Instead, :class:`_SafeUnpickler`
resolves an allow-list: tensor rebuilding, plain containers, and module classes, every one of the
latter replaced by an inert stand-in that only records its attributes. The weights are then read
off that tree of stand-ins and loaded into a :class:`~yolo_slim.models.yolo.YOLOv5` built from the
checkpoint's own yaml. Anything outside the allow-list stops the load with
:class:`UnsafeCheckpointError` before it is called.
"""

from __future__ import annotations

import codecs
import logging
import pickle
import types
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolo_slim.models.registry import ultralytics_class_names
from yolo_slim.models.spec import ModelSpec
from yolo_slim.models.ultralytics_format import spec_in_yaml
from yolo_slim.models.yolo import YOLOv5

log = logging.getLogger(__name__)


CHECKPOINT_KEY = "yolo_slim"  # where yolo_slim's Lightning checkpoints keep the spec and class names


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The file names something outside the allow-list; nothing it names was called."""


class CheckpointFormatError(ValueError):
    """The file was read safely but does not hold a YOLOv5 that can be rebuilt."""


# Packages whose module classes become inert stand-ins. The YOLOv5 class names are listed so that
# a file from some other project that happens to use the same package name is refused, not guessed at:
# every class a registered block is written as (models/registry.py), the model classes, and a few
# ultralytics blocks yolo_slim does not build, so that their files fail at the yaml with the block named.
_YOLOV5_MODULES = ("models.yolo", "models.common", "models.experimental",
                   "yolov5.models.yolo", "yolov5.models.common", "yolov5.models.experimental")
_YOLOV5_OTHER_CLASSES = frozenset({"Model", "DetectionModel", "BaseModel", "BottleneckCSP", "CrossConv", "C3x",
                                   "DWConv", "C3SPP", "MixConv2d", "Contract", "Expand"})
# The other tasks of ultralytics/yolov5 v7.0: refused by name, since they are no detector yolo_slim can slim.
_YOLOV5_OTHER_TASKS = {"SegmentationModel": "segmentation", "Segment": "segmentation", "Proto": "segmentation",
                       "ClassificationModel": "classification", "Classify": "classification"}
_NUMPY_MULTIARRAY = (getattr(np, "_core", None) or np.core).multiarray
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    # numpy arrays and scalars: an unstripped ultralytics training checkpoint (their last.pt, or an
    # epoch file of --save-period) stores best_fitness as an ndarray. These build an array of the
    # ndarray class (the only array class allowed here) from a dtype and bytes; nothing runs.
    # (numpy 2 names the module numpy._core.multiarray, numpy 1 numpy.core.multiarray; files of either load.)
    **{(module, name): getattr(_NUMPY_MULTIARRAY, name)
       for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles spell an array's bytes
}


class _InertModule:
    """Stand-in for a pickled module class: keeps the pickled attributes, has no behaviour."""

    qualified_name = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state)


_STAND_INS: dict[str, type[_InertModule]] = {}


def _stand_in(module: str, name: str) -> type[_InertModule]:
    qualified = f"{module}.{name}"
    if qualified not in _STAND_INS:
        _STAND_INS[qualified] = type(name, (_InertModule,), {"qualified_name": qualified})
    return _STAND_INS[qualified]


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles spell builtins the Python 2 way.
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules."):
            return _stand_in(module, name)
        if module in _YOLOV5_MODULES and name in _YOLOV5_OTHER_TASKS:
            raise CheckpointFormatError(
                f"checkpoint holds a YOLOv5 {_YOLOV5_OTHER_TASKS[name]} model ({module}.{name}); yolo_slim reads "
                f"YOLOv5 detection models only (DetectionModel, e.g. yolov5s.pt, not yolov5s-seg.pt)")
        if module in _YOLOV5_MODULES and (name in _YOLOV5_OTHER_CLASSES or name in ultralytics_class_names()):
            return _stand_in(module, name)
        if module.split(".")[0] == "ultralytics":
            raise UnsafeCheckpointError(
                f"checkpoint refers to {module}.{name}: a model of ultralytics' newer package (YOLOv8, YOLO11 ...), "
                f"which yolo_slim does not read; expected a YOLOv5 checkpoint (ultralytics/yolov5 v5.0 to v7.0, "
                f"or one written by yolo_slim)")
        raise UnsafeCheckpointError(
            f"checkpoint refers to {module}.{name}, which yolo_slim does not load: only tensors, plain "
            f"containers and YOLOv5/torch.nn module classes are allowed (the file may be corrupt, from "
            f"another project, or malicious)")


# torch.load takes a module-like object with `Unpickler` and `load`.
_safe_pickle = types.SimpleNamespace(
    Unpickler=_SafeUnpickler,
    load=lambda file, **kwargs: _SafeUnpickler(file, **kwargs).load(),
    __name__="yolo_slim_safe_pickle",
)


def read_checkpoint(path: str | Path) -> Any:
    """Unpickle ``path`` through the allow-list (on CPU); module objects come back as stand-ins.

    Raises:
        UnsafeCheckpointError: the file names a class or function outside the allow-list (the message
            names the file).
        CheckpointFormatError: the file is empty, truncated, or not a torch checkpoint at all; the
            message names the file and says what it looks like.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointFormatError(f"{path} is empty (0 bytes); {_EXPECTED}")
    if _is_torchscript(path):
        raise CheckpointFormatError(_TORCHSCRIPT_REFUSAL.format(path=path))
    try:
        # weights_only=False is what lets a custom unpickler run at all; the allow-list above is the guard.
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_safe_pickle)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"{path}: {error}") from None
    except CheckpointFormatError as error:  # raised by the unpickler, which does not know the file's name
        raise CheckpointFormatError(f"{path}: {error}") from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError, IndexError,
            zipfile.BadZipFile) as error:
        # torch's own messages ("PytorchStreamReader failed reading zip archive", "invalid load key")
        # name neither the file nor what it is; what it is comes from its first bytes.
        raise CheckpointFormatError(f"{path} is {_what_the_file_is(path, size)}; {_EXPECTED}") from error


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive, which ``torch.load`` would hand to ``torch.jit.load``: that
    compiles and runs the archive's own code, before any allow-list could look at it.

    The test is torch.load's own (a ``constants.pkl`` record), read by torch's own zip reader, so that a file
    built to look different to Python's ``zipfile`` cannot slip past it.
    """
    with path.open("rb") as file:
        if file.read(4) != b"PK\x03\x04":
            return False
    try:
        return "constants.pkl" in torch._C.PyTorchFileReader(str(path)).get_all_records()
    except RuntimeError:  # not an archive torch can open: torch.load fails the same way, and says so below
        return False


_EXPECTED = ("expected a checkpoint written by torch.save: an ultralytics YOLOv5 .pt, or a yolo_slim .ckpt from "
             "`train` or `prune`")
_TORCHSCRIPT_REFUSAL = ("{path} is a TorchScript file, an export rather than a checkpoint (`predict` runs it when its "
                        "name ends in .torchscript); " + _EXPECTED)


def check_archive(path: str | Path) -> None:
    """A cheap check that ``path`` is a whole torch zip archive, for a file another loader will read (a
    resume): only its central directory is read, nothing is unpickled.

    Raises:
        CheckpointFormatError: empty, truncated, or not a torch archive; the message names the file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointFormatError(f"{path} is empty (0 bytes); {_EXPECTED}")
    try:
        with zipfile.ZipFile(path) as archive:
            whole = any(name.endswith("data.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        whole = False
    if not whole:
        raise CheckpointFormatError(f"{path} is {_what_the_file_is(path, size)}; {_EXPECTED}")
    if _is_torchscript(path):
        raise CheckpointFormatError(_TORCHSCRIPT_REFUSAL.format(path=path))


def _what_the_file_is(path: Path, size: int) -> str:
    with path.open("rb") as file:
        head = file.read(512)
    if head.startswith(b"PK\x03\x04"):
        return f"a zip archive torch cannot read ({size:,} bytes: truncated, or not torch's layout)"
    if head.startswith(b"\x80") and len(head) > 1 and head[1] <= 5:
        return f"a pickle torch cannot read ({size:,} bytes: truncated or corrupt)"
    if path.suffix.lower() == ".onnx":
        return "an ONNX file (an export, not a checkpoint; `predict` runs it)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras or TensorFlow weights?)"
    if len(head) > 8 and head[8:9] == b"{":
        return "a safetensors file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a torch checkpoint (it begins with the bytes {head[:8].hex(' ')})"
    first_line = text.strip().splitlines()[0][:60] if text.strip() else ""
    return f"a text file, not a checkpoint (it begins {first_line!r})"


def load_yolov5(path: str | Path, cfg: str | Path | Mapping[str, Any] | None = None) -> YOLOv5:
    """Load an ultralytics YOLOv5 checkpoint as a float32 :class:`YOLOv5` in eval mode.

    Args:
        path: A release or training ``.pt`` (the whole model pickled under ``"ema"`` or ``"model"``),
            or a file holding a plain state dict (then ``cfg`` is required).
        cfg: Model yaml for a plain state dict; ignored for whole-model checkpoints, which carry
            their own yaml.

    Returns:
        The network with the checkpoint's weights, nc, anchors, stride and class names.

    Raises:
        UnsafeCheckpointError: the file names something outside the allow-list.
        CheckpointFormatError: the file holds neither a YOLOv5 model nor a state dict.
    """
    return network_from_checkpoint(read_checkpoint(path), path, cfg)


def network_from_checkpoint(content: Any, path: str | Path,
                            cfg: str | Path | Mapping[str, Any] | None = None) -> YOLOv5:
    """:func:`load_yolov5` on what :func:`read_checkpoint` returned for ``path`` (for a caller that has
    already read the file: the unpickling is not done twice)."""
    stored = content
    if isinstance(content, Mapping) and isinstance(content.get(CHECKPOINT_KEY), Mapping):
        return _from_lightning_checkpoint(content, path).float().eval()
    if isinstance(content, Mapping) and not _is_state_dict(content):
        stored = content.get("ema") or content.get("model")
    if isinstance(stored, _InertModule):
        model = _from_pickled_model(stored, path)
    elif isinstance(stored, Mapping) and _is_state_dict(stored):
        if not any(key.startswith("model.0.") for key in stored):
            first = ", ".join(list(stored)[:3])
            raise CheckpointFormatError(f"{path} holds the weights of another network (keys {first} ...); "
                                        f"expected YOLOv5's (model.0.conv.weight, ..., model.N.m.0.weight)")
        if cfg is None:
            raise CheckpointFormatError(f"{path} holds a plain state dict: pass cfg= (the model yaml it was "
                                        f"trained with), e.g. load_yolov5(path, cfg='yolov5s.yaml')")
        state = dict(stored)
        nc = _nc_from_state(state)
        model = YOLOv5(cfg, nc=nc)
        _load_weights(model, state, path)
    elif isinstance(content, Mapping) and "pytorch-lightning_version" in content:
        raise CheckpointFormatError(f"{path} is a Lightning checkpoint of another LightningModule (no "
                                    f"{CHECKPOINT_KEY!r} entry); expected one written by yolo_slim's `train` or "
                                    f"`prune`, or by a module trained with SlimCallback")
    else:
        found = f"a dict with keys {sorted(map(str, content))[:8]}" if isinstance(content, Mapping) else \
            f"a pickled {type(content).__name__}"
        raise CheckpointFormatError(f"{path} holds no YOLOv5 model: expected an ultralytics checkpoint "
                                    f"(keys 'model'/'ema'), a yolo_slim checkpoint or a state dict, found {found}")
    return model.float().eval()


def load_pretrained(path: str | Path, nc: int | None = None, names: list[str] | None = None) -> YOLOv5:
    """Weights to start training from, adapted to ``nc`` classes.

    When ``nc`` differs from the checkpoint's, every weight is kept except the Detect output
    convs, which are new (their shape depends on nc), as ultralytics does for transfer learning.
    """
    source = load_yolov5(path)
    if nc is None or nc == source.nc:
        if names is not None:
            source.names = list(names)
        return source.train()
    target = YOLOv5(source.spec.with_nc(nc), names=names)
    target.pruning_history = list(source.pruning_history)  # new classes, same pruned architecture
    target_state = target.state_dict()
    kept = {k: v for k, v in source.state_dict().items() if k in target_state and target_state[k].shape == v.shape}
    target.load_state_dict(kept, strict=False)
    log.info("%s: kept %d of %d tensors; new Detect output convs for nc=%d (was %d)",
             path, len(kept), len(target_state), nc, source.nc)
    return target


def _from_lightning_checkpoint(content: Mapping[str, Any], path: str | Path) -> YOLOv5:
    """A checkpoint written by yolo_slim's Lightning module: spec + state dict (EMA weights preferred)."""
    stored = content[CHECKPOINT_KEY]
    model = YOLOv5.from_spec(stored["spec"], names=stored.get("names"), pruning_history=stored.get("plans", ()))
    state = content.get("state_dict", {})
    # A user's own module keeps its network under another attribute (SlimCallback records it).
    network = str(stored.get("model_attr") or "model")
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else f"{network}."
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    _load_weights(model, weights, path)
    return model


def _from_pickled_model(stored: _InertModule, path: str | Path) -> YOLOv5:
    attributes = stored.__dict__
    yaml_dict = attributes.get("yaml")
    if not isinstance(yaml_dict, Mapping):
        raise CheckpointFormatError(f"{path}: the pickled {stored.qualified_name} carries no model yaml")
    names = attributes.get("names")
    if isinstance(names, Mapping):
        names = [names[k] for k in sorted(names)]
    written = spec_in_yaml(yaml_dict)
    if written is not None:  # written by yolo_slim (export format=ultralytics): the exact, maybe pruned, spec
        spec = ModelSpec.from_dict(dict(written["spec"]))
        nc = yaml_dict.get("nc")
        if isinstance(nc, int) and not isinstance(nc, bool) and nc != spec.nc:
            # Their train.py retrained it for other classes: it sets yaml["nc"] and builds a new head, but
            # carries our entry over as it was. The head follows the yaml; the rest is the spec's.
            spec = spec.with_nc(nc)
        model = YOLOv5.from_spec(spec, names=names, pruning_history=written.get("pruning_history") or ())
    else:
        model = YOLOv5(dict(yaml_dict), in_channels=int(yaml_dict.get("ch", 3)), names=names)
    _load_weights(model, _state_of(stored), path)
    stride = attributes.get("stride")
    if isinstance(stride, torch.Tensor) and not torch.equal(stride.float().cpu(), model.stride):
        raise CheckpointFormatError(f"{path}: checkpoint strides {stride.tolist()} differ from the rebuilt "
                                    f"model's {model.stride.tolist()}")
    log.info("loaded %s: %s, nc=%d", path, stored.qualified_name, model.nc)
    return model


def _state_of(module: _InertModule, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a pickled module tree, read from its ``_parameters``/``_buffers``/``_modules``."""
    attributes = module.__dict__
    skipped = attributes.get("_non_persistent_buffers_set", set())
    state: dict[str, torch.Tensor] = {}
    for name, tensor in (attributes.get("_parameters") or {}).items():
        if tensor is not None:
            state[prefix + name] = tensor.detach()
    for name, tensor in (attributes.get("_buffers") or {}).items():
        if tensor is not None and name not in skipped:
            state[prefix + name] = tensor
    for name, child in (attributes.get("_modules") or {}).items():
        if isinstance(child, _InertModule):
            state.update(_state_of(child, f"{prefix}{name}."))
    return state


def _load_weights(model: YOLOv5, state: dict[str, torch.Tensor], path: str | Path) -> None:
    # v5.0's Detect kept a persistent `anchor_grid` buffer; later releases derive it from `anchors`.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()
             if not k.endswith(".anchor_grid")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointFormatError(f"{path}: weights do not fit the model built from its yaml: {error}") from error


def _is_state_dict(content: Mapping[str, Any]) -> bool:
    return bool(content) and all(isinstance(v, torch.Tensor) for v in content.values())


def _nc_from_state(state: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes implied by the Detect output convs of a plain state dict."""
    anchors = [k for k in state if k.endswith(".anchors")]
    if len(anchors) != 1:
        return None
    prefix = anchors[0].removesuffix("anchors")
    na = state[anchors[0]].shape[1]
    return state[prefix + "m.0.weight"].shape[0] // na - 5
