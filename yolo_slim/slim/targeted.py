"""Targeted sparsity: shrink only the channels a pruning plan would remove, until they carry nothing.

Plain L1 on every γ lowers them all alike on short budgets (the next conv absorbs a uniform
scale), so pruning still cuts live channels. Here the channels to remove are chosen first, with
the prune's own rules (:func:`~yolo_slim.slim.plan.plan_pruning`: one global |γ| ranking over the
policy's groups, ``ratio``, ``min_channels``, ``round_to``), and only their γ and β are driven to
zero; the kept channels are left unpenalised and learn to take over. By the prune the removed
channels emit ~0, so removing them changes nothing. Published relatives: MaskSparsity (the L1 term
on the masked channels only), GReg (Wang et al., ICLR 2021: a growing penalty on the to-prune set)
and ResRep (Ding et al., ICCV 2021: masked channels lose their task gradient and decay).

The shrink is decoupled from the optimizer, as AdamW's weight decay is: each optimizer step
multiplies the chosen γ and β by ``1 - rate``. Through the gradient instead, its effect would
depend on the learning rate, the momentum (x16 at YOLOv5's 0.937) and the optimizer (Adam
normalises it away); multiplied in, a rate means the same in every recipe.

Worked example, a group of 16 channels whose plan keeps 8: ``removal_masks`` gives each of its
BatchNorms a mask with 1.0 at the 8 removed channels, and ``shrink`` with rate 0.1 turns their
γ = 0.8 into 0.72 while the other 8 stay at 0.8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from yolo_slim.slim.graph import ChannelGraph
from yolo_slim.slim.plan import PruningPlan
from yolo_slim.slim.sparsity import SparsityTarget


def removed_channels(graph: ChannelGraph, plan: PruningPlan) -> dict[str, list[int]]:
    """Per producer of every prunable group, the channel indices ``plan`` removes (sorted).

    Every member of a group loses the same channels (a residual sum is pruned as a whole).
    """
    removed = {}
    for name, group in graph.groups.items():
        if group.frozen:
            continue
        kept = set(plan.keep[name])
        dropped = [channel for channel in range(group.size) if channel not in kept]
        for producer in group.members:
            removed[producer] = dropped
    return removed


def removal_masks(target: SparsityTarget, removed: dict[str, list[int]]) -> tuple[torch.Tensor, ...]:
    """One float mask per BatchNorm of ``target``: 1.0 at the channels to remove, 0.0 elsewhere.

    Raises:
        ValueError: ``target`` has no producer names (built by hand), or one is missing from ``removed``.
    """
    if len(target.producers) != len(target.weights):
        raise ValueError("the sparsity target carries no producer names: build it with sparsity_target(model)")
    masks = []
    for producer, weight in zip(target.producers, target.weights):
        if producer not in removed:
            raise ValueError(f"producer {producer!r} has no entry in the removal choice; choose again for this model")
        # float32 whatever the parameter's dtype: 1 - rate must not round to 1 in half precision.
        mask = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        mask[removed[producer]] = 1.0
        masks.append(mask)
    return tuple(masks)


@torch.no_grad()
def shrink(parameters: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], rate: float) -> None:
    """Multiply the masked entries of each parameter by ``1 - rate``, in place, in fused kernels.

    Raises:
        ValueError: ``rate`` outside [0, 1].
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"shrink rate must be in [0, 1], found {rate}")
    if rate == 0 or not parameters:
        return
    factors = torch._foreach_mul(list(masks), -rate)  # 1 - rate·mask, one kernel for every tensor
    torch._foreach_add_(factors, 1.0)
    torch._foreach_mul_([p.data for p in parameters], factors)


@torch.no_grad()
def drop_masked_gradients(parameters: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> None:
    """Zero the gradient of the masked entries (ResRep's final phase: the task no longer holds them up)."""
    with_grad = [(p, m) for p, m in zip(parameters, masks) if p.grad is not None]
    if with_grad:
        keep = torch._foreach_mul([m for _, m in with_grad], -1.0)
        torch._foreach_add_(keep, 1.0)
        torch._foreach_mul_([p.grad for p, _ in with_grad], keep)
