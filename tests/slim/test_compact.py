"""Compaction: a smaller network, rebuildable from its spec, exact when removed channels are dead."""


import pytest
import torch
from model_support import kill_removed
from torch import nn

from yolo_slim.models import YOLOv5, count_parameters, load_model_yaml
from yolo_slim.slim import PruningPlan, compact, plan_pruning, trace_channels


def _small(name: str, width: float = 0.125, depth: float = 0.33) -> dict:
    data = load_model_yaml(name)
    data["width_multiple"], data["depth_multiple"] = width, depth
    return data


@pytest.mark.parametrize("name", ["yolov5n", "yolov5n-v5", "yolov5s", "yolov5n6", "yolov5-p34", "yolov5s-LeakyReLU",
                                  "yolov5s-ghost", "yolov5s-transformer", "yolov3-tiny", "yolov3", "yolov3-spp"])
def test_exact_when_removed_channels_are_dead(random_model, name):
    # yolov3 and -spp narrowed (their 62M parameters are slow on CPU): the layout, repeats included, is the same.
    model = random_model(_small(name) if name.startswith("yolov3-spp") or name == "yolov3" else name)
    plan = plan_pruning(model, ratio=0.5)
    kill_removed(model, plan, zero_bias=True)
    small = compact(model, plan)
    assert count_parameters(small) < 0.75 * count_parameters(model)
    largest = int(max(model.spec.downsampling()))  # the input must divide by it: 64 for the P6 layout
    image = torch.rand(2, 3, 3 * largest, 4 * largest)
    with torch.no_grad():
        torch.testing.assert_close(small(image), model(image), rtol=1e-5, atol=1e-4)


def test_folding_the_constant_of_removed_channels(random_model):
    model = random_model("yolov5n")
    plan = plan_pruning(model, ratio=0.5)
    kill_removed(model, plan, zero_bias=False)  # γ = 0 but β != 0: the channels emit act(β)
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected = model(image)
        folded = (compact(model, plan)(image) - expected).abs().max()
        unfolded = (compact(model, plan, fold_removed=False)(image) - expected).abs().max()
    assert folded < 0.5 * unfolded


@pytest.mark.parametrize("name", ["yolov5n", "yolov5s-LeakyReLU"])  # the constant is act(β) for the model's act
def test_fold_is_exact_for_1x1_consumers(random_model, name):
    model = random_model(name)
    sizes = {name: group.size for name, group in trace_channels(model.spec).groups.items()}
    keep = {name: list(range(size)) for name, size in sizes.items()}
    keep["4.cv2"] = list(range(0, sizes["4.cv2"], 2))  # read only by 4.cv3, a 1x1 conv
    keep["9.cv1"] = list(range(0, sizes["9.cv1"], 2))  # read by SPPF's 1x1 cv2, four times
    plan = PruningPlan(keep=keep, policy="grouped", threshold=0.0, sizes=sizes)
    kill_removed(model, plan, zero_bias=False)
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(compact(model, plan)(image), model(image), rtol=1e-5, atol=1e-4)


def test_fold_for_3x3_consumers_is_exact_away_from_the_border(random_model):
    model = random_model("yolov5n")
    sizes = {name: group.size for name, group in trace_channels(model.spec).groups.items()}
    keep = {name: list(range(size)) for name, size in sizes.items()}
    keep["4.m.0.cv1"] = list(range(0, sizes["4.m.0.cv1"], 2))  # read by 4.m.0.cv2, a 3x3 conv
    plan = PruningPlan(keep=keep, policy="grouped", threshold=0.0, sizes=sizes)
    kill_removed(model, plan, zero_bias=False)
    small = compact(model, plan)
    image = torch.rand(1, 3, 128, 128)

    def layer_four(network):
        x = image
        for layer in network.model[:5]:
            x = layer(x)
        return x  # (1, 64, 16, 16)

    with torch.no_grad():
        difference = (layer_four(small) - layer_four(model)).abs()
    assert difference[..., 1:-1, 1:-1].max() < 1e-4
    assert difference.max() > 1e-3  # the border does differ: zero padding stood in for the constant


def test_compacted_model_rebuilds_from_its_spec_and_keeps_identity(random_model):
    model = random_model("yolov5s-v5", nc=5)
    model.names = ["a", "b", "c", "d", "e"]
    with torch.no_grad():
        model.detect.anchors.mul_(1.5)  # as auto-anchor would have changed them after the yaml was read
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = compact(model, plan_pruning(model, ratio=0.6))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    empty = YOLOv5.from_spec(small.spec)
    empty.load_state_dict(small.state_dict(), strict=True)
    assert small.names == model.names and small.nc == 5
    assert torch.equal(small.detect.anchors, model.detect.anchors)
    assert torch.equal(small.stride, model.stride)
    assert small.spec.anchors == model.spec.anchors
    assert type(small.model[2]) is type(model.model[2])


def test_sync_batchnorm_stays_and_mode_is_kept(random_model):
    model = nn.SyncBatchNorm.convert_sync_batchnorm(random_model())
    small = compact(model, plan_pruning(model, ratio=0.3))
    assert any(isinstance(m, nn.SyncBatchNorm) for m in small.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in small.modules())
    assert not small.training
    assert compact(model.train(), plan_pruning(model, ratio=0.3)).training


def test_frozen_parameters_stay_frozen(random_model):
    model = random_model("yolov5n")
    model.model[0].requires_grad_(False)  # a frozen stem, as a user freezes a backbone
    small = compact(model, plan_pruning(model, ratio=0.5))
    trainable = {name: parameter.requires_grad for name, parameter in small.named_parameters()}
    assert not any(value for name, value in trainable.items() if name.startswith("model.0."))
    assert all(value for name, value in trainable.items() if not name.startswith("model.0."))

