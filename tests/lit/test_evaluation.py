"""mAP through torchmetrics from YOLO-layout batches."""

import pytest
import torch

from yolo_slim.lit.evaluation import make_map_metric, metric_inputs

TARGETS = torch.tensor([
    [0, 0, 0.25, 0.25, 0.2, 0.1],
    [0, 2, 0.70, 0.60, 0.3, 0.4],
    [1, 1, 0.50, 0.50, 0.5, 0.5],
])


def _perfect_detections(image_size=(160, 320)):
    height, width = image_size
    detections = []
    for image in range(2):
        rows = TARGETS[TARGETS[:, 0] == image]
        cx, cy, w, h = rows[:, 2] * width, rows[:, 3] * height, rows[:, 4] * width, rows[:, 5] * height
        boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)
        detections.append(torch.cat((boxes, torch.full((len(rows), 1), 0.9), rows[:, 1:2]), 1))
    return detections


def test_perfect_predictions_give_map_one():
    metric = make_map_metric(max_det=300)
    metric.update(*metric_inputs(_perfect_detections(), TARGETS, (160, 320)))
    results = metric.compute()
    assert results["map"].item() == pytest.approx(1.0)
    assert results["map_50"].item() == pytest.approx(1.0)


def test_wrong_class_and_shifted_boxes_lower_the_map():
    detections = _perfect_detections()
    detections[0][0, 5] = 1  # wrong class for one object
    detections[1][0, :4] += torch.tensor([30.0, 0.0, 30.0, 0.0])  # shifted box
    metric = make_map_metric(max_det=300)
    metric.update(*metric_inputs(detections, TARGETS, (160, 320)))
    assert metric.compute()["map"].item() < 0.7


def test_targets_are_converted_to_pixels_xyxy():
    _, truths = metric_inputs([torch.zeros((0, 6)), torch.zeros((0, 6))], TARGETS, (160, 320))
    torch.testing.assert_close(truths[0]["boxes"][0], torch.tensor([48.0, 32.0, 112.0, 48.0]))
    assert truths[1]["labels"].tolist() == [1]
