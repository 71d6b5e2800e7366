"""YOLOv5's learning-rate schedule: per-step warm-up into a linear or cosine decay.

torch has no scheduler for this recipe: during warm-up the bias group's rate falls from 0.1
while the other groups' rise from 0, and SGD's momentum rises from 0.8 to its configured value.
So it is a small :class:`~torch.optim.lr_scheduler.LRScheduler` subclass (stepped every optimizer
step, resumable through the usual ``state_dict``).

Differences from ultralytics, on purpose: the decay is evaluated at fractional epochs every step
(theirs steps once per epoch), so that it does not depend on where an epoch boundary falls after
resuming or pruning mid-run. And not emulated: during warm-up ultralytics also ramps its gradient accumulation
from 1 batch per step to the full count, so its warm-up takes about twice the optimizer (and EMA) steps; here the
accumulation is the Trainer's fixed ``accumulate_grad_batches`` (Lightning has no per-step accumulation).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

SHAPES = ("linear", "cosine")


class WarmupDecayLR(LRScheduler):
    """Warm-up then decay from each group's initial rate to ``final_lr_ratio`` times it.

    Param groups whose ``"name"`` is ``"bias"`` warm down from ``warmup_bias_lr``.

    Args:
        optimizer: The wrapped optimizer.
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch.
        warmup_epochs: Length of the warm-up in epochs (fractions allowed).
        min_warmup_batches: Warm-up lasts at least this many batches (YOLOv5: 100), however
            short an epoch is.
        batches_per_step: Batches per optimizer step (gradient accumulation), to turn
            ``min_warmup_batches`` into optimizer steps.
        final_lr_ratio: Rate at the end relative to the initial one (YOLOv5's ``lrf``).
        shape: ``"linear"`` (YOLOv5's default) or ``"cosine"``.
        warmup_bias_lr: Starting rate of the bias group.
        warmup_momentum: Starting momentum (SGD) during warm-up.
        last_epoch: Index of the last step, for resuming (-1: start).
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 3.0,
                 min_warmup_batches: int = 100, batches_per_step: int = 1, final_lr_ratio: float = 0.01,
                 shape: str = "linear",
                 warmup_bias_lr: float = 0.1, warmup_momentum: float = 0.8, last_epoch: int = -1) -> None:
        if shape not in SHAPES:
            raise ValueError(f"scheduler shape must be one of {SHAPES}, found {shape!r}")
        if total_steps < 1 or steps_per_epoch < 1:
            raise ValueError(f"total_steps and steps_per_epoch must be >= 1, found {total_steps} and {steps_per_epoch}")
        if not 0 < final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio must be in (0, 1], found {final_lr_ratio}")
        if warmup_epochs < 0 or min_warmup_batches < 0 or batches_per_step < 1:
            raise ValueError(f"warmup_epochs and min_warmup_batches must be >= 0 and batches_per_step >= 1, found "
                             f"{warmup_epochs}, {min_warmup_batches}, {batches_per_step}")
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.final_lr_ratio, self.shape = final_lr_ratio, shape
        self.warmup_bias_lr, self.warmup_momentum = warmup_bias_lr, warmup_momentum
        # Never warm up for more than half the run: a 3-epoch warm-up would swallow a 4-epoch fine-tune.
        min_warmup_steps = math.ceil(min_warmup_batches / batches_per_step)
        warmup = max(round(warmup_epochs * steps_per_epoch), min_warmup_steps) if warmup_epochs > 0 else 0
        self.warmup_steps = min(warmup, total_steps // 2)
        self.is_bias = [group.get("name") == "bias" for group in optimizer.param_groups]
        self.base_momenta = [group.get("momentum") for group in optimizer.param_groups]
        super().__init__(optimizer, last_epoch)

    def decay_factor(self, step: int) -> float:
        """Multiplier of the initial rate after warm-up, at optimizer step ``step``."""
        progress = min(step / self.total_steps, 1.0)
        if self.shape == "linear":
            return (1 - progress) * (1 - self.final_lr_ratio) + self.final_lr_ratio
        return self.final_lr_ratio + (1 - self.final_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        rates = [base * self.decay_factor(step) for base in self.base_lrs]
        if step >= self.warmup_steps:
            return rates
        fraction = step / self.warmup_steps
        return [(self.warmup_bias_lr if bias else 0.0) * (1 - fraction) + rate * fraction
                for bias, rate in zip(self.is_bias, rates)]

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        step = self.last_epoch
        fraction = 1.0 if step >= self.warmup_steps else step / self.warmup_steps
        for group, momentum in zip(self.optimizer.param_groups, self.base_momenta):
            if momentum is not None and "momentum" in group:
                group["momentum"] = self.warmup_momentum + (momentum - self.warmup_momentum) * fraction

    def rescale(self, steps_per_epoch: int) -> None:
        """Keep the schedule's place, in epochs, when an epoch now takes ``steps_per_epoch`` optimizer steps.

        A run resumed on another number of devices (or with another accumulation) restores the old
        counts: left alone, its rate would decay by the old run's steps, ending early or never.
        The step, the warm-up and the total are scaled alike, and each group takes the rate of its new step.
        """
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, found {steps_per_epoch}")
        if steps_per_epoch == self.steps_per_epoch:
            return
        scale = steps_per_epoch / self.steps_per_epoch
        self.total_steps = max(round(self.total_steps * scale), 1)
        self.warmup_steps = min(round(self.warmup_steps * scale), self.total_steps // 2)
        self.last_epoch = round(self.last_epoch * scale)
        self.steps_per_epoch = steps_per_epoch
        self._last_lr = self.get_lr()
        for group, rate in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = rate
