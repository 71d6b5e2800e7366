"""State-dict compatibility with ultralytics' DetectionModel, BatchNorm settings, Detect init and decoding."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from yolo_slim.models import YOLOv5
from yolo_slim.models.detect import Detect

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["yolov5n", "yolov5n-v5", "yolov3", "yolov3-tiny", "yolov5s-ghost",
                                  "yolov5s-transformer"])
def test_keys_and_shapes_equal_ultralytics(name):
    # Golden files written by benchmarks/dump_reference_keys.py from ultralytics yolov5==7.0.14,
    # in their order (strict loading does not care about order, but the listing makes diffs readable).
    expected = [line.split() for line in (DATA / f"ultralytics_keys_{name}.txt").read_text().splitlines()]
    got = [[key, "x".join(str(d) for d in t.shape) or "scalar"] for key, t in YOLOv5(name, nc=80).state_dict().items()]
    assert got == expected


def test_named_examples_from_the_issue():
    state = YOLOv5("yolov5s", nc=80).state_dict()
    assert state["model.0.conv.weight"].shape == (32, 3, 6, 6)
    assert state["model.2.m.0.cv1.bn.running_var"].shape == (32,)
    assert state["model.24.m.0.weight"].shape == (255, 128, 1, 1)
    assert "model.0.conv.conv.weight" in YOLOv5("yolov5s-v5").state_dict()


def test_anchors_are_stored_in_stride_units():
    anchors = YOLOv5("yolov5s").state_dict()["model.24.anchors"]
    assert anchors.shape == (3, 3, 2)
    assert torch.equal(anchors[0] * 8, torch.tensor([[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]))
    assert torch.equal(anchors[2] * 32, torch.tensor([[116.0, 90.0], [156.0, 198.0], [373.0, 326.0]]))


def test_weights_move_between_models_strictly():
    source, target = YOLOv5("yolov5n", nc=4), YOLOv5("yolov5n", nc=4)
    target.load_state_dict(source.state_dict(), strict=True)
    image = torch.rand(1, 3, 96, 64)
    assert torch.equal(source.eval()(image), target.eval()(image))


def test_batchnorm_settings_match_ultralytics():
    norms = [m for m in YOLOv5("yolov5n").modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.03 for m in norms)


def test_detect_bias_priors():
    torch.manual_seed(0)
    detect = YOLOv5("yolov5s", nc=80).detect
    for conv, stride in zip(detect.m, (8, 16, 32)):
        bias = conv.bias.detach().view(3, 85)
        bound = 1 / math.sqrt(conv.in_channels)  # nn.Conv2d's default uniform bias range
        objectness_prior = math.log(8 / (640 / stride) ** 2)
        class_prior = math.log(0.6 / (80 - 0.99999))
        assert (bias[:, 4] - objectness_prior).abs().max() <= bound
        assert (bias[:, 5:] - class_prior).abs().max() <= bound
        assert bias[:, :4].abs().max() <= bound  # box outputs keep the plain init


def test_detect_decodes_one_cell_by_hand():
    torch.manual_seed(0)
    detect = Detect(nc=2, anchors=[[10, 20, 30, 40]], in_channels=[4], strides=[8]).eval()
    feature = torch.randn(1, 4, 2, 3)
    decoded = detect([feature])  # (1, 2 anchors * 2 * 3 cells, 7)
    raw = detect.m[0](feature).view(1, 2, 7, 2, 3)  # (B, na, no, ny, nx)
    anchor, row, col = 1, 1, 2
    p = raw[0, anchor, :, row, col].sigmoid()
    expected = torch.cat([
        (p[0:1] * 2 - 0.5 + col) * 8, (p[1:2] * 2 - 0.5 + row) * 8,
        (p[2:3] * 2) ** 2 * 30, (p[3:4] * 2) ** 2 * 40, p[4:],
    ])
    index = anchor * 6 + row * 3 + col
    torch.testing.assert_close(decoded[0, index], expected)


def test_input_size_must_be_a_multiple_of_the_largest_stride():
    with pytest.raises(ValueError, match=r"multiples of 32, got \(64, 80\)"):
        YOLOv5("yolov5n")(torch.zeros(1, 3, 64, 80))
