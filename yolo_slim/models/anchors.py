"""AutoAnchor: how well a model's anchors fit the training boxes, and new anchors when they fit badly.

YOLOv5's recipe (its ``check_anchors`` and ``kmean_anchors``), in plain numpy and scipy:

* A box matches an anchor when neither its width nor its height ratio to the anchor exceeds
  ``anchor_t`` (the loss's matching rule). The *best possible recall* is the share of training
  boxes that match at least one anchor of any level.
* Below 0.98, new anchors are fitted: k-means on the box sizes (scipy's, on sizes whitened by their
  standard deviation), then a short evolution that multiplies the anchors by random factors and keeps
  a mutation when it raises the fitness (the mean best match ratio, counting only matches).
* The new anchors are used only if their recall beats the old one.

Sizes are in input pixels at the training size (the long image side scaled to ``imgsz``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans

log = logging.getLogger(__name__)

RECALL_TARGET = 0.98  # ultralytics' threshold: fit new anchors below this best possible recall
MIN_BOX_PIXELS = 2.0  # a box with both sides under this is too small to inform anchors (ultralytics drops them)


def are_placeholders(anchors: np.ndarray) -> bool:
    """Whether ``anchors`` are what a yaml's anchor count builds (ultralytics' ``0, 1, 2, ...`` on every level,
    :func:`yolo_slim.models.registry.placeholder_anchors`). Told by a side of 0, which every level's first
    placeholder has and no real anchor can: it would match no box at all."""
    return bool((np.asarray(anchors) <= 0).any())


def _match_ratios(anchors: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(n boxes, k anchors): min over w and h of min(r, 1/r), r the box / anchor ratio; 1 is a perfect fit."""
    ratio = sizes[:, None, :] / np.maximum(anchors[None, :, :], 1e-9)
    return np.minimum(ratio, 1 / ratio).min(axis=2)


def best_possible_recall(anchors: np.ndarray, sizes: np.ndarray, anchor_t: float) -> float:
    """Share of boxes (n, 2) matching at least one of ``anchors`` (k, 2) under ``anchor_t``; 0 for no boxes."""
    if len(sizes) == 0:
        return 0.0
    return float((_match_ratios(anchors, sizes).max(axis=1) > 1 / anchor_t).mean())


def anchor_fitness(anchors: np.ndarray, sizes: np.ndarray, anchor_t: float) -> float:
    """Mean over boxes of the best match ratio, a non-match counting 0 (what the evolution maximises)."""
    best = _match_ratios(anchors, sizes).max(axis=1)
    return float((best * (best > 1 / anchor_t)).mean())


@dataclass(frozen=True)
class AnchorFit:
    """The outcome of :func:`fit_anchors`: the anchors to use, and the recall before and after."""

    anchors: np.ndarray  # (k, 2) pixels, sorted by area
    recall_before: float
    recall_after: float
    changed: bool


def fit_anchors(anchors: np.ndarray, sizes: np.ndarray, anchor_t: float = 4.0, generations: int = 1000,
                seed: int = 0, force: bool = False) -> AnchorFit:
    """Check ``anchors`` (k, 2) against the box ``sizes`` (n, 2) and fit new ones when their recall is low.

    Args:
        anchors: The current anchors in pixels (all levels, flattened to k pairs).
        sizes: Training box widths and heights in pixels at the training size.
        anchor_t: The loss's matching ratio.
        generations: Evolution steps after k-means.
        seed: Seed of k-means and the evolution: the same inputs and seed give the same anchors.
        force: Fit even when the current recall reaches :data:`RECALL_TARGET` (a yaml that gives only a
            count of anchors has no anchors worth keeping).

    Returns:
        The anchors to use: the fitted ones when their recall is higher, else the current ones.
    """
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    before = best_possible_recall(anchors, sizes, anchor_t)
    # As ultralytics filters: a box is dropped when both sides are under 2 px; a pole or a line (one thin side) is
    # a real shape the anchors must fit.
    usable = sizes[(sizes >= MIN_BOX_PIXELS).any(axis=1)]
    if (before >= RECALL_TARGET and not force) or len(usable) == 0:
        return AnchorFit(anchors, before, before, False)
    rng = np.random.default_rng(seed)
    spread = usable.std(axis=0)
    spread[spread == 0] = 1.0  # one box, or all of one size: nothing to whiten
    centres = np.empty((0, 2))
    if len(usable) >= len(anchors):  # k-means needs at least as many points as clusters
        centres, _ = kmeans(usable / spread, len(anchors), iter=30, rng=rng)
    if len(centres) != len(anchors):  # fewer boxes than anchors, or k-means lost clusters: start from random sizes
        centres = np.sort(rng.uniform(size=(len(anchors), 2)) * usable.max(axis=0), axis=0) / spread
    fitted = centres * spread
    fitness = anchor_fitness(fitted, usable, anchor_t)
    # Mutate each coordinate with probability 0.9 by a factor around 1 (sigma 0.1, kept in [0.3, 3]).
    for _ in range(generations):
        factors = np.ones_like(fitted)
        while (factors == 1).all():
            mutate = rng.random(fitted.shape) < 0.9
            factors = (mutate * rng.random() * rng.standard_normal(fitted.shape) * 0.1 + 1).clip(0.3, 3.0)
        candidate = (fitted * factors).clip(min=MIN_BOX_PIXELS)
        candidate_fitness = anchor_fitness(candidate, usable, anchor_t)
        if candidate_fitness > fitness:
            fitted, fitness = candidate, candidate_fitness
    fitted = fitted[np.argsort(fitted.prod(axis=1))]
    after = best_possible_recall(fitted, sizes, anchor_t)
    if after <= before and not force:
        return AnchorFit(anchors, before, before, False)
    return AnchorFit(fitted, before, after, True)
