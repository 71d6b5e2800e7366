"""Training speed: images per second of each training epoch, in the log and in the logger.

Lightning's ``ThroughputMonitor`` would do this, but it calls ``torch.cuda.synchronize()`` after
every batch to read its timer, which stalls the very CPU/GPU overlap it measures (the next batch's
loading and launches then wait for the GPU). This callback synchronises only where its clock starts
and stops (twice per epoch, and around a mid-epoch validation); everything it times is wall time of
training steps, data loading and augmentation included, validation excluded.

The same window also gives the share of it the training loop spent waiting for its next batch
(from the end of one batch to the start of the next: the data loader's ``next``, the copy to the
device, Lightning's bookkeeping). It needs no synchronisation: the loop already waits for the
device once per step (the loss's target matching reads its sizes), so time the loop spends waiting
for data is time the device has nothing queued. A large share says "more workers" (or a cheaper
augmentation); a small one says the steps themselves bound the speed.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

from yolo_slim.lit.console import show_info_lines

log = logging.getLogger(__name__)

METRIC = "train/images_per_s"
DATA_WAIT_METRIC = "train/data_wait_share"


class TrainingSpeed(L.Callback):
    """Log training images/s per epoch and the share of that time spent waiting for data.

    Logs ``train/images_per_s`` and ``train/data_wait_share`` (0 to 1) and a line
    ``epoch N: R training images/s, W% of it waiting for data``.

    The clock of each epoch starts at its ``warmup_batches``-th batch, since the first batches of an
    epoch pay for things that are not the steady state (dataloader workers starting, cuDNN choosing
    its algorithms after a prune changed the layer shapes), and stops at the end of its training
    batches, before validation and checkpointing. An epoch with no more batches than the warm-up
    gets no figure. Under DDP the rate is rank 0's images times the world size (every rank takes
    the same batch size and the steps keep the ranks in lockstep).

    Args:
        warmup_batches: Batches at the start of each epoch left out of the timing.

    Attributes:
        rates: Images/s of each timed epoch, by epoch number.
        data_wait_shares: Share of each timed epoch's time spent between batches, by epoch number.
    """

    def __init__(self, warmup_batches: int = 2) -> None:
        if isinstance(warmup_batches, bool) or not isinstance(warmup_batches, int) or warmup_batches < 0:
            raise ValueError(f"TrainingSpeed: warmup_batches must be an integer >= 0, found {warmup_batches!r}")
        self.warmup_batches = warmup_batches
        self.rates: dict[int, float] = {}
        self.data_wait_shares: dict[int, float] = {}
        self._elapsed = 0.0
        self._running_since: float | None = None
        self._images = 0
        self._waited = 0.0
        self._last_batch_end: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        show_info_lines()  # the images/s lines, in a script that set up no logging

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._elapsed, self._running_since, self._images = 0.0, None, 0
        self._waited, self._last_batch_end = 0.0, None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict,
                             batch_idx: int) -> None:
        if batch_idx < self.warmup_batches:
            return
        if self._running_since is None:  # the epoch's first timed batch, or the first after a validation
            _synchronize(pl_module)
            self._running_since = time.perf_counter()
        elif self._last_batch_end is not None:
            self._waited += time.perf_counter() - self._last_batch_end
        self._images += len(batch["images"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object,
                           batch: dict, batch_idx: int) -> None:
        if self._running_since is not None:
            self._last_batch_end = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning 2 runs the epoch's validation before on_train_epoch_end (and mid-epoch with
        # val_check_interval): the clock stops here and starts again at the next training batch.
        if not trainer.sanity_checking:
            self._pause(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)
        if self._images == 0 or self._elapsed <= 0:
            return
        rate = self._images * trainer.world_size / self._elapsed
        waiting = min(self._waited / self._elapsed, 1.0)
        self.rates[trainer.current_epoch] = rate
        self.data_wait_shares[trainer.current_epoch] = waiting
        pl_module.log(METRIC, rate, on_step=False, on_epoch=True, rank_zero_only=True)
        pl_module.log(DATA_WAIT_METRIC, waiting, on_step=False, on_epoch=True, rank_zero_only=True)
        if trainer.is_global_zero:
            log.info("epoch %d: %.1f training images/s, %.0f%% of it waiting for data", trainer.current_epoch, rate,
                     100 * waiting)

    def _pause(self, pl_module: L.LightningModule) -> None:
        if self._running_since is not None:
            _synchronize(pl_module)
            self._elapsed += time.perf_counter() - self._running_since
            self._running_since = None
            self._last_batch_end = None  # the gap across a validation is not waiting for data


def _synchronize(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
