"""Parameter and GFLOPs counts against ultralytics' published figures."""

import pytest
import torch

from yolo_slim.models import YOLOv5, count_gflops, model_info
from yolo_slim.models.info import format_table

# ultralytics README, GFLOPs at 640, nc=80 (their thop count); ours comes from torch's flop counter.
PUBLISHED_GFLOPS = {"yolov5n": 4.5, "yolov5s": 16.5, "yolov5m": 49.0, "yolov5l": 109.1, "yolov5x": 205.7}


@pytest.mark.parametrize("name,expected", PUBLISHED_GFLOPS.items())
def test_gflops_within_three_percent_of_ultralytics(name, expected):
    assert count_gflops(YOLOv5(name, nc=80), 640) == pytest.approx(expected, rel=0.03)


def test_gflops_scale_with_image_area_and_leave_the_model_alone():
    model = YOLOv5("yolov5n")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    at_320, at_640 = count_gflops(model, 320), count_gflops(model, 640)
    assert at_640 == pytest.approx(4 * at_320, rel=0.01)
    assert count_gflops(model, (320, 640)) == pytest.approx(2 * at_320, rel=0.01)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_per_layer_table_sums_to_totals():
    model = YOLOv5("yolov5s")
    info = model_info(model, 640)
    assert sum(layer.params for layer in info.layers) == info.params == 7_235_389
    assert sum(layer.gflops for layer in info.layers) == pytest.approx(info.gflops, rel=1e-6)
    assert [layer.out_channels for layer in info.layers][:3] == [32, 64, 64]
    table = format_table(info)
    assert "7,235,389 parameters" in table and "SPPF" in table and "17,20,23" in table
