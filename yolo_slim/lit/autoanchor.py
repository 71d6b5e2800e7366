"""AutoAnchor as a Lightning callback: at the start of a fresh fit, check the anchors against the training
boxes and fit new ones when they fit badly (the math: :mod:`yolo_slim.models.anchors`)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch

from yolo_slim.lit.console import show_info_lines
from yolo_slim.models.anchors import RECALL_TARGET, are_placeholders, fit_anchors

log = logging.getLogger(__name__)


class AutoAnchor(L.Callback):
    """Check (and refit) the anchors of a :class:`~yolo_slim.lit.YOLOv5Module` before training starts.

    Rank 0 computes, every rank installs the same anchors (broadcast). A resumed fit keeps the anchors its
    checkpoint holds. The module must offer ``set_anchors`` (YOLOv5Module updates network, EMA and loss
    together) and the datamodule a ``train`` dataset with ``box_sizes()`` (YOLODataModule's).

    Args:
        anchor_t: The matching ratio; default: the module's loss setting (``loss.anchor_t``).
        generations: Evolution steps after k-means.
        seed: Seed of the fit and of the scale jitter the check applies (YOLOv5 checks the boxes under
            its ±10% scale augmentation); the same data and seed give the same anchors.
    """

    def __init__(self, anchor_t: float | None = None, generations: int = 1000, seed: int = 0) -> None:
        if anchor_t is not None and anchor_t <= 1:
            raise ValueError(f"anchor_t must be > 1 (a ratio), found {anchor_t}")
        if generations < 0:
            raise ValueError(f"generations must be >= 0, found {generations}")
        self.anchor_t, self.generations, self.seed = anchor_t, generations, seed
        self.result: dict[str, Any] | None = None  # what the check found, for logs and summary.json

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        show_info_lines()  # the recall line, in a script that set up no logging
        if trainer.ckpt_path is not None:
            return  # resumed: the checkpoint's anchors are the ones that were trained
        if not hasattr(pl_module, "set_anchors"):
            raise TypeError(f"AutoAnchor needs a module with set_anchors (YOLOv5Module); "
                            f"{type(pl_module).__name__} has none")
        dataset = getattr(getattr(trainer, "datamodule", None), "datasets", {}).get("train")
        if dataset is None or not hasattr(dataset, "box_sizes"):
            log.warning("AutoAnchor: no training dataset with box sizes (YOLODataModule's): anchors left as they are")
            return
        result = None
        if trainer.is_global_zero:
            result = self._check(pl_module, dataset.box_sizes())
        result = trainer.strategy.broadcast(result, src=0)
        self.result = result
        if result["changed"]:
            pl_module.set_anchors(torch.tensor(result["anchors"]))
        if not trainer.is_global_zero:
            return  # every rank installed rank 0's result: one of them says what it was
        if result["changed"]:
            log.info("AutoAnchor: best possible recall %.4f with the model's anchors (< %.2f); fitted anchors reach "
                     "%.4f and replace them: %s", result["recall_before"], RECALL_TARGET, result["recall_after"],
                     np.round(result["anchors"], 1).tolist())
        elif result["placeholders"]:
            log.warning("AutoAnchor: the model has placeholder anchors (its yaml gives a count) and none of its %d "
                        "training boxes has a side of 2 px or more to fit them to: training goes on with placeholders",
                        result["boxes"])
        else:
            log.info("AutoAnchor: best possible recall %.4f with the model's anchors: kept", result["recall_before"])

    def _check(self, pl_module: L.LightningModule, sizes: np.ndarray) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        jittered = sizes * rng.uniform(0.9, 1.1, size=(len(sizes), 1))
        anchor_t = self.anchor_t or float(pl_module.loss_config.anchor_t)
        current = pl_module.model.anchors_px().reshape(-1, 2).cpu().double().numpy()
        # Placeholders are always refitted: on small boxes their recall can pass the target, yet a
        # zero-width anchor never matches and the rest are sized by their index, not by the data.
        placeholders = are_placeholders(current)
        fit = fit_anchors(current, jittered, anchor_t, self.generations, self.seed, force=placeholders)
        return {"changed": fit.changed, "recall_before": fit.recall_before, "recall_after": fit.recall_after,
                "anchors": fit.anchors.tolist(), "boxes": len(sizes), "placeholders": placeholders}
