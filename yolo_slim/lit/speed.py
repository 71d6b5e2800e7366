"""Training speed: images per second of each training epoch, in the log and in the logger.

Lightning's ``ThroughputMonitor`` would do this, but it calls ``torch.cuda.synchronize()`` after
every batch to read its timer, which stalls the very CPU/GPU overlap it measures (the next batch's
loading and launches then wait for the GPU). This callback synchronises twice per epoch: when its
clock starts and when the epoch ends; everything between is wall time of real training steps,
data loading and augmentation included.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

log = logging.getLogger(__name__)

METRIC = "train/images_per_s"


class TrainingSpeed(L.Callback):
    """Log training images/s per epoch: ``train/images_per_s`` and a line ``epoch N: R training images/s``.

    The clock of each epoch starts at its ``warmup_batches``-th batch: the first batches of an epoch
    pay for things that are not the steady state (dataloader workers starting, cuDNN choosing its
    algorithms after a prune changed the layer shapes). An epoch with no more batches than that
    gets no figure. Under DDP the rate is rank 0's images times the world size (every rank takes
    the same batch size and the steps keep the ranks in lockstep).

    Args:
        warmup_batches: Batches at the start of each epoch left out of the timing.

    Attributes:
        rates: Images/s of each timed epoch, by epoch number.
    """

    def __init__(self, warmup_batches: int = 2) -> None:
        if isinstance(warmup_batches, bool) or not isinstance(warmup_batches, int) or warmup_batches < 0:
            raise ValueError(f"TrainingSpeed: warmup_batches must be an integer >= 0, found {warmup_batches!r}")
        self.warmup_batches = warmup_batches
        self.rates: dict[int, float] = {}
        self._started: float | None = None
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._images = None, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict,
                             batch_idx: int) -> None:
        if batch_idx == self.warmup_batches:
            _synchronize(pl_module)
            self._started = time.perf_counter()
        if batch_idx >= self.warmup_batches:
            self._images += len(batch["images"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is None:
            return
        _synchronize(pl_module)
        rate = self._images * trainer.world_size / max(time.perf_counter() - self._started, 1e-9)
        self.rates[trainer.current_epoch] = rate
        pl_module.log(METRIC, rate, on_step=False, on_epoch=True, rank_zero_only=True)
        if trainer.is_global_zero:
            log.info("epoch %d: %.1f training images/s", trainer.current_epoch, rate)


def _synchronize(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
