"""Every block a model yaml may name, described once (graph side).

A :class:`BlockType` says, for one spec module name, everything the graph needs: how a yaml row
becomes the block's keyword arguments, the module that builds it, its output width and stride, how
new input widths are written into it, and the ultralytics class it is pickled as. The yaml parser,
:class:`~yolo_slim.models.spec.ModelSpec`, the network builder, the ultralytics writer and the safe
checkpoint loader all read this table and nothing else.

The slimming side of each block (which channels couple, how a plan resizes it) is registered
against the same names in :mod:`yolo_slim.slim.rules`; ``tests/test_block_registry.py`` fails when a
block has one half and not the other. A block with no slimming rule is still built, trained and
exported: the slimming leaves it whole (its inputs and outputs are frozen groups).

Adding a block of your own (a few lines; ``tests/test_block_registry.py`` runs this example)::

    class Twin(nn.Module):  # two Conv units side by side, concatenated
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.a = Conv(in_channels, out_channels // 2, 3)
            self.b = Conv(in_channels, out_channels - out_channels // 2, 1)
        def forward(self, x):
            return torch.cat((self.a(x), self.b(x)), 1)

    register_block(BlockType("Twin", Twin, parse=lambda row: {"in_channels": row.in_channels,
                                                              "out_channels": row.width(row.args[0])}))

and a yaml row ``[-1, 1, Twin, [128]]`` builds it (with ``row.width`` applying the width multiple as
ultralytics does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from yolo_slim.models import blocks
from yolo_slim.models.detect import Detect

Params = dict[str, Any]


@dataclass(frozen=True)
class Row:
    """What a row parser sees: one yaml row, its inputs' widths and the yaml's multiples.

    Attributes:
        inputs: Channel count of each source.
        args: The row's arguments, with ``nc``, ``anchors`` and ``None`` substituted.
        repeats: The row's ``number`` after the depth multiple (only blocks with ``own_depth`` see
            anything but 1: for the others the parser builds repeated copies itself).
        nc: Number of classes.
        anchors: The anchors (per-level pixel lists) or a count of anchors per level.
        width_multiple: The yaml's width multiple.
    """

    inputs: list[int]
    args: list[Any]
    repeats: int
    nc: int
    anchors: tuple[tuple[float, ...], ...] | int
    width_multiple: float

    @property
    def in_channels(self) -> int:
        """The single input's width (a block that takes one input)."""
        if len(self.inputs) != 1:
            raise ValueError(f"takes one input, got {len(self.inputs)}")
        return self.inputs[0]

    @property
    def anchors_per_level(self) -> int:
        return self.anchors if isinstance(self.anchors, int) else len(self.anchors[0]) // 2

    def width(self, channels: int) -> int:
        """ultralytics' make_divisible: a yaml width times the multiple, rounded up to a multiple of 8;
        a width equal to the head's output count (na * (nc + 5)) is left alone, as ultralytics does."""
        if channels == self.anchors_per_level * (self.nc + 5):
            return channels
        return math.ceil(channels * self.width_multiple / 8) * 8

    def arg(self, position: int, default: Any) -> Any:
        return self.args[position] if len(self.args) > position else default


def _out_channels(params: Mapping[str, Any], inputs: list[int]) -> int:
    return int(params["out_channels"])


def _pass_through(params: Mapping[str, Any], inputs: list[int]) -> int:
    if len(inputs) != 1:
        raise ValueError(f"takes one input, got {len(inputs)}")
    return inputs[0]


def _unit_stride(params: Mapping[str, Any]) -> float:
    return 1.0


def _set_in_channels(params: Mapping[str, Any], inputs: list[int]) -> Params:
    updated = dict(params)
    if isinstance(params.get("in_channels"), list):  # one entry per input (Detect)
        updated["in_channels"] = list(inputs)
    elif "in_channels" in params:
        updated["in_channels"] = sum(inputs)
    return updated


def _expected_inputs(params: Mapping[str, Any]) -> int | list[int] | None:
    return params.get("in_channels")


@dataclass(frozen=True)
class BlockType:
    """The graph-side description of one block.

    Attributes:
        name: The spec's module name (``"C3"``); also what yaml rows call it unless ``yaml_names`` says.
        module: The ``nn.Module`` class (or factory) built as ``module(**params)``.
        parse: yaml row -> the block's keyword arguments, every width spelled out.
        output_channels: (params, input widths) -> output width; default ``params["out_channels"]``.
        stride: params -> how much the block downsamples (2 halves H and W; 0.5 doubles them).
        yaml_names: Names yaml rows may use (the first is the one written back); default ``(name,)``.
        own_depth: The row's ``number`` is the block's own depth (C3 and kin), not a count of copies.
        ultralytics_class: ``(module, class)`` it is pickled as in ultralytics checkpoints; ``None`` for a
            torch class (pickled as itself) or a block ultralytics does not have.
        yaml_args: params -> the row's ``(number, args)`` at multiples 1, or ``None`` when no row
            describes these widths (a pruned C3); ``None`` for blocks that cannot be written.
        set_inputs: (params, new input widths) -> params with the input widths rewritten.
        expected_inputs: params -> the input width the block was built for (a list per input, or ``None``
            when it takes whatever arrives); checked against its sources by ``ModelSpec.validate``.
        build: (params, strides of the inputs) -> module, for blocks that need more than their params.
        inner_classes: Classes used only inside this block, with their ultralytics ``(module, class)``.
        ultralytics_attributes: module -> the plain attributes ultralytics' class has and ours names
            differently (Bottleneck's ``add``), set on the copy that is pickled.
    """

    name: str
    module: Callable[..., nn.Module]
    parse: Callable[[Row], Params]
    output_channels: Callable[[Mapping[str, Any], list[int]], int] = _out_channels
    stride: Callable[[Mapping[str, Any]], float] = _unit_stride
    yaml_names: tuple[str, ...] = ()
    own_depth: bool = False
    ultralytics_class: tuple[str, str] | None = None
    yaml_args: Callable[[Mapping[str, Any]], tuple[int, list[Any]] | None] | None = None
    set_inputs: Callable[[Mapping[str, Any], list[int]], Params] = _set_in_channels
    expected_inputs: Callable[[Mapping[str, Any]], int | list[int] | None] = _expected_inputs
    build: Callable[[Mapping[str, Any], list[float]], nn.Module] | None = None
    inner_classes: Mapping[type[nn.Module], tuple[str, str]] = field(default_factory=dict)
    ultralytics_attributes: Callable[[nn.Module], Params] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.yaml_names or (self.name,)

    def make(self, params: Mapping[str, Any], input_strides: list[float]) -> nn.Module:
        """The module for one layer."""
        if self.build is not None:
            return self.build(params, input_strides)
        return self.module(**params)


# ---------------------------------------------------------------------------------------- row helpers
def _as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, found {value!r}")
    return value


def _keyword_args(row: Row, block: str, names: tuple[str, ...], defaults: Params) -> Params:
    """``[out_channels, *positional]`` in the order of ultralytics' constructor, onto ``defaults``."""
    if len(row.args) - 1 > len(names):
        raise ValueError(f"{block} takes at most [out_channels, {', '.join(names)}], got {row.args}")
    params = {"in_channels": row.in_channels, "out_channels": row.width(row.args[0]), **defaults}
    params.update(zip(names, row.args[1:]))
    if "act" in params:
        params["act"] = _as_bool(params["act"], "act")
    return params


def _positional(params: Mapping[str, Any], names: tuple[str, ...]) -> list[Any]:
    return [params["out_channels"], *(params[name] for name in names if name in params)]


# ---------------------------------------------------------------------------------------- Conv, Focus
_CONV_ARGS = ("kernel_size", "stride", "padding", "groups", "dilation", "act")  # ultralytics' positional order
_FOCUS_ARGS = ("kernel_size", "stride", "padding", "groups", "act")


def _parse_conv(row: Row) -> Params:
    return _keyword_args(row, "Conv", _CONV_ARGS, {"kernel_size": 1, "stride": 1, "padding": None, "groups": 1,
                                                   "dilation": 1, "act": True})


def _parse_focus(row: Row) -> Params:
    return _keyword_args(row, "Focus", _FOCUS_ARGS, {"kernel_size": 1, "stride": 1, "padding": None, "groups": 1,
                                                     "act": True})


# ---------------------------------------------------------------------------------------- Bottleneck, C3
def _parse_bottleneck(row: Row) -> Params:
    in_channels, out = row.in_channels, row.width(row.args[0])
    shortcut = _as_bool(row.arg(1, True), "shortcut")
    return {"in_channels": in_channels, "hidden_channels": int(out * float(row.arg(3, 0.5))), "out_channels": out,
            # ultralytics only adds the residual when the widths allow it
            "shortcut": shortcut and in_channels == out, "groups": int(row.arg(2, 1))}


def _bottleneck_row(params: Mapping[str, Any]) -> tuple[int, list[Any]]:
    return 1, [params["out_channels"], params["shortcut"], params["groups"],
               params["hidden_channels"] / params["out_channels"]]


def _csp_widths(row: Row) -> tuple[int, int, int]:
    """(in, hidden, out) of a C3-shaped row: ``[out_channels, shortcut, groups, expansion]``."""
    out = row.width(row.args[0])
    return row.in_channels, int(out * float(row.arg(3, 0.5))), out


def _parse_c3(row: Row) -> Params:
    in_channels, hidden, out = _csp_widths(row)
    return {"in_channels": in_channels, "cv1_channels": hidden, "cv2_channels": hidden,
            "bottlenecks": [[hidden, hidden] for _ in range(row.repeats)], "out_channels": out,
            "shortcut": _as_bool(row.arg(1, True), "shortcut"), "groups": int(row.arg(2, 1))}


def _c3_row(params: Mapping[str, Any]) -> tuple[int, list[Any]] | None:
    hidden = params["cv1_channels"]
    if params["cv2_channels"] != hidden or any(pair != [hidden, hidden] for pair in params["bottlenecks"]):
        return None
    return max(len(params["bottlenecks"]), 1), [params["out_channels"], params["shortcut"], params["groups"],
                                                hidden / params["out_channels"]]


def _parse_c3_ghost(row: Row) -> Params:
    # The row's shortcut and groups are accepted and, as in ultralytics, unused: a GhostBottleneck at
    # stride 1 always adds its input.
    in_channels, hidden, out = _csp_widths(row)
    return {"in_channels": in_channels, "cv1_channels": hidden, "cv2_channels": hidden, "out_channels": out,
            "depth": row.repeats}


def _parse_c3_transformer(row: Row) -> Params:
    in_channels, hidden, out = _csp_widths(row)
    return {"in_channels": in_channels, "cv1_channels": hidden, "cv2_channels": hidden, "out_channels": out,
            "heads": 4, "layers": row.repeats}  # ultralytics' C3TR fixes 4 heads


def _csp_row(depth_key: str) -> Callable[[Mapping[str, Any]], tuple[int, list[Any]] | None]:
    def write(params: Mapping[str, Any]) -> tuple[int, list[Any]] | None:
        hidden = params["cv1_channels"]
        if params["cv2_channels"] != hidden:
            return None
        return params[depth_key], [params["out_channels"], True, 1, hidden / params["out_channels"]]
    return write


# ---------------------------------------------------------------------------------------- Ghost
def _parse_ghost_conv(row: Row) -> Params:
    return _keyword_args(row, "GhostConv", ("kernel_size", "stride", "groups", "act"),
                         {"kernel_size": 1, "stride": 1, "groups": 1, "act": True})


def _parse_ghost_bottleneck(row: Row) -> Params:
    params = _keyword_args(row, "GhostBottleneck", ("kernel_size", "stride"), {"kernel_size": 3, "stride": 1})
    if params["stride"] not in (1, 2):
        raise ValueError(f"GhostBottleneck's stride must be 1 or 2, found {params['stride']}")
    return params


# ---------------------------------------------------------------------------------------- pooling
def _parse_spp(row: Row) -> Params:
    in_channels = row.in_channels
    return {"in_channels": in_channels, "hidden_channels": in_channels // 2, "out_channels": row.width(row.args[0]),
            "kernel_sizes": [int(k) for k in row.arg(1, (5, 9, 13))]}


def _parse_sppf(row: Row) -> Params:
    in_channels = row.in_channels
    return {"in_channels": in_channels, "hidden_channels": in_channels // 2, "out_channels": row.width(row.args[0]),
            "kernel_size": int(row.arg(1, 5))}


def _parse_max_pool(row: Row) -> Params:
    _pass_through({}, row.inputs)
    kernel = int(row.arg(0, 2))
    stride = row.arg(1, None)
    return {"kernel_size": kernel, "stride": kernel if stride is None else int(stride), "padding": int(row.arg(2, 0))}


def _parse_zero_pad(row: Row) -> Params:
    _pass_through({}, row.inputs)
    padding = row.arg(0, 0)
    if isinstance(padding, int) and not isinstance(padding, bool):
        return {"padding": padding}
    if isinstance(padding, list) and len(padding) == 4 and all(isinstance(p, int) for p in padding):
        return {"padding": [int(p) for p in padding]}
    raise ValueError(f"ZeroPad2d takes an int or [left, right, top, bottom], got {padding!r}")


# ---------------------------------------------------------------------------------------- plumbing
def _parse_upsample(row: Row) -> Params:
    _pass_through({}, row.inputs)
    size, scale, mode = (list(row.args) + [None, 2, "nearest"][len(row.args):])[:3]
    if size is not None or scale is None:
        raise ValueError(f"Upsample needs [None, scale_factor, mode] (a fixed output size is not supported), "
                         f"got {row.args}")
    return {"scale_factor": scale, "mode": str(mode)}


def _parse_concat(row: Row) -> Params:
    dimension = int(row.arg(0, 1))
    if dimension != 1:
        raise ValueError(f"Concat must join channels (dimension 1), got {dimension}")
    return {"dimension": 1}


def placeholder_anchors(count: int, levels: int) -> list[list[int]]:
    """What ultralytics' parse_model builds for ``anchors: N``: ``0, 1, ..., 2N-1`` on every level, until
    AutoAnchor replaces them (kept equal to theirs so that both builds hold the same buffer)."""
    return [list(range(2 * count)) for _ in range(levels)]


def _parse_detect(row: Row) -> Params:
    nc = int(row.arg(0, row.nc))
    given = row.arg(1, row.anchors)
    yaml_anchors = row.anchors if isinstance(row.anchors, int) else [list(a) for a in row.anchors]
    if nc != row.nc or given != yaml_anchors:
        raise ValueError("Detect's nc and anchors must be the yaml's own (write them as `nc` and `anchors`)")
    anchors = placeholder_anchors(given, len(row.inputs)) if isinstance(given, int) else given
    if len(anchors) != len(row.inputs):
        raise ValueError(f"Detect has {len(row.inputs)} inputs but {len(anchors)} anchor levels")
    return {"nc": nc, "anchors": [list(a) for a in anchors], "in_channels": list(row.inputs)}


def _detect_outputs(params: Mapping[str, Any], inputs: list[int]) -> int:
    # Detect's "width" is its summed outputs: na * (nc + 5) channels per level.
    anchors = params["anchors"]
    return len(anchors) * (len(anchors[0]) // 2) * (params["nc"] + 5)


def _stride_param(params: Mapping[str, Any]) -> float:
    return float(params.get("stride", 1))


_BUILTIN: tuple[BlockType, ...] = (
    BlockType("Conv", blocks.Conv, _parse_conv, stride=_stride_param, ultralytics_class=("models.common", "Conv"),
              yaml_args=lambda p: (1, _positional(p, _CONV_ARGS))),
    BlockType("Focus", blocks.Focus, _parse_focus,
              stride=lambda p: 2.0 * float(p.get("stride", 1)),  # space-to-depth halves H and W before its conv
              ultralytics_class=("models.common", "Focus"), yaml_args=lambda p: (1, _positional(p, _FOCUS_ARGS))),
    BlockType("Bottleneck", blocks.Bottleneck, _parse_bottleneck, ultralytics_class=("models.common", "Bottleneck"),
              yaml_args=_bottleneck_row, ultralytics_attributes=lambda m: {"add": m.shortcut}),
    BlockType("C3", blocks.C3, _parse_c3, own_depth=True, ultralytics_class=("models.common", "C3"),
              yaml_args=_c3_row),
    BlockType("C3Ghost", blocks.C3Ghost, _parse_c3_ghost, own_depth=True,
              ultralytics_class=("models.common", "C3Ghost"), yaml_args=_csp_row("depth")),
    BlockType("C3TR", blocks.C3TR, _parse_c3_transformer, own_depth=True,
              ultralytics_class=("models.common", "C3TR"), yaml_args=_csp_row("layers"),
              inner_classes={blocks.TransformerBlock: ("models.common", "TransformerBlock"),
                             blocks.TransformerLayer: ("models.common", "TransformerLayer")}),
    BlockType("GhostConv", blocks.GhostConv, _parse_ghost_conv, stride=_stride_param,
              ultralytics_class=("models.common", "GhostConv"),
              yaml_args=lambda p: (1, _positional(p, ("kernel_size", "stride", "groups", "act")))),
    BlockType("GhostBottleneck", blocks.GhostBottleneck, _parse_ghost_bottleneck, stride=_stride_param,
              ultralytics_class=("models.common", "GhostBottleneck"),
              yaml_args=lambda p: (1, _positional(p, ("kernel_size", "stride")))),
    BlockType("SPP", blocks.SPP, _parse_spp, ultralytics_class=("models.common", "SPP"),
              yaml_args=lambda p: (1, [p["out_channels"], list(p["kernel_sizes"])])),
    BlockType("SPPF", blocks.SPPF, _parse_sppf, ultralytics_class=("models.common", "SPPF"),
              yaml_args=lambda p: (1, [p["out_channels"], p["kernel_size"]])),
    BlockType("MaxPool2d", nn.MaxPool2d, _parse_max_pool, output_channels=_pass_through, stride=_stride_param,
              yaml_names=("nn.MaxPool2d", "MaxPool2d"),
              yaml_args=lambda p: (1, [p["kernel_size"], p["stride"], p["padding"]])),
    BlockType("ZeroPad2d", nn.ZeroPad2d, _parse_zero_pad, output_channels=_pass_through,
              yaml_names=("nn.ZeroPad2d", "ZeroPad2d"), yaml_args=lambda p: (1, [p["padding"]])),
    BlockType("Upsample", nn.Upsample, _parse_upsample, output_channels=_pass_through,
              stride=lambda p: 1.0 / float(p["scale_factor"]), yaml_names=("nn.Upsample", "Upsample"),
              yaml_args=lambda p: (1, [None, p["scale_factor"], p["mode"]])),
    BlockType("Concat", blocks.Concat, _parse_concat, output_channels=lambda p, inputs: sum(inputs),
              ultralytics_class=("models.common", "Concat"), yaml_args=lambda p: (1, [p["dimension"]]),
              ultralytics_attributes=lambda m: {"d": m.dimension}),
    BlockType("Detect", Detect, _parse_detect, output_channels=_detect_outputs,
              ultralytics_class=("models.yolo", "Detect"), yaml_args=lambda p: (1, ["nc", "anchors"]),
              build=lambda p, strides: Detect(**p, strides=strides)),
)


# ---------------------------------------------------------------------------------------- Repeat
REPEAT = "Repeat"
"""The spec module of a row with ``number`` > 1 for a block without its own depth: ``number`` copies
in an ``nn.Sequential``, as ultralytics builds them (keys ``model.4.0.cv1...``). Its params are
``{"module": <block name>, "copies": [params of each copy]}``, so a pruned copy may differ from the rest."""


def _copies(params: Mapping[str, Any]) -> tuple[BlockType, list[Params]]:
    return block_type(params["module"]), list(params["copies"])


def _repeat_outputs(params: Mapping[str, Any], inputs: list[int]) -> int:
    inner, copies = _copies(params)
    for copy_params in copies:
        inputs = [inner.output_channels(copy_params, inputs)]
    return inputs[0]


def _repeat_stride(params: Mapping[str, Any]) -> float:
    inner, copies = _copies(params)
    return math.prod(inner.stride(copy_params) for copy_params in copies)


def _repeat_set_inputs(params: Mapping[str, Any], inputs: list[int]) -> Params:
    inner, copies = _copies(params)
    updated = []
    for copy_params in copies:
        copy_params = inner.set_inputs(copy_params, inputs)
        updated.append(copy_params)
        inputs = [inner.output_channels(copy_params, inputs)]
    return {**params, "copies": updated}


def _repeat_row(params: Mapping[str, Any]) -> tuple[int, list[Any]] | None:
    inner, copies = _copies(params)
    if inner.yaml_args is None or any(copy_params != copies[0] for copy_params in copies):
        return None
    written = inner.yaml_args(copies[0])
    return None if written is None or written[0] != 1 else (len(copies), written[1])


def _build_repeat(params: Mapping[str, Any], input_strides: list[float]) -> nn.Module:
    inner, copies = _copies(params)
    modules = []
    for copy_params in copies:
        modules.append(inner.make(copy_params, input_strides))
        input_strides = [s * inner.stride(copy_params) for s in input_strides]
    return nn.Sequential(*modules)


def _unparsable(row: Row) -> Params:
    raise ValueError("Repeat is built from a row's number, not named in a yaml")


_REPEAT_TYPE = BlockType(REPEAT, nn.Sequential, _unparsable, output_channels=_repeat_outputs, stride=_repeat_stride,
                         yaml_names=(), yaml_args=_repeat_row, set_inputs=_repeat_set_inputs,
                         expected_inputs=lambda p: _copies(p)[1][0].get("in_channels"), build=_build_repeat)


# ---------------------------------------------------------------------------------------- the table
_REGISTRY: dict[str, BlockType] = {block.name: block for block in (*_BUILTIN, _REPEAT_TYPE)}


def register_block(block: BlockType, replace: bool = False) -> BlockType:
    """Make ``block`` buildable from yaml rows (under each of its ``names``) and from specs.

    Register its slimming rule too (:func:`yolo_slim.slim.rules.register_slim_rule`), or the slimming
    leaves it whole. Returns ``block``.

    Raises:
        ValueError: a block or yaml name already taken, unless ``replace``.
    """
    if not replace:
        taken = sorted(name for name in {block.name, *block.names} if name in _REGISTRY or name in yaml_names())
        if taken:
            raise ValueError(f"block name(s) {taken} already registered; pass replace=True to redefine them")
    _REGISTRY[block.name] = block
    return block


def unregister_block(name: str) -> None:
    """Remove a block registered with :func:`register_block` (tests use it to clean up)."""
    if any(block.name == name for block in _BUILTIN) or name == REPEAT:
        raise ValueError(f"{name!r} is a built-in block and cannot be removed")
    _REGISTRY.pop(name, None)


def block_type(name: str) -> BlockType:
    """The description of spec module ``name``.

    Raises:
        ValueError: no such block; the message lists the registered ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown module {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def block_types() -> dict[str, BlockType]:
    """All registered blocks by spec module name (a copy)."""
    return dict(_REGISTRY)


def yaml_names() -> dict[str, BlockType]:
    """yaml module name -> block (``"nn.Upsample"`` and ``"Upsample"`` -> Upsample ...)."""
    return {name: block for block in _REGISTRY.values() for name in block.names if block.name != REPEAT}


def ultralytics_class(module_class: type[nn.Module]) -> tuple[tuple[str, str], Callable[[nn.Module], Params]] | None:
    """The ultralytics ``(module, class)`` our ``module_class`` is pickled as, and the attributes to add;
    ``None`` when it has none (torch's own classes are pickled as themselves)."""
    for block in _REGISTRY.values():
        if block.module is module_class and block.ultralytics_class is not None:
            return block.ultralytics_class, block.ultralytics_attributes or _no_attributes
        if module_class in block.inner_classes:
            return block.inner_classes[module_class], _no_attributes
    return None


def ultralytics_class_names() -> frozenset[str]:
    """Every ultralytics class name some registered block is written as (the safe loader allows these)."""
    return frozenset({block.ultralytics_class[1] for block in _REGISTRY.values() if block.ultralytics_class}
                     | {path[1] for block in _REGISTRY.values() for path in block.inner_classes.values()})


def _no_attributes(module: nn.Module) -> Params:
    return {}
