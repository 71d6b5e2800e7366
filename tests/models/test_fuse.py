"""Folding BatchNorm into the convolutions for inference."""

import pytest
import torch
from torch import nn

from yolo_slim.models import YOLOv5, fuse_batchnorm
from yolo_slim.models.fuse import is_fused
from yolo_slim.models.info import cpu_latency_ms
from yolo_slim.models.testing import randomize_norms
from yolo_slim.slim import add_bn_l1_grad, compact, plan_pruning


@pytest.mark.parametrize("name", ["yolov5n", "yolov5n-v5"])
def test_fused_model_gives_the_same_detections_and_leaves_the_original_alone(name):
    torch.manual_seed(0)
    model = randomize_norms(YOLOv5(name, nc=3))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fused = fuse_batchnorm(model)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in fused.modules())
    assert is_fused(fused) and not is_fused(model)
    images = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        expected, got = model(images)[0], fused(images)[0]
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-4)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_fusing_a_compacted_model_keeps_its_outputs():
    model = randomize_norms(YOLOv5("yolov5n", nc=3))
    small = compact(model, plan_pruning(model, ratio=0.5)).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fuse_batchnorm(small)(images)[0], small(images)[0], atol=1e-3, rtol=1e-4)


def test_slimming_functions_refuse_a_fused_model():
    model = randomize_norms(YOLOv5("yolov5n", nc=3))
    fused = fuse_batchnorm(model)
    with pytest.raises(ValueError, match="plan_pruning.*fused"):
        plan_pruning(fused, ratio=0.5)
    with pytest.raises(ValueError, match="compact.*fused"):
        compact(fused, plan_pruning(model, ratio=0.5))
    with pytest.raises(ValueError, match="sparsity_target.*fused"):
        add_bn_l1_grad(fused, 1e-4)


def test_cpu_latency_measures_a_copy_and_gives_a_positive_time():
    model = YOLOv5("yolov5n", nc=3).train()
    latency = cpu_latency_ms(model, 64, runs=3, warmup=1)
    assert latency > 0
    assert model.training and any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    assert cpu_latency_ms(YOLOv5("yolov5n", nc=3, in_channels=1), 64, runs=1, warmup=0) > 0  # grayscale input


def test_cpu_latency_takes_any_module_and_skips_channels_last_when_a_tensor_is_5d():
    class Wrapped(nn.Module):  # a user's wrapper with a 5-D buffer: channels_last would refuse it
        def __init__(self) -> None:
            super().__init__()
            self.net = YOLOv5("yolov5n", nc=3)
            self.register_buffer("extra", torch.zeros(1, 1, 1, 1, 1))

        def forward(self, images):
            return self.net(images)

    assert cpu_latency_ms(Wrapped(), 64, runs=2, warmup=1) > 0
    assert is_fused(fuse_batchnorm(Wrapped()))  # the folding works inside any module
