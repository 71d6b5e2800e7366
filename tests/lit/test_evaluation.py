"""mAP through torchmetrics from YOLO-layout batches."""

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from yolo_slim.lit.evaluation import blank_out, make_map_metric, metric_inputs, repeated_positions

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


@pytest.mark.parametrize("max_det", [1, 5, 10, 100])
def test_any_max_det_makes_a_metric_scored_at_that_limit(max_det):
    """torchmetrics refuses fewer than three thresholds: 1 and 10 used to collapse into two."""
    metric = make_map_metric(max_det=max_det)
    metric.update(*metric_inputs(_perfect_detections(), TARGETS, (160, 320)))
    assert metric.max_detection_thresholds[-1] == max_det  # COCO's limit, per image and class
    assert metric.compute()["map"].item() == pytest.approx(1.0)


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


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_distributed_samplers_repeats_are_found_and_blanked(shuffle):
    # 7 images on 2 processes in batches of 2: each reads 4, so one image is read twice.
    dataset = list(range(7))
    seen, repeats = [], []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=shuffle, seed=3)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler)
        for batch_index, batch in enumerate(loader):
            positions = repeated_positions(loader, batch_index, len(batch))
            seen += [image for j, image in enumerate(batch.tolist()) if j not in positions]
            repeats += [image for j, image in enumerate(batch.tolist()) if j in positions]
    assert sorted(seen) == dataset and len(repeats) == 1  # every image once, the repeat found
    assert repeated_positions(DataLoader(dataset, batch_size=2), 0, 2) == []  # one process: none
    predictions = [{"boxes": torch.ones(2, 4), "scores": torch.ones(2), "labels": torch.zeros(2, dtype=torch.long)}]
    truths = [{"boxes": torch.ones(1, 4), "labels": torch.zeros(1, dtype=torch.long)}]
    blank_out(predictions, truths, [0])
    assert [len(predictions[0][key]) for key in ("boxes", "scores", "labels")] == [0, 0, 0]
    assert predictions[0]["boxes"].shape == (0, 4) and truths[0]["boxes"].shape == (0, 4)
    assert len(truths[0]["labels"]) == 0
