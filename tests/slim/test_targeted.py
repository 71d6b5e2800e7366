"""Targeted shrinking: the removal choice from a plan, its masks, the shrink and the dropped task gradient."""

import pytest
import torch

from yolo_slim.slim import plan_pruning, sparsity_target, trace_channels
from yolo_slim.slim.targeted import drop_masked_gradients, removal_masks, removed_channels, shrink


def test_removal_masks_mark_exactly_what_the_plan_removes(random_model):
    model = random_model()
    plan = plan_pruning(model, ratio=0.5)
    graph = trace_channels(model.spec)
    removed = removed_channels(graph, plan)
    target = sparsity_target(model)
    masks = removal_masks(target, removed)
    assert len(masks) == len(target.weights)
    for producer, mask in zip(target.producers, masks):
        group = graph.group_of(producer)
        kept = set(plan.keep[group.name])
        assert {int(i) for i in torch.nonzero(mask).flatten()} == set(range(group.size)) - kept
    # Residual sums lose the same channels in every member.
    residual = next(g for g in graph.groups.values() if g.residual and not g.frozen)
    assert len({tuple(removed[m]) for m in residual.members}) == 1
    assert sum(int(m.sum()) for m in masks) >= plan.removed_channels


def test_shrink_touches_only_the_masked_entries():
    parameters = [torch.nn.Parameter(torch.full((4,), 0.8)), torch.nn.Parameter(torch.full((2,), -0.5))]
    masks = [torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0])]
    shrink(parameters, masks, 0.1)
    torch.testing.assert_close(parameters[0].detach(), torch.tensor([0.72, 0.8, 0.72, 0.8]))
    torch.testing.assert_close(parameters[1].detach(), torch.tensor([-0.5, -0.45]))
    with pytest.raises(ValueError, match=r"shrink rate must be in \[0, 1\], found 1.5"):
        shrink(parameters, masks, 1.5)


def test_drop_masked_gradients_keeps_the_rest():
    parameter = torch.nn.Parameter(torch.ones(3))
    parameter.grad = torch.tensor([1.0, 2.0, 3.0])
    frozen = torch.nn.Parameter(torch.ones(3))  # no gradient: skipped
    drop_masked_gradients([parameter, frozen], [torch.tensor([0.0, 1.0, 0.0]), torch.ones(3)])
    torch.testing.assert_close(parameter.grad, torch.tensor([1.0, 0.0, 3.0]))
    assert frozen.grad is None


def test_masks_need_every_producer(random_model):
    model = random_model()
    target = sparsity_target(model)
    with pytest.raises(ValueError, match="has no entry in the removal choice"):
        removal_masks(target, {})
