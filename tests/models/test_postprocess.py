"""NMS wiring: thresholds, per-class suppression, limits."""

import pytest
import torch

from yolo_slim.models.postprocess import NMSConfig, non_max_suppression


def _row(cx, cy, w, h, objectness, *class_probabilities):
    return [cx, cy, w, h, objectness, *class_probabilities]


def test_overlapping_boxes_of_one_class_are_suppressed_other_classes_kept():
    predictions = torch.tensor([[
        _row(50, 50, 20, 20, 0.9, 0.9, 0.0),   # best, class 0
        _row(52, 50, 20, 20, 0.8, 0.9, 0.0),   # overlaps it (IoU ~0.82), same class: suppressed
        _row(52, 50, 20, 20, 0.8, 0.0, 0.9),   # same place, class 1: kept
        _row(150, 150, 10, 10, 0.5, 0.5, 0.0),  # elsewhere: kept
    ]])
    (found,) = non_max_suppression(predictions, NMSConfig(conf_threshold=0.1, iou_threshold=0.5))
    assert found.shape == (3, 6)
    torch.testing.assert_close(found[0], torch.tensor([40.0, 40.0, 60.0, 60.0, 0.81, 0.0]))
    assert sorted(found[:, 5].tolist()) == [0.0, 0.0, 1.0]
    assert found[:, 4].tolist() == sorted(found[:, 4].tolist(), reverse=True)


def test_confidence_is_objectness_times_class_and_thresholded():
    predictions = torch.tensor([[_row(50, 50, 20, 20, 0.5, 0.3, 0.0)]])  # score 0.15
    assert non_max_suppression(predictions, NMSConfig(conf_threshold=0.2))[0].shape == (0, 6)
    (found,) = non_max_suppression(predictions, NMSConfig(conf_threshold=0.1))
    assert found[0, 4].item() == pytest.approx(0.15)


def test_multi_label_and_best_class_only():
    predictions = torch.tensor([[_row(50, 50, 20, 20, 1.0, 0.6, 0.5)]])
    assert non_max_suppression(predictions, NMSConfig(conf_threshold=0.1, multi_label=True))[0].shape[0] == 2
    (single,) = non_max_suppression(predictions, NMSConfig(conf_threshold=0.1, multi_label=False))
    assert single.shape[0] == 1 and single[0, 5] == 0


def test_max_det_keeps_the_best_and_batches_are_independent():
    rows = [_row(20 * i + 10, 10, 8, 8, 0.1 + 0.01 * i, 1.0) for i in range(30)]
    low = [row[:4] + [0.0, 0.0] for row in rows[3:]]  # below any threshold
    predictions = torch.tensor([rows, rows[:3] + low])
    first, second = non_max_suppression(predictions, NMSConfig(conf_threshold=0.05, max_det=5))
    assert first.shape[0] == 5 and second.shape[0] == 3
    assert first[0, 4].item() == pytest.approx(0.39)


def test_nms_config_validation():
    with pytest.raises(ValueError, match=r"nms.iou_threshold must be in \[0, 1\], found 1.5"):
        NMSConfig(iou_threshold=1.5)
    with pytest.raises(ValueError, match="nms.max_det must be >= 1"):
        NMSConfig(max_det=0)
