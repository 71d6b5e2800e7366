"""Every block's slimming side, described once: how its channels couple, and how a plan resizes it.

A :class:`SlimRule` is registered against the same name as the block's graph-side description in
:mod:`yolo_slim.models.registry` (``tests/test_block_registry.py`` fails when a built-in block lacks
either half). Its two functions:

* ``trace(tracer, path, params, inputs) -> outputs``: records the block's producers and consumers on a
  :class:`~yolo_slim.slim.channels.ChannelTracer`, given the segments arriving from each source, and
  returns the segments of its output (``path`` is the block's module path, ``"4"`` or ``"4.0"``
  inside a repeated row);
* ``resize(params, path, width) -> params``: the block's params with each producer's output width
  replaced by ``width[producer path]`` (input widths are rewritten afterwards, from the sources).

A block with no rule, or registered with :data:`WHOLE`, is left whole: every channel of its inputs is
kept, its output is not a producer (never pruned), its weights are copied as they are, and the
graph's ``whole_layers`` (printed by the report) says so. A custom block becomes prunable when its params
hold the width of each convolution to prune (here ``PrunableTwin``: two Conv units side by side, of
``a_channels`` and ``b_channels`` outputs, concatenated) and it has a rule::

    def trace_twin(tracer, path, params, inputs):
        flat = [segment for source in inputs for segment in source]
        outputs = []
        for part in ("a", "b"):
            tracer.consume(f"{path}.{part}", flat)
            outputs.append(tracer.produce(f"{path}.{part}", params[f"{part}_channels"]))
        return outputs

    register_slim_rule("PrunableTwin", SlimRule(trace_twin, resize=lambda params, path, width: {
        **params, "a_channels": width[f"{path}.a"], "b_channels": width[f"{path}.b"]}))

(``tests/test_block_registry.py`` runs this one.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yolo_slim.models.registry import REPEAT, block_type
from yolo_slim.slim.channels import ChannelTracer, Segment

Params = dict[str, Any]
Inputs = list[list[Segment]]
TraceFunction = Callable[[ChannelTracer, str, Mapping[str, Any], Inputs], list[Segment]]
ResizeFunction = Callable[[Mapping[str, Any], str, Mapping[str, int]], Params]


def _unchanged(params: Mapping[str, Any], path: str, width: Mapping[str, int]) -> Params:
    return dict(params)


@dataclass(frozen=True)
class SlimRule:
    """How one block's channels couple (``trace``) and how a plan resizes it (``resize``).

    ``resize`` defaults to no change, right for blocks without producers or whose producers are all
    frozen (the trace must then freeze them).
    """

    trace: TraceFunction
    resize: ResizeFunction = _unchanged


WHOLE = SlimRule(trace=lambda tracer, path, params, inputs: [], resize=_unchanged)
"""Register a block with this rule to say, on purpose, that the slimming leaves it whole."""


def _flat(inputs: Inputs) -> list[Segment]:
    return [segment for source in inputs for segment in source]


# ---------------------------------------------------------------------------------------- single Conv units
def _conv_unit(tracer: ChannelTracer, path: str, params: Mapping[str, Any], reads: list[Segment]) -> Segment:
    tracer.consume(path, reads)
    out = tracer.produce(path, params["out_channels"], params.get("act", True))
    if params.get("groups", 1) != 1:
        tracer.freeze(reads + [out], f"grouped convolution at {path} (groups={params['groups']})")
    return out


def _trace_conv(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    return [_conv_unit(tracer, path, params, _flat(inputs))]


def _trace_focus(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    # space-to-depth stacks four phases of every input channel before the conv
    return [_conv_unit(tracer, f"{path}.conv", params, _flat(inputs) * 4)]


def _resize_output(producer: str) -> ResizeFunction:
    def resize(params: Mapping[str, Any], path: str, width: Mapping[str, int]) -> Params:
        return {**params, "out_channels": width[f"{path}{producer}"]}
    return resize


# ---------------------------------------------------------------------------------------- residual blocks
def _residual(tracer: ChannelTracer, stream: list[Segment], added: Segment, where: str) -> list[Segment]:
    """``stream + added`` element-wise: one group when the stream is one group, else both frozen."""
    if len(stream) == 1 and stream[0].group is not None:
        tracer.tie(stream[0].group, added.group)
        if tracer.policy == "seed":
            tracer.freeze(stream, "seed policy: residual streams are not pruned")
        # The sum carries every added output: a removed channel still holds their constants.
        return [Segment(stream[0].group, stream[0].size, stream[0].sources + added.sources)]
    # The sum's channels line up with several groups (or the image): no single group describes them.
    tracer.freeze(stream + [added], f"residual sum at {where} of several groups")
    return [Segment(s.group, s.size, s.sources + added.sources) if s.group else s for s in stream]


def _trace_bottleneck_at(tracer: ChannelTracer, path: str, hidden_size: int, out_size: int, groups: int,
                         shortcut: bool, stream: list[Segment]) -> list[Segment]:
    tracer.consume(f"{path}.cv1", stream)
    hidden = tracer.produce(f"{path}.cv1", hidden_size)
    out = _conv_unit(tracer, f"{path}.cv2", {"out_channels": out_size, "groups": groups}, [hidden])
    if not shortcut:
        return [out]
    if tracer.policy == "seed" and len(stream) == 1 and stream[0].group is not None:
        tracer.freeze([hidden], "seed policy: residual streams are not pruned")
    return _residual(tracer, stream, out, path)


def _trace_bottleneck(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    return _trace_bottleneck_at(tracer, path, params["hidden_channels"], params["out_channels"],
                                params.get("groups", 1), params["shortcut"], _flat(inputs))


def _resize_hidden_out(params: Mapping[str, Any], path: str, width: Mapping[str, int]) -> Params:
    return {**params, "hidden_channels": width[f"{path}.cv1"], "out_channels": width[f"{path}.cv2"]}


# ---------------------------------------------------------------------------------------- C3 and kin
def _csp_inputs(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> tuple[Segment, Segment]:
    flat = _flat(inputs)
    tracer.consume(f"{path}.cv1", flat)
    tracer.consume(f"{path}.cv2", flat)
    return tracer.produce(f"{path}.cv1", params["cv1_channels"]), tracer.produce(f"{path}.cv2", params["cv2_channels"])


def _csp_output(tracer: ChannelTracer, path: str, params: Mapping[str, Any], chain: list[Segment],
                bypass: Segment) -> list[Segment]:
    tracer.consume(f"{path}.cv3", [*chain, bypass])
    return [tracer.produce(f"{path}.cv3", params["out_channels"])]


def _trace_c3(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    stream, bypass = _csp_inputs(tracer, path, params, inputs)
    chain = [stream]
    for position, (hidden_size, out_size) in enumerate(params["bottlenecks"]):
        chain = _trace_bottleneck_at(tracer, f"{path}.m.{position}", hidden_size, out_size, params.get("groups", 1),
                                     params["shortcut"], chain)
    return _csp_output(tracer, path, params, chain, bypass)


def _resize_csp(params: Mapping[str, Any], path: str, width: Mapping[str, int]) -> Params:
    return {**params, "cv1_channels": width[f"{path}.cv1"], "cv2_channels": width[f"{path}.cv2"],
            "out_channels": width[f"{path}.cv3"]}


def _resize_c3(params: Mapping[str, Any], path: str, width: Mapping[str, int]) -> Params:
    return {**_resize_csp(params, path, width),
            "bottlenecks": [[width[f"{path}.m.{j}.cv1"], width[f"{path}.m.{j}.cv2"]]
                            for j in range(len(params["bottlenecks"]))]}


def _trace_c3_transformer(tracer: ChannelTracer, path: str, params: Mapping[str, Any],
                          inputs: Inputs) -> list[Segment]:
    stream, bypass = _csp_inputs(tracer, path, params, inputs)
    # The transformer mixes channels in linear layers and attention heads: left whole, with cv1 (its
    # input) frozen; cv2 and cv3 around it still prune.
    tracer.freeze([stream], f"transformer at {path}.m left whole")
    return _csp_output(tracer, path, params, [tracer.whole(params["cv1_channels"])], bypass)


# ---------------------------------------------------------------------------------------- Ghost
def _trace_ghost_conv_at(tracer: ChannelTracer, path: str, in_segments: list[Segment], out_channels: int,
                         kernel_groups: int, act: bool) -> list[Segment]:
    hidden = out_channels // 2
    first = _conv_unit(tracer, f"{path}.cv1", {"out_channels": hidden, "groups": kernel_groups, "act": act},
                       in_segments)
    # cv2 is depthwise: its channel i reads only cv1's channel i. Pruned together they could stay
    # consistent, but compaction slices dense weights only, so both halves are frozen (never a wrong model).
    cheap = _conv_unit(tracer, f"{path}.cv2", {"out_channels": hidden, "groups": hidden, "act": act}, [first])
    return [first, cheap]


def _trace_ghost_conv(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    return _trace_ghost_conv_at(tracer, path, _flat(inputs), params["out_channels"], params.get("groups", 1),
                                params.get("act", True))


def _trace_ghost_bottleneck_at(tracer: ChannelTracer, path: str, stream: list[Segment], out_channels: int,
                               stride: int) -> list[Segment]:
    hidden = out_channels // 2
    main = _trace_ghost_conv_at(tracer, f"{path}.conv.0", stream, hidden, 1, True)
    if stride == 2:
        main = [_conv_unit(tracer, f"{path}.conv.1", {"out_channels": hidden, "groups": hidden, "act": False}, main)]
    main = _trace_ghost_conv_at(tracer, f"{path}.conv.2", main, out_channels, 1, False)
    if stride == 2:
        size = sum(s.size for s in stream)
        depthwise = _conv_unit(tracer, f"{path}.shortcut.0", {"out_channels": size, "groups": size, "act": False},
                               stream)
        stream = [_conv_unit(tracer, f"{path}.shortcut.1", {"out_channels": out_channels, "act": False}, [depthwise])]
    # main and shortcut are summed; their halves come from different frozen groups.
    tracer.freeze(stream + main, f"Ghost bottleneck at {path} left whole (depthwise convolutions)")
    return main


def _trace_ghost_bottleneck(tracer: ChannelTracer, path: str, params: Mapping[str, Any],
                            inputs: Inputs) -> list[Segment]:
    return _trace_ghost_bottleneck_at(tracer, path, _flat(inputs), params["out_channels"], params.get("stride", 1))


def _trace_c3_ghost(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    stream, bypass = _csp_inputs(tracer, path, params, inputs)
    chain = [stream]
    for position in range(params["depth"]):
        chain = _trace_ghost_bottleneck_at(tracer, f"{path}.m.{position}", chain, params["cv1_channels"], 1)
    return _csp_output(tracer, path, params, chain, bypass)


# ---------------------------------------------------------------------------------------- pooling, plumbing
def _trace_spp(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    tracer.consume(f"{path}.cv1", _flat(inputs))
    hidden = tracer.produce(f"{path}.cv1", params["hidden_channels"])
    copies = len(params["kernel_sizes"]) + 1 if "kernel_sizes" in params else 4  # SPPF: the input and 3 pools
    tracer.consume(f"{path}.cv2", [hidden] * copies)
    return [tracer.produce(f"{path}.cv2", params["out_channels"])]


def _trace_pass_through(tracer: ChannelTracer, path: str, params: Mapping[str, Any],
                        inputs: Inputs) -> list[Segment]:
    return _flat(inputs)  # same channels, in order (Concat: all inputs one after another)


def _trace_detect(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    for level, segments in enumerate(inputs):
        tracer.consume(f"{path}.m.{level}", segments, detect=True)
    return []


# ---------------------------------------------------------------------------------------- repeated rows
def _trace_repeat(tracer: ChannelTracer, path: str, params: Mapping[str, Any], inputs: Inputs) -> list[Segment]:
    stream = inputs
    for position, copy_params in enumerate(params["copies"]):
        stream = [trace_block(tracer, params["module"], f"{path}.{position}", copy_params, stream)]
    return stream[0]


def _resize_repeat(params: Mapping[str, Any], path: str, width: Mapping[str, int]) -> Params:
    return {**params, "copies": [resize_block(params["module"], copy_params, f"{path}.{position}", width)
                                 for position, copy_params in enumerate(params["copies"])]}


_RULES: dict[str, SlimRule] = {
    "Conv": SlimRule(_trace_conv, _resize_output("")),
    "Focus": SlimRule(_trace_focus, _resize_output(".conv")),
    "Bottleneck": SlimRule(_trace_bottleneck, _resize_hidden_out),
    "C3": SlimRule(_trace_c3, _resize_c3),
    "C3Ghost": SlimRule(_trace_c3_ghost, _resize_csp),
    "C3TR": SlimRule(_trace_c3_transformer, _resize_csp),
    "GhostConv": SlimRule(_trace_ghost_conv),
    "GhostBottleneck": SlimRule(_trace_ghost_bottleneck),
    "SPP": SlimRule(_trace_spp, _resize_hidden_out),
    "SPPF": SlimRule(_trace_spp, _resize_hidden_out),
    "MaxPool2d": SlimRule(_trace_pass_through),
    "ZeroPad2d": SlimRule(_trace_pass_through),
    "Upsample": SlimRule(_trace_pass_through),
    "Concat": SlimRule(_trace_pass_through),
    "Detect": SlimRule(_trace_detect),
    REPEAT: SlimRule(_trace_repeat, _resize_repeat),
}


def register_slim_rule(block: str, rule: SlimRule, replace: bool = False) -> SlimRule:
    """Say how block ``block`` (registered with :func:`yolo_slim.models.registry.register_block`) is pruned,
    or pass :data:`WHOLE` to leave it whole on purpose. Returns ``rule``.

    Raises:
        ValueError: ``block`` already has a rule, unless ``replace``.
    """
    if block in _RULES and not replace:
        raise ValueError(f"block {block!r} already has a slimming rule; pass replace=True to redefine it")
    _RULES[block] = rule
    return rule


def unregister_slim_rule(block: str) -> None:
    """Remove a rule registered with :func:`register_slim_rule` (tests use it to clean up)."""
    _RULES.pop(block, None)


def slim_rule(block: str) -> SlimRule | None:
    """The rule of ``block``, or ``None`` when it has none (the slimming then leaves it whole)."""
    return _RULES.get(block)


def slim_rules() -> dict[str, SlimRule]:
    """All registered rules by block name (a copy)."""
    return dict(_RULES)


def trace_block(tracer: ChannelTracer, module: str, path: str, params: Mapping[str, Any],
                inputs: Inputs) -> list[Segment]:
    """Trace one block through its rule; a block without one (or with :data:`WHOLE`) is left whole."""
    rule = _RULES.get(module)
    if rule is not None and rule is not WHOLE:
        return rule.trace(tracer, path, params, inputs)
    reason = (f"{module} at {path}: no slimming rule registered, left whole" if rule is None
              else f"{module} at {path}: registered as whole")
    tracer.freeze(_flat(inputs), reason)
    width = block_type(module).output_channels(params, [sum(s.size for s in source) for source in inputs])
    return [tracer.whole(width, reason)]


def resize_block(module: str, params: Mapping[str, Any], path: str, width: Mapping[str, int]) -> Params:
    """The block's params after a plan (unchanged for a block left whole)."""
    return (slim_rule(module) or WHOLE).resize(params, path, width)
