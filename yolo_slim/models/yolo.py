"""The YOLOv5 network, built from a :class:`~yolo_slim.models.spec.ModelSpec`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_slim.models.activations import DEFAULT_ACTIVATION, make_activation
from yolo_slim.models.blocks import Conv
from yolo_slim.models.detect import Detect
from yolo_slim.models.registry import block_type
from yolo_slim.models.spec import INPUT, ModelSpec
from yolo_slim.models.yaml_config import load_model_yaml, parse_model_yaml


class YOLOv5(nn.Module):
    """YOLOv5 whose state dict is interchangeable with ultralytics' ``DetectionModel``.

    The layers live in ``self.model`` (keys ``model.0.conv.weight`` ... ``model.24.anchors``), the
    wiring in ``self.spec``. Eval mode returns decoded predictions (B, N, 5 + nc): ``cx, cy, w, h``
    in input pixels, objectness, class probabilities. Training mode returns the raw maps
    (B, na, ny, nx, 5 + nc) per detection level, which the loss consumes.

    Args:
        cfg: A shipped config name (``"yolov5s"``, ``"yolov5s.yaml"``, ``"yolov5s-v5"``), a path to
            an ultralytics model yaml, a yaml dict, or a :class:`ModelSpec`.
        nc: Number of classes, overriding the yaml's.
        names: Class names (default ``"0"``, ``"1"``, ...).
        in_channels: Image channels.

    Example:
        >>> model = YOLOv5("yolov5n", nc=3).eval()
        >>> model(torch.zeros(1, 3, 64, 96)).shape
        torch.Size([1, 378, 8])
    """

    def __init__(self, cfg: str | Path | Mapping[str, Any] | ModelSpec = "yolov5s.yaml", nc: int | None = None,
                 names: Sequence[str] | None = None, in_channels: int = 3) -> None:
        super().__init__()
        if isinstance(cfg, ModelSpec):
            if nc is not None and nc != cfg.nc:
                raise ValueError(f"nc={nc} disagrees with the spec's nc={cfg.nc}; change the spec instead")
            spec = cfg
        else:
            spec = parse_model_yaml(load_model_yaml(cfg), nc=nc, in_channels=in_channels)
        strides = spec.downsampling()  # also checks that every Concat joins maps of one resolution
        self._spec = spec
        self._largest_stride = int(max(strides))
        self.model = nn.ModuleList(block_type(layer.module).make(layer.params, [strides[s] for s in layer.sources
                                                                                if s != INPUT] or [1.0])
                                   for layer in spec.layers)
        if spec.activation != DEFAULT_ACTIVATION:
            # As ultralytics' Conv.default_act, but per network: every Conv unit built with act=True.
            for unit in self.model.modules():
                if isinstance(unit, Conv) and not isinstance(unit.act, nn.Identity):
                    unit.act = make_activation(spec.activation)
        # Which outputs must be kept during forward: those read by a later layer other than the next.
        self._sources = [layer.sources for layer in spec.layers]
        self._kept = {s for i, layer in enumerate(spec.layers) for s in layer.sources if s not in (INPUT, i - 1)}
        self.names = [str(i) for i in range(spec.nc)] if names is None else [str(n) for n in names]
        if len(self.names) != spec.nc:
            raise ValueError(f"names has {len(self.names)} entries but the model has nc={spec.nc} classes")
        # How this architecture was reached: the pruning plans applied to it, oldest first, as plain
        # data (``PruningPlan.to_dict``). Kept on the network, its one owner, so that every copy
        # (EMA, checkpoint, compacted model) carries the same history.
        self.pruning_history: list[dict[str, Any]] = []

    @classmethod
    def from_spec(cls, spec: ModelSpec | Mapping[str, Any], names: Sequence[str] | None = None,
                  pruning_history: Sequence[Mapping[str, Any]] = ()) -> YOLOv5:
        """Build a network from a spec or its dict form (as stored in checkpoints)."""
        network = cls(spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(dict(spec)), names=names)
        network.pruning_history = [dict(plan) for plan in pruning_history]
        return network

    @property
    def spec(self) -> ModelSpec:
        """The architecture as plain data, with the anchors this network currently holds."""
        detect = self.detect
        anchors_px = (detect.anchors * detect.stride.view(-1, 1, 1)).reshape(detect.nl, -1).tolist()
        anchors = tuple(tuple(_tidy(v) for v in level) for level in anchors_px)
        if anchors == tuple(tuple(level) for level in self._spec.anchors):
            return self._spec
        layers = list(self._spec.layers)
        layers[-1] = dataclasses.replace(layers[-1], params={**layers[-1].params, "anchors": [list(a) for a in anchors]})
        return dataclasses.replace(self._spec, layers=tuple(layers), anchors=anchors)

    @property
    def detect(self) -> Detect:
        head = self.model[-1]
        assert isinstance(head, Detect)
        return head

    @property
    def nc(self) -> int:
        return self.detect.nc

    @property
    def stride(self) -> torch.Tensor:
        """Stride of each detection level, e.g. tensor([8., 16., 32.])."""
        return self.detect.stride

    def anchors_px(self) -> torch.Tensor:
        """The anchors in input pixels, (nl, na, 2), level by level as Detect holds them."""
        return self.detect.anchors * self.stride.view(-1, 1, 1)

    @torch.no_grad()
    def set_anchors(self, anchors_px: torch.Tensor) -> None:
        """Replace the anchors with ``anchors_px`` (nl * na, 2) pixels sorted by area: the smallest
        go to the finest level, as ultralytics assigns them (the spec follows, being read from Detect)."""
        detect = self.detect
        pairs = torch.as_tensor(anchors_px, dtype=detect.anchors.dtype).reshape(-1, 2)
        if pairs.shape[0] != detect.nl * detect.na:
            raise ValueError(f"set_anchors needs {detect.nl * detect.na} (w, h) pairs, got {pairs.shape[0]}")
        pairs = pairs[pairs.prod(dim=1).argsort()]
        levels = torch.empty_like(detect.anchors)
        for rank, level in enumerate(detect.stride.argsort().tolist()):  # finest stride first
            levels[level] = pairs[rank * detect.na:(rank + 1) * detect.na] / detect.stride[level]
        detect.anchors.copy_(levels.to(detect.anchors.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(B, C, H, W) with H and W multiples of the largest stride."""
        largest = self._largest_stride
        if x.shape[-1] % largest or x.shape[-2] % largest:
            raise ValueError(f"input height and width must be multiples of {largest}, got {tuple(x.shape[-2:])}")
        image = x
        outputs: dict[int, torch.Tensor] = {}
        for index, (layer, sources) in enumerate(zip(self.model, self._sources)):
            inputs = [image if s == INPUT else (x if s == index - 1 else outputs[s]) for s in sources]
            x = layer(inputs if len(sources) > 1 or isinstance(layer, Detect) else inputs[0])
            if index in self._kept:
                outputs[index] = x
        return x


def _tidy(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
