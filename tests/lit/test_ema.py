"""The weight EMA: ramped decay, buffers averaged, integer counters copied."""

import math

import pytest
import torch
from torch import nn

from yolo_slim.lit.ema import make_ema


def test_ramped_decay_and_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = make_ema(model, decay=0.9, ramp_updates=1.0)
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema.update_parameters(model)  # first update copies
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update_parameters(model)
    decay = 0.9 * (1 - math.exp(-1.0))
    assert ema.module[0].weight[0, 0].item() == pytest.approx(decay * 1.0 + (1 - decay) * 2.0)
    assert ema.module[1].running_mean[0].item() == pytest.approx((1 - decay) * 4.0)
    assert ema.module[1].num_batches_tracked.item() == 7


def test_bad_decay():
    with pytest.raises(ValueError, match=r"ema decay must be in \[0, 1\), found 1.0"):
        make_ema(nn.Linear(1, 1), decay=1.0)


def test_the_ema_and_its_counter_live_on_the_model_device():
    # An EMA made after a prune inside a DDP fit is never moved by Lightning: a CPU counter there
    # reaches DDP's buffer broadcast, which NCCL refuses. The meta device stands in for CUDA.
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).to("meta")
    ema = make_ema(model)
    assert {tensor.device.type for tensor in [*ema.parameters(), *ema.buffers()]} == {"meta"}
    assert ema.n_averaged.device.type == "meta"
