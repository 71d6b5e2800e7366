"""The warm-up + decay LR schedule and momentum warm-up."""

import pytest
import torch

from yolo_slim.lit.optim import parameter_groups
from yolo_slim.lit.schedule import WarmupDecayLR
from yolo_slim.models import YOLOv5


def _optimizer():
    model = YOLOv5("yolov5n", nc=2)
    return torch.optim.SGD(parameter_groups(model, 5e-4), lr=0.01, momentum=0.937, nesterov=True)


def _run(scheduler, steps):
    rates, momenta = [], []
    for _ in range(steps):
        rates.append([g["lr"] for g in scheduler.optimizer.param_groups])
        momenta.append(scheduler.optimizer.param_groups[1]["momentum"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates, momenta


def test_warmup_bias_falls_others_rise_then_linear_decay():
    optimizer = _optimizer()
    scheduler = WarmupDecayLR(optimizer, total_steps=1000, steps_per_epoch=50, warmup_epochs=3)
    assert scheduler.warmup_steps == 150
    rates, momenta = _run(scheduler, 1000)
    bias, weight = [r[0] for r in rates], [r[1] for r in rates]
    assert bias[0] == pytest.approx(0.1) and weight[0] == 0.0
    assert momenta[0] == pytest.approx(0.8) and momenta[150] == pytest.approx(0.937)
    assert bias[150] == pytest.approx(weight[150]) == pytest.approx(0.01 * (1 - 0.15 * 0.99))
    assert all(a > b for a, b in zip(bias[:150], bias[1:151]))
    assert all(a < b for a, b in zip(weight[:150], weight[1:151]))
    assert weight[999] == pytest.approx(0.01 * (0.01 + 0.99 / 1000), rel=1e-3)


def test_cosine_shape_and_resume_from_state():
    optimizer = _optimizer()
    scheduler = WarmupDecayLR(optimizer, total_steps=400, steps_per_epoch=40, warmup_epochs=0, shape="cosine")
    rates, _ = _run(scheduler, 200)
    assert rates[0][1] == pytest.approx(0.01)
    assert rates[199][1] == pytest.approx(0.01 * (0.01 + 0.99 * 0.5), rel=0.02)  # half-way: midpoint
    state = scheduler.state_dict()
    resumed_optimizer = _optimizer()
    resumed = WarmupDecayLR(resumed_optimizer, total_steps=400, steps_per_epoch=40, warmup_epochs=0, shape="cosine")
    resumed.load_state_dict(state)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
    resumed.step()
    scheduler.step()
    assert resumed.get_last_lr() == scheduler.get_last_lr()


def test_warmup_never_longer_than_half_the_run():
    scheduler = WarmupDecayLR(_optimizer(), total_steps=60, steps_per_epoch=20, warmup_epochs=3)
    assert scheduler.warmup_steps == 30


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"shape must be one of \('linear', 'cosine'\), found 'step'"):
        WarmupDecayLR(_optimizer(), total_steps=10, steps_per_epoch=5, shape="step")
    with pytest.raises(ValueError, match=r"final_lr_ratio must be in \(0, 1\]"):
        WarmupDecayLR(_optimizer(), total_steps=10, steps_per_epoch=5, final_lr_ratio=0)


def test_parameter_groups_split_like_yolov5():
    model = YOLOv5("yolov5n", nc=2)
    bias, weight, norm = parameter_groups(model, 5e-4)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norm["params"]) == len(norms) and norm["weight_decay"] == 0
    assert weight["weight_decay"] == 5e-4 and all(p.dim() == 4 for p in weight["params"])
    assert len(bias["params"]) == len(norms) + 3  # BN biases and the three Detect conv biases
    total = sum(p.numel() for group in (bias, weight, norm) for p in group["params"])
    assert total == sum(p.numel() for p in model.parameters())
