"""The data of channel tracing (segments, consumers, groups, the graph) and the tracer that records
them, which the slimming rules of :mod:`yolo_slim.slim.rules` call. The vocabulary is explained in
:mod:`yolo_slim.slim.graph`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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
    activations: dict[str, str | None] = field(default_factory=dict)  # producer -> its activation (None: identity)
    whole_layers: dict[int, tuple[str, ...]] = field(default_factory=dict)  # layer -> why some of it is frozen

    def group_of(self, producer: str) -> ChannelGroup:
        for group in self.groups.values():
            if producer in group.members:
                return group
        raise KeyError(f"{producer!r} is not a producer of this model")

    def producers(self) -> Iterator[str]:
        for group in self.groups.values():
            yield from group.members


class ChannelTracer:
    """Records producers, ties (union-find), consumers and frozen groups while the layers are walked.

    A slimming rule receives it with ``layer`` (the layer's index), ``policy`` and ``activation`` (the
    spec's) set, and calls:

    * :meth:`produce` for each Conv unit whose output channels could be pruned,
    * :meth:`consume` for each Conv unit (or Detect conv) reading segments,
    * :meth:`tie` when two producers' outputs are added element-wise,
    * :meth:`freeze` for segments that must keep every channel, with the reason,
    * :meth:`whole` for an output that is not a producer's (it is never pruned).
    """

    def __init__(self, policy: str, activation: str) -> None:
        self.policy, self.activation, self.layer = policy, activation, -1
        self.parent: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.layers: dict[str, int] = {}
        self.activations: dict[str, str | None] = {}
        self.residual: set[str] = set()
        self.frozen: set[str] = set()
        self.reasons: dict[int, list[str]] = {}
        self.consumers: list[tuple[str, list[Segment], bool]] = []

    def produce(self, path: str, size: int, activation: bool = True) -> Segment:
        """A new producer at module path ``path`` with ``size`` channels; ``activation``: its Conv has one."""
        self.parent[path], self.sizes[path], self.layers[path] = path, size, self.layer
        self.activations[path] = self.activation if activation else None
        return Segment(path, size, (path,))

    def find(self, path: str) -> str:
        while self.parent[path] != path:
            self.parent[path] = self.parent[self.parent[path]]
            path = self.parent[path]
        return path

    def tie(self, first: str, second: str) -> None:
        """The two producers' outputs are summed: one group, marked residual."""
        root_a, root_b = self.find(first), self.find(second)
        if root_a != root_b:
            self.parent[root_b] = root_a
        self.residual.update((first, second))

    def consume(self, path: str, segments: list[Segment], detect: bool = False) -> None:
        """The conv at ``path`` reads ``segments`` in order; ``detect``: a Detect output conv (bias, no BN)."""
        self.consumers.append((path, segments, detect))

    def freeze(self, segments: list[Segment], reason: str) -> None:
        """Keep every channel of these segments' groups, noting ``reason`` on the current layer."""
        groups = {s.group for s in segments if s.group is not None}
        self.frozen.update(groups)
        if groups and reason not in self.reasons.setdefault(self.layer, []):
            self.reasons[self.layer].append(reason)

    def whole(self, size: int, reason: str | None = None) -> Segment:
        """An output of ``size`` channels that no producer owns (a block left whole): never pruned."""
        if reason is not None and reason not in self.reasons.setdefault(self.layer, []):
            self.reasons[self.layer].append(reason)
        return Segment(None, size)

    def graph(self) -> ChannelGraph:
        """The finished graph."""
        return _finish(self)


def _finish(tracer: ChannelTracer) -> ChannelGraph:
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
                        activations=dict(tracer.activations),
                        whole_layers={layer: tuple(reasons) for layer, reasons in sorted(tracer.reasons.items())})
