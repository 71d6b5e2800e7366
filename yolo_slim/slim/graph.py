"""Which BatchNorm channels must be pruned together, read off the model spec.

Vocabulary:

* A **producer** is a Conv unit (conv + BatchNorm + activation); its channels are what
  slimming removes. It is named by its module path under ``model.model``: ``"3"`` for a plain
  Conv layer, ``"2.cv1"`` or ``"2.m.0.cv2"`` inside a C3, ``"0.conv"`` for Focus.
* A **group** is a set of producers whose output channels are tied element-wise, so they are
  kept or removed together. Most groups have one member; a C3 with shortcuts ties its ``cv1``
  to the ``cv2`` of every Bottleneck (their outputs are summed).
* A **consumer** is a conv that reads channels: every Conv unit and each Detect output conv.
  Its input is a list of **segments**, one per stretch of channels from one group: a Concat
  consumer sees the segments of all its inputs in order, an SPP's ``cv2`` sees ``cv1``'s
  segment k + 1 times, the first layer sees the image (group ``None``, never pruned).

Worked example, yolov5n layer 2 (a C3 with one shortcut Bottleneck, 16 hidden channels)::

    groups:    "2.cv1" = {2.cv1, 2.m.0.cv2} (16, residual), "2.m.0.cv1" (16), "2.cv2" (16), "2.cv3" (32)
    consumers: 2.m.0.cv1 <- [2.cv1 x16]      2.cv3 <- [2.cv1 x16 (sum of 2.cv1 and 2.m.0.cv2), 2.cv2 x16]

Each segment also lists the producers whose outputs are *summed* into it at that point
(``sources``): what a removed channel still carries, for bias compensation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from yolo_slim.models.spec import INPUT, LayerSpec, ModelSpec


@dataclass(frozen=True)
class Segment:
    """A stretch of ``size`` input channels that all come from one group (``None``: the image)."""

    group: str | None
    size: int
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Consumer:
    """A conv reading ``segments`` in order. ``detect`` marks the Detect output convs (biased, no BN)."""

    path: str
    segments: tuple[Segment, ...]
    detect: bool = False


@dataclass(frozen=True)
class ChannelGroup:
    """Producers with tied channels. ``frozen`` groups are never pruned (see :func:`trace_channels`)."""

    name: str
    members: tuple[str, ...]
    size: int
    residual: bool
    frozen: bool = False


@dataclass(frozen=True)
class ChannelGraph:
    """Groups and consumers of a spec; ``producer_layers`` maps each producer to its layer index."""

    groups: dict[str, ChannelGroup]
    consumers: tuple[Consumer, ...]
    producer_layers: dict[str, int] = field(default_factory=dict)
    activations: dict[str, bool] = field(default_factory=dict)  # producer -> has SiLU

    def group_of(self, producer: str) -> ChannelGroup:
        for group in self.groups.values():
            if producer in group.members:
                return group
        raise KeyError(f"{producer!r} is not a producer of this model")

    def producers(self) -> Iterator[str]:
        for group in self.groups.values():
            yield from group.members


class _Tracer:
    """Walks the layers once, recording producers, ties (union-find) and consumers."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.layers: dict[str, int] = {}
        self.activations: dict[str, bool] = {}
        self.residual: set[str] = set()
        self.frozen: set[str] = set()
        self.consumers: list[tuple[str, list[Segment], bool]] = []

    def produce(self, path: str, size: int, layer: int, activation: bool = True) -> Segment:
        self.parent[path], self.sizes[path], self.layers[path] = path, size, layer
        self.activations[path] = activation
        return Segment(path, size, (path,))

    def find(self, path: str) -> str:
        while self.parent[path] != path:
            self.parent[path] = self.parent[self.parent[path]]
            path = self.parent[path]
        return path

    def tie(self, first: str, second: str) -> None:
        root_a, root_b = self.find(first), self.find(second)
        if root_a != root_b:
            self.parent[root_b] = root_a
        self.residual.update((first, second))

    def consume(self, path: str, segments: list[Segment], detect: bool = False) -> None:
        self.consumers.append((path, segments, detect))

    def freeze(self, segments: list[Segment]) -> None:
        self.frozen.update(s.group for s in segments if s.group is not None)


def trace_channels(spec: ModelSpec, policy: str = "grouped") -> ChannelGraph:
    """Channel groups and consumers of ``spec``.

    Args:
        spec: The architecture.
        policy: ``"grouped"``: every group may be pruned (residual groups as a whole).
            ``"seed"``: the best-known YOLOv5 slimming code's choice, kept for comparison: inside a
            C3 with shortcuts, ``cv1``, every Bottleneck's ``cv1`` and ``cv2`` are frozen.

    Groups that cannot be pruned consistently are frozen under either policy: convs with
    ``groups > 1`` (their input and output channels are coupled) and a shortcut Bottleneck
    whose input is not a single group.

    Raises:
        ValueError: an unknown policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, found {policy!r}")
    tracer = _Tracer()
    outputs: list[list[Segment]] = []
    image = [Segment(None, spec.in_channels)]
    for index, layer in enumerate(spec.layers):
        inputs = [image if s == INPUT else outputs[s] for s in layer.sources]
        outputs.append(_trace_layer(tracer, index, layer, inputs, policy))
    return _finish(tracer)


POLICIES = ("grouped", "seed")


def _trace_layer(tracer: _Tracer, index: int, layer: LayerSpec, inputs: list[list[Segment]],
                 policy: str) -> list[Segment]:
    params, prefix = layer.params, f"{index}"
    flat = [segment for segments in inputs for segment in segments]
    if layer.module == "Conv":
        tracer.consume(prefix, flat)
        out = tracer.produce(prefix, params["out_channels"], index, params.get("act", True))
        if params.get("groups", 1) != 1:
            tracer.freeze(flat + [out])
        return [out]
    if layer.module == "Focus":
        tracer.consume(f"{prefix}.conv", flat * 4)  # space-to-depth stacks four phases of every channel
        out = tracer.produce(f"{prefix}.conv", params["out_channels"], index, params.get("act", True))
        if params.get("groups", 1) != 1:
            tracer.freeze(flat + [out])
        return [out]
    if layer.module == "C3":
        return _trace_c3(tracer, index, params, flat, policy)
    if layer.module == "Bottleneck":
        return _trace_bottleneck(tracer, prefix, index, params, flat, policy)
    if layer.module in ("SPP", "SPPF"):
        tracer.consume(f"{prefix}.cv1", flat)
        hidden = tracer.produce(f"{prefix}.cv1", params["hidden_channels"], index)
        copies = len(params["kernel_sizes"]) + 1 if layer.module == "SPP" else 4
        tracer.consume(f"{prefix}.cv2", [hidden] * copies)  # the input and its pooled copies
        return [tracer.produce(f"{prefix}.cv2", params["out_channels"], index)]
    if layer.module in ("Upsample", "Concat"):
        return flat
    if layer.module == "Detect":
        for level, segments in enumerate(inputs):
            tracer.consume(f"{prefix}.m.{level}", segments, detect=True)
        return []
    raise ValueError(f"layer {index}: no channel tracing for module {layer.module!r}")


def _trace_c3(tracer: _Tracer, index: int, params: dict, flat: list[Segment], policy: str) -> list[Segment]:
    prefix = f"{index}"
    tracer.consume(f"{prefix}.cv1", flat)
    tracer.consume(f"{prefix}.cv2", flat)
    stream = tracer.produce(f"{prefix}.cv1", params["cv1_channels"], index)
    bypass = tracer.produce(f"{prefix}.cv2", params["cv2_channels"], index)
    groups = params.get("groups", 1)
    for position, (hidden_size, out_size) in enumerate(params["bottlenecks"]):
        path = f"{prefix}.m.{position}"
        tracer.consume(f"{path}.cv1", [stream])
        hidden = tracer.produce(f"{path}.cv1", hidden_size, index)
        tracer.consume(f"{path}.cv2", [hidden])
        out = tracer.produce(f"{path}.cv2", out_size, index)
        if groups != 1:
            tracer.freeze([hidden, out])
        if params["shortcut"]:
            tracer.tie(stream.group, out.group)
            # The sum carries every added output: a removed channel still holds their constants.
            stream = Segment(stream.group, stream.size, stream.sources + out.sources)
            if policy == "seed":
                tracer.freeze([stream, hidden])
        else:
            stream = out
    tracer.consume(f"{prefix}.cv3", [stream, bypass])
    return [tracer.produce(f"{prefix}.cv3", params["out_channels"], index)]


def _trace_bottleneck(tracer: _Tracer, prefix: str, index: int, params: dict, flat: list[Segment],
                      policy: str) -> list[Segment]:
    tracer.consume(f"{prefix}.cv1", flat)
    hidden = tracer.produce(f"{prefix}.cv1", params["hidden_channels"], index)
    tracer.consume(f"{prefix}.cv2", [hidden])
    out = tracer.produce(f"{prefix}.cv2", params["out_channels"], index)
    if params.get("groups", 1) != 1:
        tracer.freeze([hidden, out])
    if not params["shortcut"]:
        return [out]
    if len(flat) == 1 and flat[0].group is not None:
        tracer.tie(flat[0].group, out.group)
        if policy == "seed":
            tracer.freeze([flat[0], hidden])
        return [Segment(flat[0].group, flat[0].size, flat[0].sources + out.sources)]
    # The sum's channels line up with several groups (or the image): no single group can describe
    # them, so neither side is pruned.
    tracer.freeze(flat + [out])
    return [Segment(s.group, s.size, s.sources + out.sources) if s.group else s for s in flat]


def _finish(tracer: _Tracer) -> ChannelGraph:
    members: dict[str, list[str]] = {}
    for path in tracer.parent:
        members.setdefault(tracer.find(path), []).append(path)
    # A group is named after its first producer in network order, so names are stable and readable.
    names = {root: paths[0] for root, paths in members.items()}
    frozen_roots = {tracer.find(path) for path in tracer.frozen}
    groups = {}
    for root, paths in members.items():
        groups[names[root]] = ChannelGroup(name=names[root], members=tuple(paths), size=tracer.sizes[root],
                                           residual=any(p in tracer.residual for p in paths),
                                           frozen=root in frozen_roots)
    consumers = tuple(
        Consumer(path, tuple(Segment(names[tracer.find(s.group)] if s.group else None, s.size, s.sources)
                             for s in segments), detect)
        for path, segments, detect in tracer.consumers)
    return ChannelGraph(groups=groups, consumers=consumers, producer_layers=dict(tracer.layers),
                        activations=dict(tracer.activations))
