"""The sparsity methods SlimCallback trains with, each one object with the same small interface.

* ``l1`` (Liu et al., ICCV 2017; the seed implementation): ``sparsity * sign(γ)`` added to the
  gradient of every prunable γ. The baseline: on short budgets it lowers every γ alike.
* ``targeted``: after a warm-up, the channels the prune would remove are chosen with the prune's
  own rules and only their γ and β are shrunk, at a rate that grows to full strength; the choice is
  remade every epoch until the final ``hold`` part of the sparse phase, where it is fixed, the
  rate stays at full strength and the chosen channels lose their task gradient (ResRep), so that
  they reach ~0 by the prune (the optimizer's momentum still moves them a little after their
  gradient is dropped; the shrink outpaces it). ``sparsity`` is the full-strength rate in e-folds per sparse phase:
  at full rate a channel the task did not hold up would shrink by ``exp(-sparsity)`` over the
  whole phase, whatever its number of steps (so it means the same on 200 steps and on 200,000).
  Its warm-up and hold, when not given, depend on where the sparse phase starts
  (:data:`TARGETED_PHASES`): from a fresh network a long l1 warm-up, from trained weights none.
  Tied to one ratio: the sparse model it makes is meant for the prune it was trained for.
* ``polarize`` (Zhuang et al., NeurIPS 2020): ``sparsity`` is λ of ``t·Σ|γ| − Σ|γ − γ̄|``, with
  every γ clamped to [0, 1] after each optimizer step. Like ``l1``, not tied to a ratio, so one
  sparse checkpoint serves a ``prune`` sweep over many.

The callback calls :meth:`step` in ``on_before_optimizer_step`` (once per optimizer step, after
gradient accumulation and AMP unscaling) and :meth:`after_step` at the end of each batch that stepped.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from yolo_slim.models import YOLOv5
from yolo_slim.slim.graph import ChannelGraph, trace_channels
from yolo_slim.slim.plan import PruningPlan
from yolo_slim.slim.polarization import add_polarization_grad, clamp_gammas
from yolo_slim.slim.sparsity import SparsityTarget, add_bn_l1_grad, sparsity_strength, sparsity_target
from yolo_slim.slim.targeted import drop_masked_gradients, removal_masks, removed_channels, shrink

METHODS = ("l1", "targeted", "polarize")
# The strength each method uses when none is given: chosen from benchmarks/sparsity_methods.py's
# table on the built-in data (benchmarks/README.md, "Sparsity methods"), the one place it is set.
# l1: 0.02 (its strength table, "How strong a penalty"); targeted: 30, the smallest of 10/30/60 that
# makes the prune free; polarize: 0.005, the better of 0.02 and 0.005 (neither separates on our budgets).
DEFAULT_STRENGTH = {"l1": 0.02, "targeted": 30.0, "polarize": 0.005}
# targeted's (warmup, hold) when not given, by the start of the sparse phase. "fresh": every γ still at
# BatchNorm's initial 1, so |γ| ranks nothing yet; 0.6 of the phase under l1 lets a ranking form (a
# warm-up of 0.3 cost 0.04 mAP before the prune from scratch). "trained": |γ| of trained weights already
# rank; choosing at once and shrinking over half the phase leaves the other half to adapt (from a
# trained model, mAP before the prune 0.223 at 0.6/0.15, 0.257 at 0/0.5 against 0.303 dense; 0.1/0.3
# ties it before the prune, and after fine-tuning is ahead on two seeds and behind on a third).
# benchmarks/README.md, "Sparsity methods", has the rows.
TARGETED_PHASES: dict[str, tuple[float, float]] = {"fresh": (0.6, 0.15), "trained": (0.0, 0.5)}
# Settings only some methods use: SlimCallback's argument -> (its MethodSettings field, the methods
# it applies to). The one place that says so, for the argument checks and for summary.json.
METHOD_SPECIFIC: dict[str, tuple[str, tuple[str, ...]]] = {
    "schedule": ("schedule", ("l1", "polarize")),
    "floor": ("floor", ("l1", "polarize")),
    "bias_sparsity": ("bias_strength", ("l1", "polarize")),
    "polarization_t": ("polarization_t", ("polarize",)),
    "warmup": ("warmup", ("targeted",)),
    "hold": ("hold", ("targeted",)),
    "warmup_sparsity": ("warmup_sparsity", ("targeted",)),
}


@dataclass(frozen=True)
class MethodSettings:
    """Everything that defines a method's penalty; checked by :func:`check_method_settings`.

    Attributes:
        method: ``l1``, ``targeted`` or ``polarize``.
        strength: The method's strength (see the module docstring for its unit per method).
        schedule: How ``l1``'s and ``polarize``'s strength evolves over the sparse phase.
        floor: Final strength fraction of the decaying schedules.
        bias_strength: L1 strength on β for ``l1`` and ``polarize`` (``targeted`` shrinks β itself).
        polarization_t: ``t`` of the polarizer (> 1).
        warmup: ``targeted``: fraction of the sparse phase before the first choice, trained with
            the ``l1`` penalty at ``warmup_sparsity`` so that the |γ| ranking the choice reads
            carries information (without it γ hardly move from their start on short budgets).
            None: from :data:`TARGETED_PHASES` when the method binds to the network.
        hold: ``targeted``: final fraction of the sparse phase with the choice fixed at full strength;
            None: as ``warmup``.
        warmup_sparsity: ``targeted``: the ``l1`` strength of the warm-up (0: none).
    """

    method: str = "targeted"
    strength: float = DEFAULT_STRENGTH["targeted"]
    schedule: str = "constant"
    floor: float = 0.1
    bias_strength: float = 0.0
    polarization_t: float = 1.2
    warmup: float | None = None
    hold: float | None = None
    warmup_sparsity: float = DEFAULT_STRENGTH["l1"]


def check_method_settings(settings: MethodSettings, given: set[str]) -> None:
    """Raise a ValueError naming the setting for a bad method or a value it does not accept.

    Args:
        settings: The settings to check.
        given: Names of the method-specific settings the user set explicitly: one that does not
            apply to the chosen method is refused rather than silently ignored.
    """
    if settings.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, found {settings.method!r}")
    numbers = {"sparsity": settings.strength, "bias_sparsity": settings.bias_strength,
               "warmup_sparsity": settings.warmup_sparsity, "polarization_t": settings.polarization_t}
    not_finite = [f"{name}={value}" for name, value in numbers.items() if not math.isfinite(value)]
    if not_finite:
        raise ValueError(f"{', '.join(not_finite)}: must be a finite number (nan and inf make every γ nan)")
    if settings.strength < 0 or settings.bias_strength < 0:
        raise ValueError(f"sparsity and bias_sparsity must be >= 0, found {settings.strength} and "
                         f"{settings.bias_strength}")
    if settings.warmup_sparsity < 0:
        raise ValueError(f"warmup_sparsity must be >= 0, found {settings.warmup_sparsity}")
    foreign = sorted(name for name in given if settings.method not in METHOD_SPECIFIC[name][1])
    if foreign:
        name = foreign[0]
        raise ValueError(f"{name} applies to method {' and '.join(METHOD_SPECIFIC[name][1])}, not to "
                         f"method={settings.method!r}; drop it or choose that method")
    if settings.polarization_t <= 1:
        raise ValueError(f"polarization_t must be > 1 (the L1 pull must beat the polarizing term below the "
                         f"mean), found {settings.polarization_t}")
    check_phases(settings.warmup, settings.hold)


def check_phases(warmup: float | None, hold: float | None, start: str | None = None) -> None:
    """Raise a ValueError unless warmup and hold (None: not resolved yet) leave part of the phase to shrink in."""
    given = [value for value in (warmup, hold) if value is not None]
    if all(0 <= value < 1 for value in given) and sum(given) < 1:
        return
    defaults = f" (with the {start} start's default for the one not given: {TARGETED_PHASES[start]})" if start else ""
    raise ValueError(f"warmup and hold must be fractions of the sparse phase in [0, 1) with warmup + hold < 1, "
                     f"found warmup={warmup} and hold={hold}{defaults}")


def settings_in_force(settings: MethodSettings) -> dict[str, Any]:
    """The settings as plain data, without those the chosen method does not use."""
    unused = {field for field, methods in METHOD_SPECIFIC.values() if settings.method not in methods}
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in unused}


class SparsityMethod:
    """Base: holds the settings and the penalised parameters of the current architecture."""

    tied_to_ratio = False

    def __init__(self, settings: MethodSettings, policy: str) -> None:
        self.settings, self.policy = settings, policy
        self._targets: list[SparsityTarget] | None = None

    def bind(self, network: YOLOv5, copies: list[YOLOv5]) -> None:
        """Use ``network`` (and its weight averages, ``copies``) from now on: at fit start and after a prune."""
        self._targets = [sparsity_target(network, self.policy)] + [sparsity_target(c, self.policy) for c in copies]

    def step(self, progress: float, steps_in_phase: int) -> None:
        """Apply the penalty for one optimizer step at ``progress`` in [0, 1] of the sparse phase."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Runs after the optimizer stepped (polarize clamps γ here)."""

    def needs_choice(self, progress: float, epoch_start: bool) -> bool:
        """Whether the channels to shrink should be (re)chosen at a batch at ``progress`` (``targeted`` only)."""
        return False

    def set_choice(self, plan: PruningPlan, network: YOLOv5) -> None:
        """The channels to shrink, as the plan that would remove them (``targeted`` only)."""

    def chosen_plan(self) -> PruningPlan | None:
        """The plan whose channels this method has driven to zero, to prune with (``targeted``; else None).

        Pruning with it, rather than with a fresh plan on the shrunk |γ|, matters: a fresh global
        ranking at the same ratio takes the ~0 channels plus a few live ones, and rounding kept
        counts up to ``round_to`` can then drop a whole block of 8 live channels from a group.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """The settings in force (defaults resolved), as plain data."""
        return settings_in_force(self.settings)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class L1Method(SparsityMethod):
    def step(self, progress: float, steps_in_phase: int) -> None:
        settings = self.settings
        strength = sparsity_strength(settings.strength, progress, settings.schedule, settings.floor)
        scale = strength / settings.strength if settings.strength else 1.0  # β follows γ's schedule
        add_bn_l1_grad(self._targets[0], strength, settings.bias_strength * scale)


class PolarizeMethod(SparsityMethod):
    def step(self, progress: float, steps_in_phase: int) -> None:
        settings = self.settings
        strength = sparsity_strength(settings.strength, progress, settings.schedule, settings.floor)
        add_polarization_grad(self._targets[0], strength, settings.polarization_t)
        if settings.bias_strength:
            scale = strength / settings.strength if settings.strength else 1.0  # β follows γ's schedule
            add_bn_l1_grad(self._targets[0], 0.0, settings.bias_strength * scale)

    def after_step(self) -> None:
        for target in self._targets:  # the weight averages too: they are what validation and `prune` read
            clamp_gammas(target)


class TargetedMethod(SparsityMethod):
    tied_to_ratio = True

    def __init__(self, settings: MethodSettings, policy: str) -> None:
        super().__init__(settings, policy)
        self.choice: dict[str, Any] | None = None  # the plan (as a dict) whose removed channels are shrunk
        self.start: str | None = None  # "fresh" or "trained": what the first bind found (TARGETED_PHASES)
        # One mask set per target: a weight average may live on another device than the trained network
        # (EMAWeightAveraging(device="cpu") next to a CUDA network), and its masks must be on its device.
        self._masks: list[tuple[torch.Tensor, ...]] | None = None
        self._pending_factor = 1.0  # 16-bit weights: the shrink not applied yet (see _applied_rate)

    def bind(self, network: YOLOv5, copies: list[YOLOv5]) -> None:
        super().bind(network, copies)
        if self.start is None:  # once per run (a resumed one restores it): after a prune γ are trained anyway
            fresh = all(bool((w == 1).all()) for w in self._targets[0].weights)
            self.start = "fresh" if fresh else "trained"
        self._resolve_phases()
        self._masks = None
        if self.choice is not None:
            plan = PruningPlan.from_dict(self.choice)
            graph = trace_channels(network.spec, self.policy)
            if plan.fits(graph):
                self._install(plan, graph)
            else:  # the architecture changed (a prune): that choice is spent
                self.choice = None

    def needs_choice(self, progress: float, epoch_start: bool) -> bool:
        if progress < self.settings.warmup or progress >= 1:
            return False
        return self.choice is None or (epoch_start and progress < 1 - self.settings.hold)

    def set_choice(self, plan: PruningPlan, network: YOLOv5) -> None:
        self.choice = plan.to_dict()
        self._install(plan, trace_channels(network.spec, self.policy))

    def chosen_plan(self) -> PruningPlan | None:
        return PruningPlan.from_dict(self.choice) if self.choice is not None and self._masks is not None else None

    def _install(self, plan: PruningPlan, graph: ChannelGraph) -> None:
        removed = removed_channels(graph, plan)
        self._masks = [removal_masks(target, removed) for target in self._targets]

    def rate(self, progress: float, steps_in_phase: int) -> float:
        """Per-step shrink rate: 0 in the warm-up, growing linearly to full strength at the hold, then held."""
        settings = self.settings
        grow_until = 1 - settings.hold
        if progress < settings.warmup:
            return 0.0
        fraction = min((progress - settings.warmup) / max(grow_until - settings.warmup, 1e-9), 1.0)
        return min(settings.strength * fraction / max(steps_in_phase, 1), 1.0)

    def step(self, progress: float, steps_in_phase: int) -> None:
        if progress < self.settings.warmup or self._masks is None:
            add_bn_l1_grad(self._targets[0], self.settings.warmup_sparsity)
        if self._masks is None:
            return
        rate = self._applied_rate(self.rate(progress, steps_in_phase))
        holding = progress >= 1 - self.settings.hold
        trained = self._targets[0]
        if holding:
            drop_masked_gradients(trained.weights, self._masks[0])
            drop_masked_gradients(trained.biases, self._masks[0])
        # The weight averages too: validation and the prune's EMA copy see the channels vanish as well,
        # instead of an average that lags thousands of steps behind.
        for target, masks in zip(self._targets, self._masks):
            shrink(target.weights, masks, rate)
            shrink(target.biases, masks, rate)

    def _applied_rate(self, rate: float) -> float:
        """``rate``, or in 16-bit weights the shrink gathered since it was last applied.

        A step's factor ``1 - rate`` (about 1e-3) is finer than a bfloat16 γ can tell from 1 (its spacing
        near 1 is 2^-8): multiplied in place, every γ would round back to itself and the run would never
        shrink (``precision="bf16-true"``). So the factors are multiplied here until their product moves a
        γ by at least the dtype's epsilon, and then applied at once: the same shrink, in fewer, larger steps.
        """
        # The coarsest dtype of all targets decides: a bfloat16 weight average next to a float32 network
        # must shrink too, and larger, rarer steps are the same shrink for the float32 ones.
        coarsest = max((torch.finfo(target.weights[0].dtype) for target in self._targets if target.weights),
                       key=lambda info: info.eps, default=torch.finfo(torch.float32))
        if coarsest.bits > 16:
            return rate
        self._pending_factor *= 1 - rate
        if 1 - self._pending_factor < coarsest.eps:
            return 0.0
        applied, self._pending_factor = 1 - self._pending_factor, 1.0
        return applied

    def _resolve_phases(self) -> None:
        """Fill the warm-up and hold not given with the defaults of this run's start."""
        default_warmup, default_hold = TARGETED_PHASES[self.start]
        warmup = default_warmup if self.settings.warmup is None else self.settings.warmup
        hold = default_hold if self.settings.hold is None else self.settings.hold
        check_phases(warmup, hold, self.start)
        self.settings = dataclasses.replace(self.settings, warmup=warmup, hold=hold)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "start": self.start}

    def state_dict(self) -> dict[str, Any]:
        # The pending factor too: in 16-bit weights a resume would otherwise drop up to one epsilon of shrink.
        return {"choice": self.choice, "start": self.start, "pending_factor": self._pending_factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.choice = state.get("choice")
        self.start = state.get("start", self.start)
        self._pending_factor = float(state.get("pending_factor", 1.0))


_CLASSES = {"l1": L1Method, "targeted": TargetedMethod, "polarize": PolarizeMethod}


def make_method(settings: MethodSettings, policy: str) -> SparsityMethod:
    """The method object for ``settings`` (checked beforehand with :func:`check_method_settings`)."""
    return _CLASSES[settings.method](settings, policy)
