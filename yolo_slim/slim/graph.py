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

The per-block knowledge (which convs a C3 holds, what couples them) lives in
:mod:`yolo_slim.slim.rules`, one rule per block; this module walks the layers and applies them.
The data types are in :mod:`yolo_slim.slim.channels`.
"""

from __future__ import annotations

from typing import Any

from yolo_slim.models.spec import INPUT, ModelSpec
from yolo_slim.slim.channels import ChannelGraph, ChannelGroup, ChannelTracer, Consumer, Segment
from yolo_slim.slim.rules import trace_block

__all__ = ["POLICIES", "ChannelGraph", "ChannelGroup", "Consumer", "Segment", "trace_channels"]

POLICIES = ("grouped", "seed")


def trace_channels(spec: ModelSpec | Any, policy: str = "grouped") -> ChannelGraph:
    """Channel groups and consumers of ``spec``.

    Args:
        spec: The architecture: a ModelSpec, or a network holding one (``YOLOv5.spec``).
        policy: ``"grouped"``: every group may be pruned (residual groups as a whole).
            ``"seed"``: the best-known YOLOv5 slimming code's choice, kept for comparison: inside a
            C3 with shortcuts, ``cv1``, every Bottleneck's ``cv1`` and ``cv2`` are frozen.

    Groups that cannot be pruned consistently are frozen under either policy: convs with
    ``groups > 1`` (their input and output channels are coupled), a shortcut Bottleneck
    whose input is not a single group, and the inputs of blocks left whole (no slimming rule);
    ``whole_layers`` says which layers and why.

    Raises:
        ValueError: an unknown policy.
    """
    spec = getattr(spec, "spec", spec)  # a YOLOv5: its architecture
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"trace_channels takes a ModelSpec or a YOLOv5, found {type(spec).__name__}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, found {policy!r}")
    tracer = ChannelTracer(policy, spec.activation)
    outputs: list[list[Segment]] = []
    image = [Segment(None, spec.in_channels)]
    for index, layer in enumerate(spec.layers):
        tracer.layer = index
        inputs = [image if s == INPUT else outputs[s] for s in layer.sources]
        outputs.append(trace_block(tracer, layer.module, str(index), layer.params, inputs))
    return tracer.graph()
