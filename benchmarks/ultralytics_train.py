"""ultralytics' own ``train.py`` (PyPI ``yolov5==7.0.14``), unmodified, with a clock on its training epochs.

    PYTHONPATH=STUBS python benchmarks/ultralytics_train.py [--warmup-batches 2] -- TRAIN.PY ARGUMENTS

Runs their ``train.main`` with their argument parser, and registers on their ``Callbacks`` the same
clock as yolo_slim's ``TrainingSpeed``: per epoch, from the start of the ``warmup_batches``-th batch
to the end of the epoch's last batch (CUDA synchronised at both ends), and within it the time from
the end of one batch to the start of the next (their loader's ``next``), printed as ``epoch N: R
training images/s, W% of it waiting for data``. STUBS: the folder ``benchmarks/ultralytics_stubs.py`` writes.

One change to what they run: ``check_amp`` is taken as passed. Their check compares the model's
fp32 and AMP outputs, and where the fresh model's outputs disagree it downloads ``yolov5n.pt`` to
try again; offline that download fails and the check turns AMP off, which a connected user would
not see. Forcing it keeps their training in mixed precision, as ours runs with ``16-mixed``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # their v7.0 torch.load predates weights_only

import torch  # noqa: E402


class EpochClock:
    """Their callbacks' view of a training epoch: batches started and images trained."""

    def __init__(self, warmup_batches: int) -> None:
        self.warmup_batches = warmup_batches
        self.epoch = -1
        self.batch = 0
        self.images = 0
        self.started: float | None = None
        self.waited = 0.0
        self.last_batch_end: float | None = None

    def on_train_epoch_start(self) -> None:
        self.epoch += 1
        self.batch, self.images, self.started = 0, 0, None
        self.waited, self.last_batch_end = 0.0, None

    def on_train_batch_start(self) -> None:
        if self.batch == self.warmup_batches:
            _synchronize()
            self.started = time.perf_counter()
        elif self.started is not None and self.last_batch_end is not None:
            self.waited += time.perf_counter() - self.last_batch_end
        self.batch += 1

    def on_train_batch_end(self, model, ni, imgs, *args) -> None:
        if self.started is not None:
            self.images += len(imgs)
            self.last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, epoch: int) -> None:
        if self.started is None:
            return
        _synchronize()
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        waiting = min(self.waited / elapsed, 1.0)
        print(f"epoch {epoch}: {self.images / elapsed:.1f} training images/s, "
              f"{100 * waiting:.0f}% of it waiting for data", flush=True)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-batches", type=int, default=2)
    ours, theirs = parser.parse_known_args()
    from yolov5 import train
    from yolov5.utils.callbacks import Callbacks

    sys.argv = ["train.py", *[argument for argument in theirs if argument != "--"]]
    options = train.parse_opt()
    train.check_amp = lambda model: True  # see the module docstring
    clock = EpochClock(ours.warmup_batches)
    callbacks = Callbacks()
    for hook in ("on_train_epoch_start", "on_train_batch_start", "on_train_batch_end", "on_train_epoch_end"):
        callbacks.register_action(hook, name="epoch_clock", callback=getattr(clock, hook))
    train.main(options, callbacks)


if __name__ == "__main__":
    main()
