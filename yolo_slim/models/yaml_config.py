"""Read ultralytics YOLOv5 model yamls into a :class:`~yolo_slim.models.spec.ModelSpec`.

The yaml format: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and the rows of
``backbone`` + ``head``, each ``[from, number, module, args]``. Channel and depth arithmetic
follow ultralytics' ``parse_model`` exactly (that is what makes their weights fit):

* output channels ``c`` of a conv-like module become ``ceil(c * width_multiple / 8) * 8``;
* a C3 row's ``number`` becomes ``max(round(number * depth_multiple), 1)`` Bottlenecks
  (Python's round: ties go to even), and a ``number`` of 1 stays 1;
* a C3's hidden width is ``int(out_channels * e)`` (e = 0.5), an SPP/SPPF's is ``in_channels // 2``.

Module names resolve through the block registry (:mod:`yolo_slim.models.registry`, one entry per
block), never ``eval``; the strings ``nc`` and ``anchors`` in args stand for the yaml's values and
``None`` for null, as in ultralytics, and ``activation:`` names one of a short allow-list
(:mod:`yolo_slim.models.activations`). A row whose ``number`` (after the depth multiple) exceeds 1
holds that many copies of its block, except for C3 and kin, whose ``number`` is their own depth.
"""

from __future__ import annotations

import numbers
import copy
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from yolo_slim.models.activations import DEFAULT_ACTIVATION, canonical_activation
from yolo_slim.models.registry import REPEAT, Row, yaml_names
from yolo_slim.models.spec import INPUT, LayerSpec, ModelSpec

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


def shipped_configs() -> list[str]:
    """Names of the model yamls shipped with yolo_slim (``yolov5s``, ``yolov5s-v5`` ...)."""
    folder = resources.files("yolo_slim.models") / "configs"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_model_yaml(cfg: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Return the yaml dict for a shipped name (``"yolov5s"``/``"yolov5s.yaml"``), a path or a dict.

    Raises:
        ValueError: ``cfg`` names neither an existing file nor a shipped config.
    """
    if isinstance(cfg, Mapping):
        return copy.deepcopy(dict(cfg))
    path = Path(cfg)
    if not path.is_file():
        name = path.name.removesuffix(".yaml").removesuffix(".yml")
        if path.parent != Path(".") or name not in shipped_configs():
            raise ValueError(f"model config {str(cfg)!r} is neither a file nor a shipped config; "
                             f"shipped: {', '.join(shipped_configs())}")
        text = (resources.files("yolo_slim.models") / "configs" / f"{name}.yaml").read_text()
    else:
        text = path.read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"model config {str(cfg)!r} is not a yaml mapping")
    return data


def parse_model_yaml(data: Mapping[str, Any], nc: int | None = None, in_channels: int = 3) -> ModelSpec:
    """Turn an ultralytics model yaml dict into a spec.

    Args:
        data: The yaml as a dict.
        nc: Number of classes; overrides the yaml's ``nc`` when given.
        in_channels: Channels of the input image.

    Raises:
        ValueError: a missing key, a malformed row, an unknown module, a bad ``from`` index or
            bad arguments; the message names the row.
    """
    missing = [key for key in REQUIRED_KEYS if key not in data and not (key == "nc" and nc is not None)]
    if missing:
        raise ValueError(f"model yaml lacks {', '.join(missing)}; required keys: {', '.join(REQUIRED_KEYS)}")
    try:
        activation = canonical_activation(data.get("activation") or DEFAULT_ACTIVATION)
    except ValueError as error:
        raise ValueError(f"model yaml: {error}") from None
    classes = data["nc"] if nc is None else nc
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
        raise ValueError(f"nc must be an int >= 1 (the number of classes), found {classes!r}")
    classes = int(classes)
    anchors = _anchor_count(data["anchors"]) if _is_count(data["anchors"]) else _parse_anchors(data["anchors"])
    depth_multiple, width_multiple = float(data["depth_multiple"]), float(data["width_multiple"])
    rows = list(data["backbone"] or []) + list(data["head"] or [])
    if not rows:
        raise ValueError("model yaml has no rows in backbone + head")
    known = yaml_names()
    channels: list[int] = []
    layers: list[LayerSpec] = []
    for index, row in enumerate(rows):
        sources, number, name, args = _split_row(index, row, known)
        block = known[name]
        inputs = [in_channels if s == INPUT else channels[s] for s in sources]
        # ultralytics' depth gain, for every module: a number of 1 stays 1, Python's round otherwise.
        repeats = max(round(number * depth_multiple), 1) if number > 1 else number
        try:
            parsed = Row(inputs=inputs, args=_substitute(args, classes, anchors),
                         repeats=repeats if block.own_depth else 1, nc=classes, anchors=anchors,
                         width_multiple=width_multiple)
            module, params = block.name, block.parse(parsed)
            out = block.output_channels(params, inputs)
            if repeats > 1 and not block.own_depth:
                if len(inputs) != 1 or out != inputs[0]:
                    # ultralytics builds every copy with the row's own arguments, so a chain whose first copy
                    # changes the width only runs when in == out; refused here rather than built differently.
                    raise ValueError(f"number {number} repeats {name}, which needs one input and as many output "
                                     f"channels as input channels (found {inputs} -> {out})")
                module, params = REPEAT, {"module": block.name, "copies": [copy.deepcopy(params)
                                                                             for _ in range(repeats)]}
        except (TypeError, IndexError, ValueError, KeyError) as error:
            raise ValueError(f"row {index} {row!r}: bad arguments for {name}: {error}") from error
        layers.append(LayerSpec(sources=tuple(sources), module=module, params=params))
        channels.append(out)
    if layers[-1].module != "Detect":
        raise ValueError(f"the last row must be Detect, found {rows[-1]!r}")
    if isinstance(anchors, int):
        log.warning("model yaml gives a count of anchors (%d per level), not their sizes: placeholder anchors "
                    "until AutoAnchor fits them to the data at the start of `train`", anchors)
    spec_anchors = tuple(tuple(level) for level in layers[-1].params["anchors"])
    return ModelSpec(layers=tuple(layers), nc=classes, anchors=spec_anchors, in_channels=in_channels,
                     activation=activation)


def _is_count(anchors: Any) -> bool:
    return isinstance(anchors, int) and not isinstance(anchors, bool)


def _anchor_count(anchors: int) -> int:
    if anchors < 1:
        raise ValueError(f"model yaml: an anchor count must be >= 1, found {anchors}")
    return anchors


def _parse_anchors(anchors: Any) -> tuple[tuple[float, ...], ...]:
    if not isinstance(anchors, list) or not anchors:
        raise ValueError(f"model yaml: anchors must be a list of per-level [w, h, w, h, ...] lists (pixels) or a "
                         f"count of anchors per level (fitted by AutoAnchor), found {anchors!r}")
    levels = []
    for level in anchors:
        if not isinstance(level, list) or len(level) < 2 or len(level) % 2:
            raise ValueError(f"model yaml: each anchors entry needs an even number of values (w, h pairs), "
                             f"found {level!r}")
        levels.append(tuple(float(v) if not float(v).is_integer() else int(v) for v in level))
    if len({len(level) for level in levels}) != 1:
        raise ValueError(f"model yaml: every level needs the same number of anchors, found {anchors!r}")
    return tuple(levels)


def _split_row(index: int, row: Any, known: Mapping[str, Any]) -> tuple[list[int], int, str, list[Any]]:
    if not isinstance(row, list) or len(row) != 4:
        raise ValueError(f"row {index}: expected [from, number, module, args], found {row!r}")
    source, repeats, module, args = row
    if module not in known:
        raise ValueError(f"row {index} {row!r}: unknown module {module!r}; allowed: {', '.join(sorted(known))} "
                         f"(register others with yolo_slim.models.register_block)")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"row {index} {row!r}: number must be a positive int, found {repeats!r}")
    if args is None:
        args = []
    if not isinstance(args, list):
        raise ValueError(f"row {index} {row!r}: args must be a list, found {args!r}")
    raw_sources = source if isinstance(source, list) else [source]
    sources = []
    for raw in raw_sources:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ValueError(f"row {index} {row!r}: from must be an int or a list of ints, found {source!r}")
        # Negative indices count back from this row (-1 = previous layer; the image for row 0).
        absolute = index + raw if raw < 0 else raw
        if index == 0 and raw == -1:
            absolute = INPUT
        elif not 0 <= absolute < index:
            raise ValueError(f"row {index} {row!r}: from index {raw} does not name an earlier layer "
                             f"(allowed: -{index}..-1 or 0..{index - 1})")
        sources.append(absolute)
    return sources, repeats, module, args


def _substitute(args: list[Any], nc: int, anchors: tuple[tuple[float, ...], ...] | int) -> list[Any]:
    """Replace the yaml's symbolic arguments: ``nc``, ``anchors`` and ``None``."""
    symbols = {"nc": nc, "anchors": anchors if isinstance(anchors, int) else [list(a) for a in anchors], "None": None}
    return [symbols[a] if isinstance(a, str) and a in symbols else a for a in args]
