"""The polarization regularizer: its subgradient against autograd, and the clamp to [0, 1]."""

import pytest
import torch

from yolo_slim.models import YOLOv5
from yolo_slim.slim import sparsity_target
from yolo_slim.slim.polarization import add_polarization_grad, clamp_gammas


def _target_with_gammas(seed: int = 0):
    torch.manual_seed(seed)
    model = YOLOv5("yolov5n", nc=2)
    target = sparsity_target(model)
    with torch.no_grad():
        for weight in target.weights:
            weight.uniform_(0.0, 1.0)
    for weight in target.weights:
        weight.grad = torch.zeros_like(weight)
    return target


def test_subgradient_matches_autograd_of_the_regularizer():
    target = _target_with_gammas()
    strength, t = 0.3, 1.2
    add_polarization_grad(target, strength, t)
    ours = [w.grad.clone() for w in target.weights]
    gammas = [w.detach().clone().requires_grad_(True) for w in target.weights]
    everything = torch.cat(gammas)
    regularizer = strength * (t * everything.abs().sum() - (everything - everything.mean()).abs().sum())
    regularizer.backward()
    for mine, reference in zip(ours, gammas):
        torch.testing.assert_close(mine, reference.grad, rtol=1e-5, atol=1e-6)


def test_gammas_split_under_the_regularizer_and_stay_in_range():
    """Without a task loss, the γ below the mean fall at (t + 1)·λ and those above only at (t - 1)·λ: a gap opens."""
    target = _target_with_gammas(1)
    optimizer = torch.optim.SGD(list(target.weights), lr=0.05)
    for _ in range(100):
        for weight in target.weights:
            weight.grad = torch.zeros_like(weight)
        add_polarization_grad(target, 0.1, 1.2)
        optimizer.step()
        clamp_gammas(target)
    after = torch.cat([w.detach() for w in target.weights])
    assert after.min() >= 0 and after.max() <= 1
    at_zero = (after == 0).float().mean()
    assert 0.3 < at_zero < 0.7  # about the half that started below the mean
    assert after[after > 0].min() > 0.2  # and nothing in between: two populations, not one sliding peak


def test_bad_arguments_are_refused():
    target = _target_with_gammas()
    with pytest.raises(ValueError, match="polarization strength must be >= 0, found -1"):
        add_polarization_grad(target, -1, 1.2)
    with pytest.raises(ValueError, match="polarization t must be > 0, found 0"):
        add_polarization_grad(target, 0.1, 0)
