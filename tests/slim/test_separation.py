"""Separation figures: they must tell a free prune from one that cuts live channels."""

import pytest
import torch

from yolo_slim.slim import compact, plan_pruning, sparsity_target, trace_channels
from yolo_slim.slim.separation import separation
from yolo_slim.slim.targeted import removal_masks, removed_channels


def test_zeroed_removed_channels_give_no_removed_mass(random_model):
    model = random_model()
    plan = plan_pruning(model, ratio=0.5)
    spread = separation(model, plan)
    assert 0.05 < spread.removed_output_mass < 0.9
    assert spread.removed_gamma_mean < spread.kept_gamma_mean
    target = sparsity_target(model)
    masks = removal_masks(target, removed_channels(trace_channels(model.spec), plan))
    with torch.no_grad():
        for weight, bias, mask in zip(target.weights, target.biases, masks):
            weight.mul_(1 - mask)
            bias.mul_(1 - mask)  # β too, so that the 3x3 consumers' borders match exactly
    zeroed = separation(model, plan)
    assert zeroed.removed_output_mass == 0.0 and zeroed.removed_gamma_mean == 0.0
    # Every member channel the plan removes is now under 1e-2 (some groups keep all: the share is smaller).
    removed_share = sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert abs(zeroed.gamma_below_0_01 - removed_share) < 1e-6
    assert zeroed.channels_below_0_01 == pytest.approx(plan.removed_channels / plan.total_channels)
    assert set(zeroed.to_dict()) == {"gamma_below_0_01", "channels_below_0_01", "removed_gamma_mean", "kept_gamma_mean",
                                     "removed_output_mass"}
    # And such a prune is free: the compacted model gives the same detections.
    images = torch.rand(2, 3, 64, 64)
    dense_out = model.eval()(images)
    torch.testing.assert_close(compact(model, plan).eval()(images), dense_out, atol=1e-4, rtol=1e-4)
