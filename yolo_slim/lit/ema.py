"""Exponential moving average of the weights, with YOLOv5's ramped decay, on torch's AveragedModel.

:func:`update_ema` is what training calls after each optimizer step: the same update as
``AveragedModel.update_parameters``, with the count of updates kept as a Python int beside its buffer.
torch's method compares the counter buffer with 0 twice, and the ramp reads it once per dtype group:
on a GPU each of those reads waits for every kernel queued before it (four waits per step; ultralytics'
ModelEMA counts in Python and makes none).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ramped_ema_update(decay: float, ramp_updates: float) -> Callable[..., None]:
    """Multi-tensor update for :class:`AveragedModel` whose decay ramps up as ``decay * (1 - exp(-n / ramp))``.

    A fixed 0.9999 would leave the average at the random initialisation for thousands of steps;
    the ramp lets it follow the model closely early on and smooth strongly later (YOLOv5's ModelEMA).
    BatchNorm's integer step counters are copied, not averaged.
    """

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
        step_decay = decay * (1 - math.exp(-float(num_averaged) / ramp_updates))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - step_decay)  # the same kernel torch's own EMA helper uses
        else:
            for target, source in zip(averaged, current):
                target.copy_(source)

    return update


def make_ema(model: nn.Module, decay: float = 0.9999, ramp_updates: float = 2000.0) -> AveragedModel:
    """An averaged copy of ``model`` (parameters and buffers), frozen and in eval mode.

    Raises:
        ValueError: decay outside [0, 1) or a non-positive ramp.
    """
    if not 0 <= decay < 1:
        raise ValueError(f"ema decay must be in [0, 1), found {decay}")
    if ramp_updates <= 0:
        raise ValueError(f"ema ramp_updates must be > 0, found {ramp_updates}")
    # On the model's device: AveragedModel would otherwise keep its update counter (a buffer) on the
    # CPU, and an EMA made after a prune, inside a DDP fit, would hand that CPU buffer to DDP's
    # buffer broadcast, which NCCL refuses (Lightning moves modules to the device only at setup).
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    ema = AveragedModel(model, device=device, multi_avg_fn=ramped_ema_update(decay, ramp_updates), use_buffers=True)
    ema.requires_grad_(False)
    ema.register_load_state_dict_post_hook(_forget_count)  # a loaded counter replaces update_ema's copy
    return ema.eval()


_UPDATES_DONE = "_yolo_slim_updates_done"  # the Python copy of n_averaged; absent: read the buffer once


def update_ema(ema: AveragedModel, model: nn.Module) -> None:
    """``ema.update_parameters(model)`` without reading the device (see the module docstring)."""
    done = getattr(ema, _UPDATES_DONE, None)
    if done is None:  # a new EMA, or one whose state was just loaded: one read
        done = int(ema.n_averaged)
    averaged = [t.detach() for t in itertools.chain(ema.module.parameters(), ema.module.buffers())]
    current = [t.detach().to(a.device) for t, a in zip(itertools.chain(model.parameters(), model.buffers()), averaged)]
    if done == 0:
        torch._foreach_copy_(averaged, current)
    else:
        for floating in (True, False):  # the groups AveragedModel hands its multi_avg_fn, by kind
            pairs = [(a, c) for a, c in zip(averaged, current) if torch.is_floating_point(a) == floating]
            if pairs:
                ema.multi_avg_fn([a for a, _ in pairs], [c for _, c in pairs], done)
    ema.n_averaged += 1  # on the device, unread: for checkpoints and for torch's own method
    setattr(ema, _UPDATES_DONE, done + 1)


def _forget_count(module: nn.Module, incompatible_keys: object) -> None:
    if hasattr(module, _UPDATES_DONE):
        delattr(module, _UPDATES_DONE)
