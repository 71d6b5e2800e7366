"""The sparsity penalty: an L1 subgradient on the BatchNorm scales (γ) of the prunable channels.

Network slimming trains with ``loss + s * Σ|γ|``; rather than adding the term to the loss (an
extra autograd graph over every γ), its subgradient ``s * sign(γ)`` is added to the gradients
after backward, as the seed implementation does. It must run once per optimizer step on
unscaled gradients (in Lightning: ``on_before_optimizer_step``), and in one fused multi-tensor
pass so that it costs next to nothing per step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from yolo_slim.models import YOLOv5
from yolo_slim.models.fuse import require_unfused
from yolo_slim.slim.graph import ChannelGraph, trace_channels

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class SparsityTarget:
    """The BatchNorm parameters the penalty acts on: every member of every prunable group.

    Build it once per architecture (:func:`sparsity_target`) and reuse it every step.
    ``producers[i]`` is the producer path (see :mod:`yolo_slim.slim.graph`) whose BatchNorm holds
    ``weights[i]`` and ``biases[i]``.
    """

    weights: tuple[torch.nn.Parameter, ...]
    biases: tuple[torch.nn.Parameter, ...]
    producers: tuple[str, ...] = ()


def sparsity_target(model: YOLOv5, policy: str = "grouped", graph: ChannelGraph | None = None) -> SparsityTarget:
    """The γ (and β) of the BatchNorms in the prunable groups of ``model`` under ``policy``."""
    require_unfused(model, "sparsity_target")
    graph = graph if graph is not None else trace_channels(model.spec, policy)
    paths = [path for group in graph.groups.values() if not group.frozen for path in group.members]
    norms = [model.model.get_submodule(path).bn for path in paths]
    return SparsityTarget(weights=tuple(n.weight for n in norms), biases=tuple(n.bias for n in norms),
                          producers=tuple(paths))


def add_bn_l1_grad(target: YOLOv5 | SparsityTarget, strength: float, bias_strength: float = 0.0) -> None:
    """Add ``strength * sign(γ)`` (and ``bias_strength * sign(β)``) to the gradients, in place.

    Args:
        target: A :class:`SparsityTarget`, or a model (its target is then built each call: fine
            for a one-off, wasteful in a training loop).
        strength: The L1 strength ``s`` (the paper uses 1e-4 to 1e-5).
        bias_strength: L1 strength on β, off by default.

    Parameters without a gradient (frozen, or unused this step) are skipped.
    """
    if not all(isinstance(s, numbers.Real) and not isinstance(s, bool) and math.isfinite(s) and s >= 0
               for s in (strength, bias_strength)):  # a NaN would turn every γ's gradient into NaN
        raise ValueError(f"strength and bias_strength must be finite numbers >= 0, found {strength!r} and "
                         f"{bias_strength!r}")
    if isinstance(target, YOLOv5):
        target = sparsity_target(target)
    for parameters, scale in ((target.weights, strength), (target.biases, bias_strength)):
        if scale == 0:
            continue
        with_grad = [p for p in parameters if p.grad is not None]
        if with_grad:
            # Two fused kernels over all tensors at once (sign, then add), instead of a loop per layer.
            signs = torch._foreach_sign([p.detach() for p in with_grad])
            torch._foreach_add_([p.grad for p in with_grad], signs, alpha=scale)


def sparsity_strength(base: float, progress: float, schedule: str = "constant", floor: float = 0.1) -> float:
    """The penalty strength at ``progress`` (0 at the start of sparse training, 1 at its end).

    ``linear`` decays to ``floor * base`` (the seed code: ``s * (1 - 0.9 * epoch / epochs)``),
    ``cosine`` does the same along a half cosine, ``constant`` stays at ``base``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, found {schedule!r}")
    if not 0 <= floor <= 1:
        raise ValueError(f"floor must be in [0, 1], found {floor}")
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return base
    if schedule == "linear":
        return base * (1 - (1 - floor) * progress)
    return base * (floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2)
