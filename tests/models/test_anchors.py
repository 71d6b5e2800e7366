"""AutoAnchor's math on hand-made box sizes, and an anchor count in a yaml."""

import numpy as np
import pytest
import torch

from yolo_slim.models import YOLOv5, load_model_yaml
from yolo_slim.models.anchors import anchor_fitness, best_possible_recall, fit_anchors


def test_recall_counts_boxes_within_the_ratio_of_some_anchor():
    anchors = np.array([[10.0, 10.0], [100.0, 50.0]])
    sizes = np.array([[10, 10], [39, 10], [41, 10], [100, 50], [390, 195], [401, 200]], dtype=float)
    # [39, 10] is 3.9x the first anchor (inside anchor_t 4), [41, 10] 4.1x; [390, 195] 3.9x the second, [401, 200] 4.01x.
    assert best_possible_recall(anchors, sizes, 4.0) == pytest.approx(4 / 6)
    assert anchor_fitness(anchors, np.array([[10.0, 10.0]]), 4.0) == pytest.approx(1.0)
    assert best_possible_recall(anchors, np.zeros((0, 2)), 4.0) == 0.0


def _three_clusters(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[8, 8], [60, 30], [300, 300]], dtype=float)
    return np.concatenate([c * rng.uniform(0.9, 1.1, size=(200, 2)) for c in centres])


def test_bad_anchors_are_refitted_to_the_clusters_deterministically():
    sizes = _three_clusters()
    bad = np.array([[40.0, 40.0], [45.0, 45.0], [50.0, 50.0]])  # only the middle cluster matches
    assert best_possible_recall(bad, sizes, 4.0) == pytest.approx(1 / 3)
    fit = fit_anchors(bad, sizes, 4.0, generations=200, seed=3)
    assert fit.changed and fit.recall_before == pytest.approx(1 / 3) and fit.recall_after == 1.0
    assert np.all(np.diff(fit.anchors.prod(axis=1)) > 0)  # sorted by area
    assert np.allclose(fit.anchors, [[8, 8], [60, 30], [300, 300]], rtol=0.2)
    again = fit_anchors(bad, sizes, 4.0, generations=200, seed=3)
    assert np.array_equal(again.anchors, fit.anchors)  # the same seed, the same anchors


def test_thin_boxes_are_fitted_and_too_few_boxes_start_from_random_sizes():
    # Poles 1 px wide: ultralytics keeps a box with one side of 2 px or more, so the anchors must fit them.
    rng = np.random.default_rng(0)
    poles = np.stack([rng.uniform(1.0, 1.5, 300), rng.uniform(40, 44, 300)], axis=1)
    square = np.array([[10.0, 10.0], [12.0, 12.0], [14.0, 14.0]])
    fit = fit_anchors(square, poles, 4.0, generations=300, seed=0)
    assert fit.changed and fit.recall_before == 0.0 and fit.recall_after > 0.9
    # Two boxes for three placeholder anchors: too few for k-means, yet they are fitted (not left at 0..5 px).
    placeholders = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    few = fit_anchors(placeholders, np.array([[30.0, 60.0], [32.0, 64.0]]), 4.0, generations=300, seed=0,
                      force=True)
    assert few.changed and few.recall_after == 1.0 and np.isfinite(few.anchors).all()
    assert fit_anchors(placeholders, np.zeros((0, 2)), 4.0, force=True).changed is False  # nothing to fit to


def test_anchors_that_fit_are_kept():
    sizes = _three_clusters()
    good = np.array([[8.0, 8.0], [60.0, 30.0], [300.0, 300.0]])
    fit = fit_anchors(good, sizes, 4.0, seed=0)
    assert not fit.changed and np.array_equal(fit.anchors, good) and fit.recall_before == 1.0


def test_an_anchor_count_builds_placeholders_and_set_anchors_fills_the_levels():
    data = load_model_yaml("yolov5n")
    data["anchors"] = 2
    model = YOLOv5(data, nc=3)
    assert model.detect.anchors.shape == (3, 2, 2)
    assert model.spec.anchors == ((0, 1, 2, 3),) * 3  # ultralytics' placeholders for `anchors: 2`
    pairs = torch.tensor([[100.0, 90.0], [10.0, 12.0], [30.0, 60.0], [20.0, 20.0], [200, 150], [60, 50]])
    model.set_anchors(pairs)
    # Sorted by area, two per level, finest stride first; the spec (read from Detect) follows.
    assert model.anchors_px().tolist() == [[[10, 12], [20, 20]], [[30, 60], [60, 50]], [[100, 90], [200, 150]]]
    assert model.spec.anchors[0] == (10, 12, 20, 20)
    with pytest.raises(ValueError, match="needs 6 \\(w, h\\) pairs, got 2"):
        model.set_anchors(pairs[:2])
