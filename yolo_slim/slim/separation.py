"""Does sparsity training separate the channels a prune would remove? Figures to watch while it happens.

Worked example: with γ of the removed channels at ~1e-4 and the kept ones near 0.8, ``separation``
reports ``removed_gamma_mean`` 1e-4 against ``kept_gamma_mean`` 0.8 and a ``removed_output_mass`` of
about 1e-4: pruning will be free. Under plain L1 on a short budget one typically sees 0.5 against
0.7 and a mass of 0.3: the prune will cut live channels and lose accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from yolo_slim.models import YOLOv5
from yolo_slim.slim.graph import ChannelGraph, trace_channels
from yolo_slim.slim.plan import PruningPlan, group_importance

NEGLIGIBLE_GAMMA = 1e-2


@dataclass(frozen=True)
class Separation:
    """How cleanly ``plan`` cuts ``model``'s channels.

    Attributes:
        gamma_below_0_01: Share of the prunable BatchNorm channels (every member of every group)
            whose |γ| is under 1e-2.
        channels_below_0_01: Share of the prunable channels (the plan's unit: a residual group's
            channel counts once, with the max |γ| of its members) whose importance is under 1e-2;
            it reaches the plan's removed share when every removed channel is negligible.
        removed_gamma_mean: Mean importance (|γ|, the max over a group's BatchNorms) of the
            channels the plan removes.
        kept_gamma_mean: The same for the channels it keeps.
        removed_output_mass: Share of the channels' output contribution that the plan removes. A
            channel's contribution is |γ| (summed over the BatchNorms adding into it) times the L1
            norm of the consumer weights that read it (summed over its consumers): what it writes
            into the next layers, not only its scale.
    """

    gamma_below_0_01: float
    channels_below_0_01: float
    removed_gamma_mean: float
    kept_gamma_mean: float
    removed_output_mass: float

    def to_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


@torch.no_grad()
def separation(model: YOLOv5, plan: PruningPlan, graph: ChannelGraph | None = None) -> Separation:
    """Measure how separated the channels ``plan`` removes are from those it keeps.

    Args:
        model: The network the plan was made for (it is not modified).
        plan: A plan for ``model`` (e.g. ``plan_pruning(model, ratio=0.5)``).
        graph: Its channel graph under ``plan.policy``, if already traced.
    """
    graph = graph if graph is not None else trace_channels(model.spec, plan.policy)
    importance = group_importance(model, graph)
    contribution = _output_contribution(model, graph)
    removed_scores, kept_scores, gammas = [], [], []
    removed_mass = total_mass = 0.0
    for name, scores in importance.items():
        removed = torch.ones(len(scores), dtype=torch.bool)
        removed[plan.keep[name]] = False
        removed_scores.append(scores[removed])
        kept_scores.append(scores[~removed])
        removed_mass += float(contribution[name][removed].sum())
        total_mass += float(contribution[name].sum())
        gammas.extend(model.model.get_submodule(p).bn.weight.detach().abs().float().cpu()
                      for p in graph.groups[name].members)
    every_gamma = torch.cat(gammas) if gammas else torch.zeros(0)
    every_channel = torch.cat(list(importance.values())) if importance else torch.zeros(0)
    return Separation(gamma_below_0_01=_mean(every_gamma < NEGLIGIBLE_GAMMA),
                      channels_below_0_01=_mean(every_channel < NEGLIGIBLE_GAMMA),
                      removed_gamma_mean=_mean(torch.cat(removed_scores) if removed_scores else torch.zeros(0)),
                      kept_gamma_mean=_mean(torch.cat(kept_scores) if kept_scores else torch.zeros(0)),
                      removed_output_mass=removed_mass / total_mass if total_mass else 0.0)


def _output_contribution(model: YOLOv5, graph: ChannelGraph) -> dict[str, torch.Tensor]:
    """Per prunable group, (channels,): Σ over consumers and summed sources of |γ| · ‖consumer column‖₁."""
    contribution = {name: torch.zeros(group.size) for name, group in graph.groups.items() if not group.frozen}
    for consumer in graph.consumers:
        module = model.model.get_submodule(consumer.path)
        weight = module.weight if consumer.detect else module.conv.weight  # (out, in, k, k)
        columns = weight.detach().abs().float().sum(dim=(0, 2, 3)).cpu()  # (in,)
        offset = 0
        for segment in consumer.segments:
            if segment.group in contribution:
                scale = sum(model.model.get_submodule(p).bn.weight.detach().abs().float().cpu()
                            for p in segment.sources)
                contribution[segment.group] += scale * columns[offset:offset + segment.size]
            offset += segment.size
    return contribution


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean()) if values.numel() else 0.0
