"""The YOLOv5 architecture as plain data.

A :class:`ModelSpec` is what the network *is*: for every layer, which earlier layers feed it
and the exact keyword arguments of its block (every channel count spelled out). It is built
from an ultralytics model yaml by :mod:`yolo_slim.models.yaml_config`, rewritten by the
slimming code when channels are removed, stored in checkpoints as a JSON-able dict, and turned
back into modules by :class:`yolo_slim.models.yolo.YOLOv5`. What each module name means (its output
width, its stride) comes from the block registry, :mod:`yolo_slim.models.registry`.

Worked example (yolov5n, layer 2)::

    LayerSpec(sources=(1,), module="C3",
              params={"in_channels": 32, "cv1_channels": 16, "cv2_channels": 16,
                      "bottlenecks": [[16, 16]], "out_channels": 32,
                      "shortcut": True, "groups": 1})

Layer indices are absolute; :data:`INPUT` (-1) stands for the input image.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from yolo_slim.models.activations import DEFAULT_ACTIVATION, canonical_activation
from yolo_slim.models.registry import block_type

INPUT = -1
DEFAULT_IMGSZ = 640  # the image side ultralytics' YOLOv5 trains, validates and detects at unless told another
# Every layout's largest stride is a multiple of this (P5: 32, P6: 64, P7: 128), so an image side must be one too.
STRIDE_UNIT = 32
"""Source index of the input image."""

SPEC_FORMAT = 1
"""Version of the dict layout written by :meth:`ModelSpec.to_dict`."""



@dataclass(frozen=True)
class LayerSpec:
    """One row of the network.

    Attributes:
        sources: Absolute indices of the layers whose outputs feed this one (``INPUT`` for the image).
        module: A registered block name (:func:`yolo_slim.models.registry.block_types`).
        params: Keyword arguments of the block's constructor: ints, floats, bools, lists.
    """

    sources: tuple[int, ...]
    module: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"from": list(self.sources), "module": self.module, "params": copy.deepcopy(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSpec:
        return cls(sources=tuple(int(s) for s in data["from"]), module=str(data["module"]),
                   params=copy.deepcopy(dict(data["params"])))


@dataclass(frozen=True)
class ModelSpec:
    """A whole YOLOv5: its layers, the number of classes and the anchors.

    Attributes:
        layers: Rows in execution order; the last one is the Detect head.
        nc: Number of classes.
        anchors: Per detection level, the anchor (w, h) pairs in input pixels, flattened
            (``[[10, 13, 16, 30, 33, 23], ...]`` as in the yaml).
        in_channels: Channels of the input image.
        activation: What every Conv unit with ``act=True`` applies (``"nn.SiLU()"``, ``"nn.LeakyReLU(0.1)"``).
    """

    layers: tuple[LayerSpec, ...]
    nc: int
    anchors: tuple[tuple[float, ...], ...]
    in_channels: int = 3
    activation: str = DEFAULT_ACTIVATION

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived facts
    def output_channels(self) -> list[int]:
        """Output channel count of every layer (the Detect row reports its summed outputs)."""
        channels: list[int] = []
        for index, layer in enumerate(self.layers):
            inputs = [self.in_channels if s == INPUT else channels[s] for s in layer.sources]
            channels.append(_layer_output_channels(layer, inputs, index))
        return channels

    def input_channels(self, index: int) -> list[int]:
        """Channel counts arriving at layer ``index``, one per source."""
        channels = self.output_channels()
        return [self.in_channels if s == INPUT else channels[s] for s in self.layers[index].sources]

    def downsampling(self) -> list[float]:
        """Stride of every layer's output relative to the input image (8 means 1/8 resolution)."""
        strides: list[float] = []
        for index, layer in enumerate(self.layers):
            inputs = [1.0 if s == INPUT else strides[s] for s in layer.sources]
            if layer.module == "Detect":  # one level per input, each at its own resolution
                strides.append(min(inputs))
                continue
            if len(set(inputs)) > 1:
                raise ValueError(f"layer {index} ({layer.module}) joins inputs of different resolutions: "
                                 f"sources {list(layer.sources)} have strides {inputs}")
            strides.append(inputs[0] * block_type(layer.module).stride(layer.params))
        return strides

    @property
    def detect_index(self) -> int:
        return len(self.layers) - 1

    @property
    def detect_strides(self) -> list[int]:
        """Stride of each detection level (8, 16, 32 for the standard heads)."""
        strides = self.downsampling()
        return [int(strides[s]) for s in self.layers[-1].sources]

    def with_nc(self, nc: int) -> ModelSpec:
        """The same network with a Detect head for ``nc`` classes."""
        detect = self.layers[-1]
        head = LayerSpec(sources=detect.sources, module="Detect", params={**copy.deepcopy(detect.params), "nc": nc})
        return dataclasses.replace(self, layers=(*self.layers[:-1], head), nc=nc)

    # ------------------------------------------------------------------ checks and (de)serialisation
    def validate(self) -> None:
        """Check that the layers fit together.

        Raises:
            ValueError: a source that is not an earlier layer, an unknown module, an ``in_channels``
                that disagrees with what its sources produce, a last layer that is not Detect, or an
                activation outside the allow-list.
        """
        if not self.layers:
            raise ValueError("a model spec needs at least one layer (the Detect head)")
        if canonical_activation(self.activation) != self.activation:
            raise ValueError(f"activation {self.activation!r} is not in canonical form "
                             f"({canonical_activation(self.activation)!r})")
        for index, layer in enumerate(self.layers):
            try:
                block_type(layer.module)
            except ValueError as error:
                raise ValueError(f"layer {index}: {error}") from None
            if not layer.sources:
                raise ValueError(f"layer {index} ({layer.module}) has no sources")
            for source in layer.sources:
                if source != INPUT and not 0 <= source < index:
                    raise ValueError(f"layer {index} ({layer.module}): source {source} is not an earlier layer "
                                     f"(allowed: 0..{index - 1}, or {INPUT} for the image)")
            if (layer.module == "Detect") != (index == len(self.layers) - 1):
                raise ValueError(f"layer {index}: Detect must be the last layer and only the last layer")
        channels: list[int] = []
        for index, layer in enumerate(self.layers):
            inputs = [self.in_channels if s == INPUT else channels[s] for s in layer.sources]
            expected = block_type(layer.module).expected_inputs(layer.params)
            produced = inputs if isinstance(expected, list) else sum(inputs)
            if expected is not None and (list(expected) if isinstance(expected, list) else expected) != produced:
                raise ValueError(f"layer {index} ({layer.module}) expects {expected} input channels "
                                 f"but its sources {list(layer.sources)} produce {produced}")
            channels.append(_layer_output_channels(layer, inputs, index))
        detect = self.layers[-1].params
        if detect["nc"] != self.nc or [list(a) for a in self.anchors] != [list(a) for a in detect["anchors"]]:
            raise ValueError("the Detect layer's nc/anchors disagree with the spec's nc/anchors")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (ints, floats, bools, strings, lists, dicts only)."""
        data = {"format": SPEC_FORMAT, "nc": self.nc, "in_channels": self.in_channels,
                "anchors": [list(a) for a in self.anchors],
                "layers": [layer.to_dict() for layer in self.layers]}
        if self.activation != DEFAULT_ACTIVATION:  # absent means SiLU, as in every file written before the key
            data["activation"] = self.activation
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a missing key or an unknown format version.
        """
        missing = [key for key in ("format", "nc", "anchors", "layers") if key not in data]
        if missing:
            raise ValueError(f"model spec dict lacks {missing}; expected keys format, nc, anchors, layers "
                             f"(in_channels optional), as written by ModelSpec.to_dict()")
        if data["format"] != SPEC_FORMAT:
            raise ValueError(f"model spec format {data['format']!r} is not supported (this version reads {SPEC_FORMAT})")
        return cls(layers=tuple(LayerSpec.from_dict(layer) for layer in data["layers"]), nc=int(data["nc"]),
                   anchors=tuple(tuple(a) for a in data["anchors"]), in_channels=int(data.get("in_channels", 3)),
                   activation=str(data.get("activation", DEFAULT_ACTIVATION)))


def _layer_output_channels(layer: LayerSpec, inputs: list[int], index: int) -> int:
    try:
        return block_type(layer.module).output_channels(layer.params, inputs)
    except ValueError as error:
        raise ValueError(f"layer {index} ({layer.module}): {error}") from None
