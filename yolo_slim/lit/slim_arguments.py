"""SlimCallback's argument checks: every bad value fails in the constructor with a message naming it."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

from yolo_slim.lit.sparsity_methods import MethodSettings, check_method_settings
from yolo_slim.models.spec import DEFAULT_IMGSZ, STRIDE_UNIT
from yolo_slim.slim.graph import POLICIES
from yolo_slim.slim.plan import check_plan_arguments
from yolo_slim.slim.sparsity import SCHEDULES

FINETUNE_SCHEDULES = ("continue", "restart")


def epochs_and_ratios(prune_epochs: object, ratio: object) -> tuple[list[int], list[float]]:
    """``prune_epochs`` and ``ratio`` as lists, one ratio per prune epoch (one ratio given: the same for each).

    Only their kinds are checked here (an int or a list of ints; a number or a list of numbers), so that a string
    is not read as a list of characters; :func:`check_slim_arguments` checks their values.
    """
    def is_int(value: object) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def is_number(value: object) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    def is_list_of(value: object, kind: Callable[[object], bool]) -> bool:
        return isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and all(map(kind, value))

    if not (is_int(prune_epochs) or is_list_of(prune_epochs, is_int)):
        raise ValueError(f"prune_epochs must be an int >= 0 or a list of them ([] for sparse training only), "
                         f"found {prune_epochs!r}")
    if not (is_number(ratio) or is_list_of(ratio, is_number)):
        raise ValueError(f"ratio must be a number in [0, 1) or a list of them (one per prune epoch), found {ratio!r}")
    epochs = [int(prune_epochs)] if is_int(prune_epochs) else [int(epoch) for epoch in prune_epochs]
    return epochs, [ratio] * len(epochs) if is_number(ratio) else list(ratio)


def check_slim_arguments(settings: MethodSettings, given: set[str], epochs: list[int], ratios: list[float],
                         policy: str, round_to: int, min_channels: int, finetune_schedule: str,
                         sparsity_after_prune: bool, imgsz: int | None = None) -> None:
    """Raise a ValueError for the first bad argument (setting name, allowed values, what was found)."""
    check_method_settings(settings, given)
    if settings.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, found {settings.schedule!r}")
    if finetune_schedule not in FINETUNE_SCHEDULES:
        raise ValueError(f"finetune_schedule must be one of {FINETUNE_SCHEDULES}, found {finetune_schedule!r}")
    if any(e < 0 for e in epochs):  # ints already (epochs_and_ratios)
        raise ValueError(f"prune_epochs must be an int >= 0 or a list of them ([] for sparse training only), "
                         f"found {epochs}")
    if epochs != sorted(set(epochs)):
        raise ValueError(f"prune_epochs must be strictly increasing, found {epochs}")
    if len(ratios) != len(epochs):
        raise ValueError(f"ratio needs one value per prune epoch ({len(epochs)}), found {len(ratios)}: {ratios}")
    if ratios != sorted(ratios):
        raise ValueError(f"ratio targets are cumulative and must not decrease, found {ratios}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, found {policy!r}")
    if imgsz is not None and (isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz <= 0
                              or imgsz % STRIDE_UNIT):
        raise ValueError(f"imgsz must be a positive multiple of {STRIDE_UNIT} (None: the module's), found {imgsz!r}")
    for ratio in ratios or [0.0]:  # with no prune epoch, still check round_to and min_channels
        check_plan_arguments(ratio=ratio, policy=policy, round_to=round_to, min_channels=min_channels,
                             imgsz=DEFAULT_IMGSZ if imgsz is None else imgsz)  # None: the module's imgsz, checked there
    if not 0 <= settings.floor <= 1:
        raise ValueError(f"floor must be in [0, 1], found {settings.floor}")
    if sparsity_after_prune and settings.method == "targeted":
        raise ValueError("sparsity_after_prune applies to method l1 and polarize; targeted has nothing left to "
                         "shrink after its prune (use iterative prune_epochs for a second target)")
