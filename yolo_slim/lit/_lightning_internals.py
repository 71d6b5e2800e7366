"""The few places where slimming needs Lightning internals, kept together.

Checked against Lightning 2.4 to 2.6 (2.6.6 is what the tests run). Lightning has no public API to
validate in the middle of a fit, nor to rebuild the optimizers after the parameters changed; each
function below says which internal it mirrors, so that a Lightning upgrade is checked here only.
"""

from __future__ import annotations

import copy

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, StochasticWeightAveraging
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.optim.swa_utils import AveragedModel

try:
    from lightning.pytorch.callbacks import WeightAveraging
except ImportError:  # an older Lightning, without the WeightAveraging callbacks
    WeightAveraging = None


def run_validation(trainer: L.Trainer) -> None:
    """Run the fit's validation loop now, as Lightning's training epoch loop does at its end.

    Mirrors ``_TrainingEpochLoop.on_advance_end`` around ``val_loop.run()``.
    """
    if not trainer.limit_val_batches:
        return
    loop = trainer.fit_loop.epoch_loop.val_loop
    trainer.validating = True
    loop.run()
    trainer.training = True


def rebuild_optimizers(trainer: L.Trainer, pl_module: L.LightningModule, continue_schedule: bool) -> None:
    """Re-run ``configure_optimizers`` for new parameters (after a prune), and re-wrap DDP.

    With ``continue_schedule`` each new LR scheduler takes its predecessor's state (same number of
    param groups), so the schedule goes on where it was instead of restarting, and each group keeps
    the rate and momentum it had (else the first step after the prune would take the fresh
    schedule's step-0 momentum).
    """
    old_states = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
    # What a scheduler drives besides the rate (YOLOv5's warm-up ramps SGD's momentum), per group.
    old_momenta = [[group.get("momentum") for group in optimizer.param_groups] for optimizer in trainer.optimizers]
    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        # DDP registered its all-reduce hooks on the old parameters: wrap the new ones afresh.
        strategy.model = pl_module
        strategy.configure_ddp()
    # No public "reset optimizers" API exists; this re-runs configure_optimizers and re-wraps.
    strategy.setup_optimizers(trainer)
    if not continue_schedule:
        return
    for config, state in zip(trainer.lr_scheduler_configs, old_states):
        if len(config.scheduler.optimizer.param_groups) != len(state.get("base_lrs", [])):
            continue
        config.scheduler.load_state_dict(state)
        for group, rate in zip(config.scheduler.optimizer.param_groups, config.scheduler.get_last_lr()):
            group["lr"] = rate
    for optimizer, momenta in zip(trainer.optimizers, old_momenta):
        if len(optimizer.param_groups) == len(momenta):
            for group, momentum in zip(optimizer.param_groups, momenta):
                if momentum is not None and "momentum" in group:
                    group["momentum"] = momentum


def batch_fraction(trainer: L.Trainer, batch_idx: int) -> float:
    """How far into the current epoch batch ``batch_idx`` is, in [0, 1)."""
    batches = trainer.num_training_batches
    return batch_idx / batches if isinstance(batches, int) and batches > 0 else 0.0


def training_batches(trainer: L.Trainer) -> int:
    """Batches in one training epoch; 1 for an infinite or unsized loader."""
    batches = trainer.num_training_batches
    return batches if isinstance(batches, int) and batches > 0 else 1


def optimizer_steps_per_epoch(trainer: L.Trainer) -> int:
    """Optimizer steps in one training epoch (after gradient accumulation; Lightning also steps at an epoch's end)."""
    return max(-(-training_batches(trainer) // max(trainer.accumulate_grad_batches, 1)), 1)


def trainer_weight_averages(trainer: L.Trainer | None) -> list[AveragedModel]:
    """The weight averages that Lightning's ``WeightAveraging`` callbacks (``EMAWeightAveraging`` and
    subclasses) keep of the whole LightningModule: each is an ``AveragedModel`` around a copy of it.

    Reads the callback's ``_average_model``, which it has no public accessor for. It exists from the
    callback's ``setup`` of a fit on; before that, or outside a fit, there is none.
    """
    if trainer is None or WeightAveraging is None:
        return []
    return [callback._average_model for callback in trainer.callbacks
            if isinstance(callback, WeightAveraging) and isinstance(callback._average_model, AveragedModel)]


def _swa_callbacks(trainer: L.Trainer | None) -> list[StochasticWeightAveraging]:
    """Lightning's ``StochasticWeightAveraging`` callbacks that hold their copy of the module.

    Unlike ``WeightAveraging``, it keeps a plain ``deepcopy`` of the LightningModule in ``_average_model``
    (made at its ``setup``, on the CPU until averaging starts) and averages into it epoch by epoch.
    """
    if trainer is None:
        return []
    return [callback for callback in trainer.callbacks
            if isinstance(callback, StochasticWeightAveraging) and isinstance(callback._average_model, nn.Module)]


def trainer_module_copies(trainer: L.Trainer | None) -> list[nn.Module]:
    """Every copy of the whole LightningModule that Lightning's averaging callbacks keep: inside each
    ``WeightAveraging`` average, and each ``StochasticWeightAveraging``'s average. A prune must compact them
    too, or the callback's next update would meet the old shapes."""
    return [average.module for average in trainer_weight_averages(trainer)] + [
        callback._average_model for callback in _swa_callbacks(trainer)]


def checkpoint_being_restored(trainer: L.Trainer) -> dict | None:
    """The checkpoint a fit (or validate ...) is restoring from while it does, else None.

    Mirrors ``_CheckpointConnector.resume_start``, which holds it in ``_loaded_checkpoint`` until ``resume_end``.
    """
    return getattr(trainer._checkpoint_connector, "_loaded_checkpoint", None) or None


def swa_first_epoch(trainer: L.Trainer) -> int | None:
    """The first (0-based) epoch at which a ``StochasticWeightAveraging`` callback averages, if there is one.

    Mirrors the callback's ``on_fit_start`` (a float ``swa_epoch_start`` is a share of ``max_epochs``)
    and its ``swa_start`` property, read before its own ``on_fit_start`` may have run.
    """
    starts = []
    for callback in _swa_callbacks(trainer):
        start = callback._swa_epoch_start
        if isinstance(start, float):
            start = int((trainer.max_epochs or 0) * start)
        starts.append(max(start - 1, 0))
    return min(starts, default=None)


def mirror_into_trainer_averages(trainer: L.Trainer | None, pl_module: nn.Module) -> None:
    """Give every copy of the module that an averaging callback keeps the module's current architecture.

    For a resumed pruned fit: the callback copied the module at ``setup``, while it was still dense, and
    its own ``on_load_checkpoint`` or ``load_state_dict`` (which runs after the module's) then loads the
    pruned average into that copy. A fresh copy of the rebuilt module has the shapes; the load fills in the
    averaged values.
    """
    def fresh_copy_like(old: nn.Module) -> nn.Module:
        reference = next(old.parameters(), None)
        fresh = copy.deepcopy(pl_module)
        return fresh.to(reference.device) if reference is not None else fresh

    for average in trainer_weight_averages(trainer):
        average.module = fresh_copy_like(average.module)
    for callback in _swa_callbacks(trainer):
        callback._average_model = fresh_copy_like(callback._average_model)


def start_monitors_over(trainer: L.Trainer) -> None:
    """Forget what the Trainer's monitors ranked so far (at a prune: the network after it is another model).

    EarlyStopping starts its patience over from no best score. A ModelCheckpoint with a ``monitor``
    keeps its files but ranks them worst, so the next checkpoints replace them: with ``save_top_k=1``
    the first validation after the prune overwrites ``best.ckpt`` under the same name. Clearing
    ``best_k_models`` instead would leave the old file behind and write ``best-v1.ckpt`` beside it.
    Mirrors ``ModelCheckpoint._update_best_and_save``'s use of ``best_k_models`` and ``kth_value``.
    """
    for stopper in trainer.early_stopping_callbacks:
        stopper.wait_count = 0
        stopper.best_score = torch.tensor(torch.inf if stopper.monitor_op == torch.lt else -torch.inf)
    for saver in trainer.checkpoint_callbacks:
        if not isinstance(saver, ModelCheckpoint) or saver.monitor is None or not saver.best_k_models:
            continue
        worst = torch.tensor(torch.inf if saver.mode == "min" else -torch.inf)
        saver.best_k_models = {path: worst.clone() for path in saver.best_k_models}
        saver.kth_value = worst.clone()
        saver.best_model_score = worst.clone()
