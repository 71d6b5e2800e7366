"""Removed channels zeroed, for the pruning tests (random BatchNorm: yolo_slim.models.testing); a hostile pickle."""

import os

import torch

from yolo_slim.models import YOLOv5
from yolo_slim.slim import PruningPlan, trace_channels


def kill_removed(model: YOLOv5, plan: PruningPlan, zero_bias: bool = True) -> None:
    """Zero γ (and β if asked) of every removed channel, in every member of its group."""
    graph = trace_channels(model.spec, plan.policy)
    with torch.no_grad():
        for name, group in graph.groups.items():
            removed = sorted(set(range(group.size)) - set(plan.keep[name]))
            for path in group.members:
                norm = model.model.get_submodule(path).bn
                norm.weight[removed] = 0
                if zero_bias:
                    norm.bias[removed] = 0


class RunsCommand:
    """Pickles as a call of os.system: what a hostile checkpoint would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)
