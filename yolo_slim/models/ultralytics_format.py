"""Write a YOLOv5, dense or pruned, as an ultralytics release checkpoint that their unmodified code loads.

ultralytics' ``detect.py``, ``val.py``, ``export.py`` and ``attempt_load`` read a ``.pt`` that is a
pickle of the whole model: ``{"model": DetectionModel, "epoch": -1, "ema": None, ...}``, with the
module classes named by their import paths (``models.yolo.DetectionModel``, ``models.common.Conv``
...). Unpickling rebuilds each object from its class and its attribute dict, without calling any
constructor, so a model of any widths loads as long as every object carries the attributes their
``forward``, ``_forward_once``, ``fuse()`` and ``_apply()`` read. This module makes such a file
without importing ultralytics: it deep-copies the network, re-labels each block with a stand-in
class that pickles under ultralytics' class path, adds the attributes ultralytics' blocks have
(``f``, ``i``, ``type``, ``np`` on every layer, Bottleneck's ``add``, Concat's ``d``, Detect's
``grid``/``anchor_grid``/``stride``/``inplace``, the model's ``yaml``/``save``/``names``/``nc``) and
writes it with ``torch.save`` through a pickler that spells those class paths.

The ``yaml`` field: ultralytics rebuilds a model from it in a few places (``train.py --weights``
without ``--cfg``, the TensorFlow exports). For a network whose widths a yaml can express (the
dense models) it is that yaml, with depth and width multiples 1. For a pruned one no yaml can,
so its rows name a module that does not exist: ultralytics then fails loudly with a NameError
naming it, instead of silently building the dense model and loading only the weights whose shapes
happen to fit. Either way ``yaml["yolo_slim"]`` holds the exact spec and the pruning history, which
:func:`yolo_slim.models.checkpoint.load_yolov5` reads back.
"""

from __future__ import annotations

import copy
import datetime
import io
import pickle
import types
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_slim.models.activations import DEFAULT_ACTIVATION
from yolo_slim.models.detect import Detect
from yolo_slim.models.registry import REPEAT, block_type, ultralytics_class
from yolo_slim.models.spec import INPUT, ModelSpec
from yolo_slim.models.yaml_config import parse_model_yaml
from yolo_slim.models.yolo import YOLOv5

MODEL_CLASS = ("models.yolo", "DetectionModel")
# The module a pruned model's yaml rows name: ultralytics' parse_model evaluates it and stops with
# "NameError: name 'YoloSlimPrunedWidths_rebuild_with_yolo_slim' is not defined".
UNBUILDABLE_MODULE = "YoloSlimPrunedWidths_rebuild_with_yolo_slim"
SPEC_KEY = "yolo_slim"  # in the pickled model's yaml: {"spec": ..., "pruning_history": [...]}


class _StandIn(nn.Module):
    """Base of the classes that pickle under an ultralytics class path; never run, only written."""

    pickled_as: tuple[str, str] = ("", "")


_STAND_INS: dict[tuple[str, str], type[_StandIn]] = {}


def _stand_in(path: tuple[str, str]) -> type[_StandIn]:
    if path not in _STAND_INS:
        _STAND_INS[path] = type(path[1], (_StandIn,), {"pickled_as": path, "__module__": __name__})
    return _STAND_INS[path]


class _UltralyticsPickler(pickle._Pickler):
    """The pure-Python pickler (its ``save_global`` can be overridden; the C one's cannot), writing each
    stand-in class as a reference to ultralytics' class path instead of this module's."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if not (isinstance(obj, type) and issubclass(obj, _StandIn)):
            super().save_global(obj, name)
            return
        module, qualified = obj.pickled_as
        if self.proto >= 4:
            self.save(module)
            self.save(qualified)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualified}\n".encode("utf-8"))
        self.memoize(obj)


# torch.save takes a module-like object whose Pickler it subclasses (adding tensor storage handling).
_pickle_module = types.SimpleNamespace(Pickler=_UltralyticsPickler, __name__="yolo_slim_ultralytics_pickle")


def ultralytics_yaml(network: YOLOv5) -> dict[str, Any]:
    """The model yaml stored in the checkpoint: buildable by ultralytics only if it rebuilds this very network."""
    spec = network.spec
    head = {"nc": spec.nc, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [list(a) for a in spec.anchors],
            "ch": spec.in_channels}
    if spec.activation != DEFAULT_ACTIVATION:
        head["activation"] = spec.activation
    rows = _yaml_rows(spec)
    if rows is not None:
        candidate = {**head, "backbone": rows, "head": []}
        try:  # our parser follows ultralytics' parse_model exactly (tests/models), so it decides for them
            rebuilt = parse_model_yaml(candidate, in_channels=spec.in_channels)
        except ValueError:
            rebuilt = None
        if rebuilt is None or rebuilt.to_dict() != spec.to_dict():
            rows = None
    if rows is None:
        rows = [[-1, 1, UNBUILDABLE_MODULE, ["this model's pruned widths are in yaml['yolo_slim']['spec']; "
                                             "load it with yolo_slim.load_yolov5, not from this yaml"]]]
    return {**head, "backbone": rows, "head": [],
            SPEC_KEY: {"spec": spec.to_dict(), "pruning_history": copy.deepcopy(network.pruning_history)}}


def write_ultralytics_checkpoint(network: YOLOv5, path: str | Path, half: bool = True) -> Path:
    """Write ``network`` as an ultralytics release ``.pt`` (``network`` itself is left untouched).

    Args:
        network: The network, dense or compacted (not BatchNorm-fused: ultralytics fuses at load).
        path: The file to write (parent folders are created).
        half: Store fp16 weights, as ultralytics' releases do (the anchors stay exact float32); ``False`` keeps
            every tensor float32 (exact).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ultralytics_model(network)
    if half:
        detect = model.model[-1]
        anchors = detect.anchors.clone()
        model.half()
        detect.stride = detect.stride.half()  # ultralytics' _apply converts Detect's stride too (powers of 2: exact)
        # The anchors stay float32: AutoAnchor's fitted ones (10.37, ...) would round in fp16, and the file would
        # then read back as another model. ultralytics' attempt_load makes the whole model float32 anyway, and
        # their --half casts it all again, so they never see the difference.
        detect._buffers["anchors"] = anchors
    checkpoint = {"epoch": -1, "best_fitness": None, "model": model, "ema": None, "updates": None,
                  "optimizer": None, "opt": None, "git": None,
                  "date": datetime.datetime.now().isoformat()}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, pickle_module=_pickle_module)
    path.write_bytes(buffer.getvalue())
    return path


def ultralytics_model(network: YOLOv5) -> nn.Module:
    """A float32 CPU copy of ``network`` re-labelled as ultralytics' ``DetectionModel`` (for pickling only)."""
    source = copy.deepcopy(network).float().cpu().eval()
    spec, yaml_dict, stride = source.spec, ultralytics_yaml(source), source.stride.clone()  # read before relabelling
    layers = OrderedDict()
    for index, (layer, layer_spec) in enumerate(zip(source.model, spec.layers)):
        previous_only = layer_spec.sources in ((index - 1,), (INPUT,))
        sources = [-1 if s in (index - 1, INPUT) else s for s in layer_spec.sources]
        type_name = ".".join(_class_path(layer))  # before the relabelling changes its class
        relabelled = _relabel(layer)
        # What ultralytics' parse_model attaches to every layer, and _forward_once reads.
        relabelled.i, relabelled.type = index, type_name
        relabelled.f = -1 if previous_only else (sources[0] if len(sources) == 1 else sources)
        relabelled.np = sum(p.numel() for p in layer.parameters())
        layers[str(index)] = relabelled
    model = _stand_in(MODEL_CLASS)()
    model.model = nn.Sequential(layers)
    model.yaml = yaml_dict
    # The outputs _forward_once keeps: every layer some later layer reads by index.
    model.save = sorted({s for layer in model.model for s in _as_list(layer.f) if s != -1})
    model.names = dict(enumerate(source.names))
    model.nc = spec.nc
    model.inplace = True
    model.stride = stride
    for module in model.modules():
        module.training = False
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(False)  # as ultralytics' strip_optimizer leaves a release
    return model


def _relabel(module: nn.Module) -> nn.Module:
    """Give ``module`` and its sub-blocks ultralytics' classes and attributes (in place)."""
    for name, child in list(module.named_children()):
        module._modules[name] = _relabel(child)
    found = ultralytics_class(type(module))
    if found is None:
        if type(module).__module__.startswith("torch.nn"):
            return module
        raise TypeError(f"{type(module).__name__} has no ultralytics counterpart to write it as")
    path, attributes = found
    module.__dict__.update(attributes(module))
    if isinstance(module, Detect):
        stride = module._buffers.pop("stride")
        module._non_persistent_buffers_set.discard("stride")
        module.__dict__["stride"] = stride  # a plain attribute in ultralytics, set by the model at build
        module.__dict__["grid"] = [torch.empty(0) for _ in range(module.nl)]
        module.__dict__["anchor_grid"] = [torch.empty(0) for _ in range(module.nl)]
        module.__dict__["inplace"] = True
    module.__class__ = _stand_in(path)
    return module


def _class_path(module: nn.Module) -> tuple[str, str]:
    """What ultralytics' ``type`` attribute names for a layer (a repeated row: the class of its copies)."""
    if isinstance(module, nn.Sequential) and len(module):
        module = module[0]
    found = ultralytics_class(type(module))
    if found is not None:
        return found[0]
    if type(module).__module__.startswith("torch.nn"):
        return (type(module).__module__, type(module).__name__)
    raise TypeError(f"{type(module).__name__} has no ultralytics counterpart to write it as")


def _as_list(source: int | list[int]) -> list[int]:
    return source if isinstance(source, list) else [source]


def _yaml_rows(spec: ModelSpec) -> list[list[Any]] | None:
    """Rows ``[from, number, module, args]`` at multiples 1 for a spec whose widths follow ultralytics'
    rules; ``None`` when some block's widths cannot be written as a row (the result is checked anyway)."""
    rows = []
    for index, layer in enumerate(spec.layers):
        sources = [-1 if s in (index - 1, INPUT) else s for s in layer.sources]
        source: int | list[int] = sources[0] if len(sources) == 1 else sources
        row_block, params = block_type(layer.module), layer.params
        named = block_type(params["module"]) if layer.module == REPEAT else row_block  # a Repeat is named by its copies
        written = row_block.yaml_args(params) if row_block.yaml_args else None
        if written is None or not named.names:
            return None
        repeats, args = written
        rows.append([source, repeats, named.names[0], args])
    return rows


def spec_in_yaml(yaml_dict: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``{"spec", "pruning_history"}`` entry this module writes into a checkpoint's yaml, if present."""
    entry = yaml_dict.get(SPEC_KEY)
    return entry if isinstance(entry, Mapping) and isinstance(entry.get("spec"), Mapping) else None
