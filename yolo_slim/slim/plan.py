"""Pruning plans: which channels of each group survive, from one global threshold on |γ|.

Network slimming (Liu et al., ICCV 2017) ranks every prunable channel by the magnitude of its
BatchNorm scale γ and removes those under one global threshold. Per group the kept count is
then raised to ``min_channels`` (a layer never disappears, the failure of the seed code) and
rounded up to a multiple of ``round_to`` (odd widths make the pruned model no faster on real
kernels), keeping the most important channels.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import torch

from yolo_slim.models import YOLOv5
from yolo_slim.models.fuse import require_unfused
from yolo_slim.models.info import spec_gflops
from yolo_slim.slim.graph import POLICIES, ChannelGraph, trace_channels

log = logging.getLogger(__name__)

AGGREGATES = ("max", "mean")
PLAN_FORMAT = 1


@dataclass(frozen=True)
class PruningPlan:
    """Kept channel indices (sorted) for every group of the model, plus how they were chosen.

    Plain data: :meth:`to_dict` survives ``torch.save`` / ``torch.load(weights_only=True)`` and JSON.
    """

    keep: dict[str, list[int]]
    policy: str
    threshold: float
    sizes: dict[str, int]

    def __post_init__(self) -> None:
        # A hand-edited or truncated plan file would otherwise fail deep inside compact with a bare KeyError.
        if set(self.keep) != set(self.sizes):
            missing, extra = sorted(set(self.sizes) - set(self.keep)), sorted(set(self.keep) - set(self.sizes))
            raise ValueError(f"pruning plan: keep and sizes must name the same groups; keep lacks {missing}, "
                             f"sizes lacks {extra}")

    @property
    def removed_channels(self) -> int:
        return sum(self.sizes[name] - len(kept) for name, kept in self.keep.items())

    @property
    def total_channels(self) -> int:
        return sum(self.sizes.values())

    def fits(self, graph: ChannelGraph) -> bool:
        """Whether the plan was made for this architecture: the same groups with the same sizes."""
        return self.sizes == {name: group.size for name, group in graph.groups.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "policy": self.policy, "threshold": self.threshold,
                "keep": {name: list(kept) for name, kept in self.keep.items()}, "sizes": dict(self.sizes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningPlan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"pruning plan format {data.get('format')!r} is not supported (expected {PLAN_FORMAT})")
        absent = [field.name for field in fields(cls) if field.name not in data]
        if absent:
            raise ValueError(f"pruning plan lacks {absent}")
        return cls(keep={k: [int(i) for i in v] for k, v in data["keep"].items()}, policy=str(data["policy"]),
                   threshold=float(data["threshold"]), sizes={k: int(v) for k, v in data["sizes"].items()})


def group_importance(model: YOLOv5, graph: ChannelGraph, aggregate: str = "max") -> dict[str, torch.Tensor]:
    """Per prunable group, the importance of each channel: |γ| aggregated over the group's BatchNorms.

    ``max`` (default) removes a channel of a residual group only if every BatchNorm writing into
    the sum has a small γ there; ``mean`` weighs them equally.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, found {aggregate!r}")
    importance = {}
    for name, group in graph.groups.items():
        if group.frozen:
            continue
        scales = torch.stack([model.model.get_submodule(path).bn.weight.detach().abs().float().cpu()
                              for path in group.members])  # (members, channels)
        importance[name] = scales.amax(0) if aggregate == "max" else scales.mean(0)
    return importance


def plan_pruning(model: YOLOv5, *, ratio: float | None = None, threshold: float | None = None,
                 flops_target: float | None = None, policy: str = "grouped", round_to: int = 8,
                 min_channels: int = 8, imgsz: int = 640, aggregate: str = "max") -> PruningPlan:
    """Choose the channels to keep. Give exactly one of ``ratio``, ``threshold`` or ``flops_target``.

    Args:
        model: The (sparsity-trained) network; it is not modified.
        ratio: Fraction of the prunable channels to remove, in [0, 1): sets the global threshold
            at that quantile of the channel importances.
        threshold: Remove channels whose importance is below this.
        flops_target: Largest allowed GFLOPs of the pruned model as a fraction of the dense one,
            in (0, 1]; the smallest threshold that meets it is used.
        policy: ``"grouped"`` or ``"seed"`` (see :func:`~yolo_slim.slim.graph.trace_channels`).
        round_to: Kept channel counts are rounded up to a multiple of this. 8 suits GPUs (fp16
            tensor cores) and AVX2; on AVX-512 CPUs 16 gives the larger speed-up per removed FLOP
            (``benchmarks/latency.py``).
        min_channels: Each group keeps at least this many channels (or all it has, if fewer).
        imgsz: Image size for the FLOPs count of ``flops_target``.
        aggregate: How a residual group's |γ| are combined, ``"max"`` or ``"mean"``.

    Raises:
        ValueError: not exactly one target given, a value out of range, or a ``flops_target`` that
            ``min_channels``/``round_to`` do not allow (raised before anything is computed); a network
            with no prunable channel group.
    """
    check_plan_arguments(ratio, threshold, flops_target, policy, round_to, min_channels, aggregate, imgsz)
    if not isinstance(model, YOLOv5):  # a state dict, or ultralytics' own model: load_yolov5 reads their files
        raise TypeError(f"plan_pruning takes a yolo_slim YOLOv5 (load_yolov5 reads an ultralytics .pt), found "
                        f"{type(model).__name__}")
    require_unfused(model, "plan_pruning")
    graph = trace_channels(model.spec, policy)
    importance = group_importance(model, graph, aggregate)
    if not importance:
        reasons = "; ".join(f"layer {layer}: {', '.join(why)}" for layer, why in graph.whole_layers.items())
        raise ValueError(f"plan_pruning: no channel group of this network can be pruned under policy {policy!r} "
                         f"({reasons or 'every group is frozen'})")
    # Each group's channels, most important first (equal scores: lower index first), sorted once
    # for every plan below (the FLOPs bisection makes ~log2(channels) of them).
    orders = {name: torch.sort(-scores, stable=True).indices for name, scores in importance.items()}
    names = list(importance)
    if threshold is not None:
        counts = [int((importance[name] >= threshold).sum()) for name in names]
        return _plan_from_counts(graph, orders, dict(zip(names, counts)), threshold, policy, round_to, min_channels)
    ranked_groups, ranked_scores = _global_ranking(importance)
    sizes = torch.tensor([len(importance[name]) for name in names])

    def remove_lowest(removed: int) -> PruningPlan:
        counts = (sizes - torch.bincount(ranked_groups[:removed], minlength=len(names))).tolist()
        cut = float(ranked_scores[removed]) if removed < len(ranked_scores) else math.inf
        return _plan_from_counts(graph, orders, dict(zip(names, counts)), cut, policy, round_to, min_channels)

    if ratio is not None:
        asked = int(ratio * len(ranked_scores))
        plan = remove_lowest(asked)
        # round_to moves the count by a few channels per group; far less than asked means the floors held it.
        if plan.removed_channels < 0.9 * asked:
            log.warning("plan_pruning: ratio=%g asks for %d of the %d prunable channels, %d removed: min_channels=%d "
                        "and round_to=%d keep the rest", ratio, asked, len(ranked_scores), plan.removed_channels,
                        min_channels, round_to)
        return plan
    return _plan_for_flops(model, len(ranked_scores), remove_lowest, flops_target, imgsz, round_to, min_channels)


def _global_ranking(importance: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every prunable channel, least important first: (its group's index in ``importance``, its importance).

    Ties (common: untouched γ are all 1.0) are broken by the channel's relative position in its
    group, then by the group's order, so that a ratio removes exactly that many channels, spread
    over the groups in proportion to their sizes, instead of none (or whole groups). One vectorised
    lexicographic sort: stable sorts from the last key to the first.
    """
    scores = torch.cat([s.double() for s in importance.values()])
    relative = torch.cat([torch.arange(len(s), dtype=torch.float64) / len(s) for s in importance.values()])
    groups = torch.cat([torch.full((len(s),), i) for i, s in enumerate(importance.values())])
    order = torch.sort(relative, stable=True).indices  # groups are already in order: the last key holds
    order = order[torch.sort(scores[order], stable=True).indices]
    return groups[order], scores[order]


def check_plan_arguments(ratio: float | None = None, threshold: float | None = None,
                         flops_target: float | None = None, policy: str = "grouped", round_to: int = 8,
                         min_channels: int = 8, aggregate: str = "max", imgsz: int = 640) -> None:
    """Raise the ValueError :func:`plan_pruning` would raise for these arguments, without a model."""
    given = [name for name, value in (("ratio", ratio), ("threshold", threshold), ("flops_target", flops_target))
             if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of ratio, threshold, flops_target; found {given or 'none'}")
    for name, value in (("ratio", ratio), ("threshold", threshold), ("flops_target", flops_target)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"{name} must be a number, found {value!r}")
    if ratio is not None and not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1), found {ratio}")
    if threshold is not None and (threshold < 0 or math.isnan(threshold)):
        raise ValueError(f"threshold must be >= 0, found {threshold}")
    if flops_target is not None and not 0 < flops_target <= 1:
        raise ValueError(f"flops_target must be in (0, 1] (a fraction of the dense GFLOPs), found {flops_target}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, found {policy!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, found {aggregate!r}")
    for name, value in (("round_to", round_to), ("min_channels", min_channels), ("imgsz", imgsz)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, found {value!r}")


def _plan_from_counts(graph: ChannelGraph, orders: dict[str, torch.Tensor], counts: dict[str, int], cut: float,
                      policy: str, round_to: int, min_channels: int) -> PruningPlan:
    """Keep the ``counts[group]`` first channels of each group's importance ``orders``, after min_channels and
    round_to."""
    keep = {}
    for name, group in graph.groups.items():
        if name not in orders:
            keep[name] = list(range(group.size))
            continue
        count = max(counts[name], min_channels)
        count = min(math.ceil(count / round_to) * round_to, group.size)
        keep[name] = orders[name][:count].sort().values.tolist()
    return PruningPlan(keep=keep, policy=policy, threshold=float(cut),
                       sizes={name: group.size for name, group in graph.groups.items()})


def _plan_for_flops(model: YOLOv5, prunable: int, remove_lowest: Any, flops_target: float, imgsz: int,
                    round_to: int, min_channels: int) -> PruningPlan:
    # Imported here: compaction imports this module's PruningPlan.
    from yolo_slim.slim.compact import pruned_spec

    dense = spec_gflops(model.spec, imgsz)

    def fraction(plan: PruningPlan) -> float:
        return spec_gflops(pruned_spec(model.spec, plan), imgsz) / dense

    smallest = remove_lowest(prunable)
    if fraction(smallest) > flops_target:
        raise ValueError(f"flops_target={flops_target} cannot be met: with min_channels={min_channels} and "
                         f"round_to={round_to} the smallest model has {fraction(smallest):.3f} of the dense GFLOPs")
    # FLOPs fall as more channels go: find the fewest removals that meet the target.
    low, high = 0, prunable
    while low < high:
        middle = (low + high) // 2
        if fraction(remove_lowest(middle)) <= flops_target:
            high = middle
        else:
            low = middle + 1
    return remove_lowest(low)
