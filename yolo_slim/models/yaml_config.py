"""Read ultralytics YOLOv5 model yamls into a :class:`~yolo_slim.models.spec.ModelSpec`.

The yaml format: ``nc``, ``depth_multiple``, ``width_multiple``, ``anchors`` and the rows of
``backbone`` + ``head``, each ``[from, number, module, args]``. Channel and depth arithmetic
follow ultralytics' ``parse_model`` exactly (that is what makes their weights fit):

* output channels ``c`` of a conv-like module become ``ceil(c * width_multiple / 8) * 8``;
* a C3 row's ``number`` becomes ``max(round(number * depth_multiple), 1)`` Bottlenecks
  (Python's round: ties go to even), and a ``number`` of 1 stays 1;
* a C3's hidden width is ``int(out_channels * e)`` (e = 0.5), an SPP/SPPF's is ``in_channels // 2``.

Module names resolve through :data:`_ROW_PARSERS`, never ``eval``: the strings ``nc`` and
``anchors`` in args stand for the yaml's values and ``None`` for null, as in ultralytics.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

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
    activation = data.get("activation")
    if activation not in (None, "nn.SiLU()", "SiLU"):
        raise ValueError(f"model yaml: activation {activation!r} is not supported; only SiLU (the default)")
    context = _Context(
        nc=int(data["nc"]) if nc is None else int(nc),
        anchors=_anchor_count(data["anchors"]) if _is_count(data["anchors"]) else _parse_anchors(data["anchors"]),
        depth_multiple=float(data["depth_multiple"]),
        width_multiple=float(data["width_multiple"]),
    )
    rows = list(data["backbone"] or []) + list(data["head"] or [])
    if not rows:
        raise ValueError("model yaml has no rows in backbone + head")
    channels: list[int] = []
    layers: list[LayerSpec] = []
    for index, row in enumerate(rows):
        sources, repeats, module, args = _split_row(index, row)
        inputs = [in_channels if s == INPUT else channels[s] for s in sources]
        parser = _ROW_PARSERS[module]
        try:
            canonical, params, out = parser(context, inputs, repeats, _substitute(args, context))
        except (TypeError, IndexError, ValueError) as error:
            raise ValueError(f"row {index} {row!r}: bad arguments for {module}: {error}") from error
        layers.append(LayerSpec(sources=tuple(sources), module=canonical, params=params))
        channels.append(out)
    if layers[-1].module != "Detect":
        raise ValueError(f"the last row must be Detect, found {rows[-1]!r}")
    if isinstance(context.anchors, int):
        log.warning("model yaml gives a count of anchors (%d per level), not their sizes: placeholder anchors "
                    "until AutoAnchor fits them to the data at the start of `train`", context.anchors)
    anchors = tuple(tuple(level) for level in layers[-1].params["anchors"])
    return ModelSpec(layers=tuple(layers), nc=context.nc, anchors=anchors, in_channels=in_channels)


class _Context:
    def __init__(self, nc: int, anchors: tuple[tuple[float, ...], ...] | int, depth_multiple: float,
                 width_multiple: float) -> None:
        self.nc, self.anchors = nc, anchors
        self.depth_multiple, self.width_multiple = depth_multiple, width_multiple

    def width(self, channels: int) -> int:
        # ultralytics' make_divisible: round the scaled width up to a multiple of 8; a width equal to
        # the head's output count (na * (nc + 5)) is left alone, as ultralytics does.
        if channels == self.anchors_per_level * (self.nc + 5):
            return channels
        return math.ceil(channels * self.width_multiple / 8) * 8

    @property
    def anchors_per_level(self) -> int:
        return self.anchors if isinstance(self.anchors, int) else len(self.anchors[0]) // 2

    def depth(self, repeats: int) -> int:
        return max(round(repeats * self.depth_multiple), 1) if repeats > 1 else repeats


def _is_count(anchors: Any) -> bool:
    return isinstance(anchors, int) and not isinstance(anchors, bool)


def _anchor_count(anchors: int) -> int:
    if anchors < 1:
        raise ValueError(f"model yaml: an anchor count must be >= 1, found {anchors}")
    return anchors


def _placeholder_anchors(count: int, levels: int) -> tuple[tuple[float, ...], ...]:
    """What ultralytics' parse_model builds for ``anchors: N``: ``0, 1, ..., 2N-1`` on every level, until
    AutoAnchor replaces them (kept equal to theirs so that both builds hold the same buffer)."""
    return tuple(tuple(range(2 * count)) for _ in range(levels))


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


def _split_row(index: int, row: Any) -> tuple[list[int], int, str, list[Any]]:
    if not isinstance(row, list) or len(row) != 4:
        raise ValueError(f"row {index}: expected [from, number, module, args], found {row!r}")
    source, repeats, module, args = row
    if module not in _ROW_PARSERS:
        raise ValueError(f"row {index} {row!r}: unknown module {module!r}; allowed: {', '.join(sorted(_ROW_PARSERS))}")
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


def _substitute(args: list[Any], context: _Context) -> list[Any]:
    """Replace the yaml's symbolic arguments: ``nc``, ``anchors`` and ``None``."""
    anchors = context.anchors if isinstance(context.anchors, int) else [list(a) for a in context.anchors]
    symbols = {"nc": context.nc, "anchors": anchors, "None": None}
    return [symbols[a] if isinstance(a, str) and a in symbols else a for a in args]


def _single_input(inputs: list[int], module: str) -> int:
    if len(inputs) != 1:
        raise ValueError(f"{module} takes one input, got {len(inputs)}")
    return inputs[0]


def _no_repeats(repeats: int, module: str) -> None:
    # ultralytics would stack `number` copies in an nn.Sequential; no official layout does that for
    # these modules, and supporting it would complicate every pruned spec, so it is refused.
    if repeats != 1:
        raise ValueError(f"number > 1 is only supported for C3, found {repeats} for {module}")


def _as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, found {value!r}")
    return value


RowParser = Callable[[_Context, list[int], int, list[Any]], tuple[str, dict[str, Any], int]]


def _conv(context: _Context, inputs: list[int], repeats: int, args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "Conv")
    in_channels, out = _single_input(inputs, "Conv"), context.width(args[0])
    names = ("kernel_size", "stride", "padding", "groups", "dilation", "act")  # ultralytics' positional order
    if len(args) - 1 > len(names):
        raise ValueError(f"Conv takes at most [out_channels, {', '.join(names)}], got {args}")
    params: dict[str, Any] = {"in_channels": in_channels, "out_channels": out, "kernel_size": 1, "stride": 1,
                              "padding": None, "groups": 1, "dilation": 1, "act": True}
    params.update(zip(names, args[1:]))
    params["act"] = _as_bool(params["act"], "act")
    return "Conv", params, out


def _focus(context: _Context, inputs: list[int], repeats: int, args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "Focus")
    in_channels, out = _single_input(inputs, "Focus"), context.width(args[0])
    names = ("kernel_size", "stride", "padding", "groups", "act")
    if len(args) - 1 > len(names):
        raise ValueError(f"Focus takes at most [out_channels, {', '.join(names)}], got {args}")
    params: dict[str, Any] = {"in_channels": in_channels, "out_channels": out, "kernel_size": 1, "stride": 1,
                              "padding": None, "groups": 1, "act": True}
    params.update(zip(names, args[1:]))
    return "Focus", params, out


def _bottleneck(context: _Context, inputs: list[int], repeats: int,
                args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "Bottleneck")
    in_channels, out = _single_input(inputs, "Bottleneck"), context.width(args[0])
    shortcut = _as_bool(args[1], "shortcut") if len(args) > 1 else True
    groups = int(args[2]) if len(args) > 2 else 1
    expansion = float(args[3]) if len(args) > 3 else 0.5
    return "Bottleneck", {"in_channels": in_channels, "hidden_channels": int(out * expansion), "out_channels": out,
                          # ultralytics only adds the residual when the widths allow it
                          "shortcut": shortcut and in_channels == out, "groups": groups}, out


def _c3(context: _Context, inputs: list[int], repeats: int, args: list[Any]) -> tuple[str, dict[str, Any], int]:
    in_channels, out = _single_input(inputs, "C3"), context.width(args[0])
    shortcut = _as_bool(args[1], "shortcut") if len(args) > 1 else True
    groups = int(args[2]) if len(args) > 2 else 1
    hidden = int(out * (float(args[3]) if len(args) > 3 else 0.5))
    return "C3", {"in_channels": in_channels, "cv1_channels": hidden, "cv2_channels": hidden,
                  "bottlenecks": [[hidden, hidden] for _ in range(context.depth(repeats))],
                  "out_channels": out, "shortcut": shortcut, "groups": groups}, out


def _spp(context: _Context, inputs: list[int], repeats: int, args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "SPP")
    in_channels, out = _single_input(inputs, "SPP"), context.width(args[0])
    kernels = [int(k) for k in (args[1] if len(args) > 1 else (5, 9, 13))]
    return "SPP", {"in_channels": in_channels, "hidden_channels": in_channels // 2, "out_channels": out,
                   "kernel_sizes": kernels}, out


def _sppf(context: _Context, inputs: list[int], repeats: int, args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "SPPF")
    in_channels, out = _single_input(inputs, "SPPF"), context.width(args[0])
    kernel = int(args[1]) if len(args) > 1 else 5
    return "SPPF", {"in_channels": in_channels, "hidden_channels": in_channels // 2, "out_channels": out,
                    "kernel_size": kernel}, out


def _upsample(context: _Context, inputs: list[int], repeats: int,
              args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "Upsample")
    channels = _single_input(inputs, "Upsample")
    size, scale, mode = (list(args) + [None, 2, "nearest"][len(args):])[:3]
    if size is not None or scale is None:
        raise ValueError(f"Upsample needs [None, scale_factor, mode] (a fixed output size is not supported), got {args}")
    return "Upsample", {"scale_factor": scale, "mode": str(mode)}, channels


def _concat(context: _Context, inputs: list[int], repeats: int, args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "Concat")
    dimension = int(args[0]) if args else 1
    if dimension != 1:
        raise ValueError(f"Concat must join channels (dimension 1), got {dimension}")
    return "Concat", {"dimension": 1}, sum(inputs)


def _detect(context: _Context, inputs: list[int], repeats: int, args: list[Any]) -> tuple[str, dict[str, Any], int]:
    _no_repeats(repeats, "Detect")
    nc = int(args[0]) if args else context.nc
    given = args[1] if len(args) > 1 else context.anchors
    anchors = given if _is_count(given) else (_parse_anchors(given) if isinstance(given, list) else given)
    if nc != context.nc or anchors != context.anchors:
        raise ValueError("Detect's nc and anchors must be the yaml's own (write them as `nc` and `anchors`)")
    if isinstance(anchors, int):
        anchors = _placeholder_anchors(anchors, len(inputs))
    if len(anchors) != len(inputs):
        raise ValueError(f"Detect has {len(inputs)} inputs but {len(anchors)} anchor levels")
    return "Detect", {"nc": nc, "anchors": [list(a) for a in anchors], "in_channels": list(inputs)}, \
        len(anchors) * (len(anchors[0]) // 2) * (nc + 5)


_ROW_PARSERS: dict[str, RowParser] = {
    "Conv": _conv,
    "Focus": _focus,
    "Bottleneck": _bottleneck,
    "C3": _c3,
    "SPP": _spp,
    "SPPF": _sppf,
    "nn.Upsample": _upsample,
    "Upsample": _upsample,
    "Concat": _concat,
    "Detect": _detect,
}
"""yaml module name -> parser returning (canonical module, block params, output channels)."""
