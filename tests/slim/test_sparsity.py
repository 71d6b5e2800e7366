"""The L1 subgradient on γ and its strength schedules."""

import math

import pytest
import torch

from yolo_slim.models import YOLOv5
from yolo_slim.slim import add_bn_l1_grad, sparsity_strength, sparsity_target, trace_channels


def test_one_sgd_step_moves_gamma_by_lr_times_strength():
    torch.manual_seed(0)
    model = YOLOv5("yolov5n")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(-1, 1)
    target = sparsity_target(model)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    before = [w.detach().clone() for w in target.weights]
    bias_before = [b.detach().clone() for b in target.biases]
    add_bn_l1_grad(target, strength=1e-2)
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    for old, new in zip(before, target.weights):
        torch.testing.assert_close(new.detach(), old - 0.5 * 1e-2 * torch.sign(old))
    assert all(torch.equal(old, new) for old, new in zip(bias_before, target.biases))  # β untouched by default


def test_bias_penalty_and_existing_gradients_add_up():
    model = YOLOv5("yolov5n")
    target = sparsity_target(model)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.25)
    with torch.no_grad():
        target.biases[0].fill_(-2.0)
    add_bn_l1_grad(model, strength=1e-3, bias_strength=1e-2)  # a model is accepted too
    assert torch.allclose(target.weights[0].grad, torch.full_like(target.weights[0], 0.25 + 1e-3))
    assert torch.allclose(target.biases[0].grad, torch.full_like(target.biases[0], 0.25 - 1e-2))


def test_seed_policy_leaves_shortcut_norms_alone():
    model = YOLOv5("yolov5n")
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    add_bn_l1_grad(sparsity_target(model, policy="seed"), strength=1.0)
    assert model.model[2].cv1.bn.weight.grad.abs().sum() == 0
    assert model.model[2].m[0].cv2.bn.weight.grad.abs().sum() == 0
    assert model.model[2].cv2.bn.weight.grad.abs().min() == 1.0
    grouped = sparsity_target(model)
    graph = trace_channels(model.spec)
    assert len(grouped.weights) == sum(len(g.members) for g in graph.groups.values())


def test_parameters_without_gradient_are_skipped():
    model = YOLOv5("yolov5n")
    add_bn_l1_grad(model, strength=1e-3)  # no gradients anywhere: nothing to do, no error
    assert all(p.grad is None for p in model.parameters())


def test_strength_schedules():
    assert sparsity_strength(1e-4, 0.5, "constant") == 1e-4
    assert sparsity_strength(1e-4, 0.5, "linear") == pytest.approx(1e-4 * (1 - 0.9 * 0.5))  # the seed's decay
    assert sparsity_strength(1e-4, 1.0, "linear") == pytest.approx(1e-5)
    assert sparsity_strength(1e-4, 0.0, "cosine") == pytest.approx(1e-4)
    assert sparsity_strength(1e-4, 0.5, "cosine") == pytest.approx(1e-4 * (0.1 + 0.9 * 0.5))
    assert sparsity_strength(1e-4, 1.0, "cosine", floor=0.0) == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError, match=r"schedule must be one of \('constant', 'linear', 'cosine'\), found 'step'"):
        sparsity_strength(1e-4, 0.5, "step")
    for strength in (-1.0, float("nan"), "1e-4"):  # a NaN would turn every γ's gradient into NaN
        with pytest.raises(ValueError, match="strength and bias_strength must be finite numbers >= 0"):
            add_bn_l1_grad(YOLOv5("yolov5n"), strength=strength)
    assert not math.isnan(sparsity_strength(1e-4, 2.0, "linear"))
