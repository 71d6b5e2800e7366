"""``SlimCallback``: sparsity training, scheduled pruning and fine-tuning inside one Lightning fit.

* Every optimizer step until the last prune, ``sparsity * sign(γ)`` is added to the gradients of
  the prunable BatchNorms (in ``on_before_optimizer_step``: after gradient accumulation and after
  AMP unscaled the gradients, before clipping).
* At the start of each prune epoch: validate, plan on rank 0, broadcast the plan, compact the
  network (and the module's EMA, if it has one) on every rank, swap it in, rebuild the optimizers
  and the DDP wrapper, continue the LR schedule, validate again.
* Checkpoints carry the pruned spec; a resumed fit rebuilds the architecture before loading the
  weights (``YOLOv5Module`` does it itself; any other module calls :func:`restore_pruned_network`
  from its ``on_load_checkpoint``) and the callback's own state says which prunes are done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.optim.swa_utils import AveragedModel

from yolo_slim.models import YOLOv5, count_gflops, count_parameters
from yolo_slim.models.checkpoint import CHECKPOINT_KEY
from yolo_slim.models.info import cpu_latency_ms
from yolo_slim.slim import PruningPlan, compact, plan_pruning, sparsity_target
from yolo_slim.slim.graph import POLICIES
from yolo_slim.slim.plan import check_plan_arguments
from yolo_slim.slim.report import producer_gammas
from yolo_slim.slim.sparsity import SCHEDULES, SparsityTarget, add_bn_l1_grad, sparsity_strength

log = logging.getLogger(__name__)
FINETUNE_SCHEDULES = ("continue", "restart")


class SlimCallback(L.Callback):
    """Network slimming for a LightningModule that holds a :class:`YOLOv5`.

    Args:
        sparsity: L1 strength on γ (Liu et al. use 1e-4 to 1e-5; short runs need more).
        schedule: How the strength evolves over the sparse phase: constant, linear or cosine
            (both decaying to ``floor * sparsity``).
        prune_epochs: Epoch(s) at whose start the network is pruned; several for iterative pruning;
            ``[]`` for sparse training only (the checkpoint that ``prune`` sweeps start from).
        ratio: Fraction of the original prunable channels removed after each prune: one value, or
            one cumulative target per prune epoch.
        policy: ``"grouped"`` (every group, residual ones as a whole) or ``"seed"`` (spares shortcuts).
        round_to: Kept channel counts are rounded up to a multiple of this.
        min_channels: No group keeps fewer channels.
        model_attr: Path of the YOLOv5 inside the module (``"model"``); default: the only one found.
        bias_sparsity: L1 strength on β (0: off).
        floor: Final strength fraction of the decaying schedules.
        sparsity_after_prune: Keep the penalty on while fine-tuning.
        finetune_schedule: ``"continue"`` the LR schedule through the prune, or ``"restart"`` it.
        imgsz: Image size for GFLOPs and latency; default: the module's ``hparams.imgsz`` or 640.
        write_artifacts: Write the per-layer table, the channel chart and the γ histograms (at the
            start and at each prune) into the run folder, and log the charts to TensorBoard as images.
    """

    def __init__(self, sparsity: float = 1e-4, schedule: str = "constant", prune_epochs: int | Sequence[int] = 0,
                 ratio: float | Sequence[float] = 0.5, policy: str = "grouped", round_to: int = 8,
                 min_channels: int = 8, model_attr: str | None = None, bias_sparsity: float = 0.0,
                 floor: float = 0.1, sparsity_after_prune: bool = False, finetune_schedule: str = "continue",
                 imgsz: int | None = None, write_artifacts: bool = True) -> None:
        epochs = [prune_epochs] if isinstance(prune_epochs, int) else list(prune_epochs)
        ratios = [ratio] * len(epochs) if isinstance(ratio, (int, float)) else list(ratio)
        _validate(sparsity, bias_sparsity, schedule, epochs, ratios, policy, round_to, min_channels, floor,
                  finetune_schedule)
        self.sparsity, self.bias_sparsity, self.schedule, self.floor = sparsity, bias_sparsity, schedule, floor
        self.prune_epochs, self.ratios = epochs, [float(r) for r in ratios]
        self.policy, self.round_to, self.min_channels = policy, round_to, min_channels
        self.model_attr, self.sparsity_after_prune = model_attr, sparsity_after_prune
        self.finetune_schedule, self.imgsz, self.write_artifacts = finetune_schedule, imgsz, write_artifacts
        # Progress (saved in checkpoints): prunes done, their plans, the stage figures.
        self.completed_prunes = 0
        self.plans: list[dict[str, Any]] = []
        self.stages: dict[str, dict[str, Any]] = {}
        self.original_prunable: int | None = None
        self._target: SparsityTarget | None = None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        late = [e for e in self.prune_epochs[self.completed_prunes:] if trainer.max_epochs is not None
                and 0 <= trainer.max_epochs <= e]
        if late:
            raise ValueError(f"SlimCallback prune_epochs {late} must be < trainer.max_epochs={trainer.max_epochs} "
                             f"(a prune at epoch e happens at its start, so e < max_epochs leaves fine-tuning time)")
        _, network = find_network(pl_module, self.model_attr)  # fail now if there is no single YOLOv5 to prune
        self._target = None  # a resumed fit may hold a rebuilt network
        # A resumed fit (ckpt_path) has already trained: its γ are not "before sparse training".
        if self.write_artifacts and self.completed_prunes == 0 and trainer.ckpt_path is None and trainer.is_global_zero:
            self._write_histogram(trainer, network, "gamma_histogram_start", "|gamma| before sparse training")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Sparse training only: no prune drew the "after" histogram, so draw it at the end, from the
        # weights a later `prune` run ranks (the EMA, when the module keeps one).
        if not self.prune_epochs and self.write_artifacts and trainer.is_global_zero:
            network = getattr(pl_module, "inference_model", None)
            network = network if isinstance(network, YOLOv5) else find_network(pl_module, self.model_attr)[1]
            self._write_histogram(trainer, network, "gamma_histogram",
                                  f"|gamma| after sparse training (epoch {trainer.current_epoch})")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.prune_epochs and self.completed_prunes >= len(self.prune_epochs) and not self.sparsity_after_prune:
            return
        if self._target is None:  # built once per architecture: the hot path is two fused kernels
            self._target = sparsity_target(find_network(pl_module, self.model_attr)[1], self.policy)
        strength = sparsity_strength(self.sparsity, self._progress(trainer), self.schedule, self.floor)
        add_bn_l1_grad(self._target, strength, self.bias_sparsity * strength / self.sparsity if self.sparsity else 0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (self.completed_prunes < len(self.prune_epochs)
                and trainer.current_epoch == self.prune_epochs[self.completed_prunes]):
            self._prune(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _, network = find_network(pl_module, self.model_attr)
        gammas = torch.cat([w.detach().abs().flatten().float() for w in sparsity_target(network, self.policy).weights])
        pl_module.log("slim/gamma_below_0.01", (gammas < 1e-2).float().mean(), sync_dist=False)
        pl_module.log("slim/gamma_mean", gammas.mean(), sync_dist=False)
        for logger in trainer.loggers if trainer.is_global_zero else []:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_histogram"):
                experiment.add_histogram("slim/gamma", gammas.cpu(), trainer.current_epoch)

    def _progress(self, trainer: L.Trainer) -> float:
        """How far the sparse phase is, in [0, 1], for the strength schedule.

        Epoch granularity, as the seed implementation decays it, up to the last prune epoch; with no
        prune epoch (sparse training only) over the whole fit: its epochs, else its steps.
        """
        if self.prune_epochs:
            return trainer.current_epoch / max(self.prune_epochs[-1], 1)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            return trainer.current_epoch / trainer.max_epochs
        if trainer.max_steps > 0:
            return trainer.global_step / trainer.max_steps
        return 0.0  # unbounded fit: hold the starting strength

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        path, network = find_network(pl_module, self.model_attr)
        stored = checkpoint.setdefault(CHECKPOINT_KEY, {})
        stored.update({"spec": network.spec.to_dict(), "names": list(network.names), "model_attr": path})

    def state_dict(self) -> dict[str, Any]:
        return {"completed_prunes": self.completed_prunes, "plans": list(self.plans), "stages": dict(self.stages),
                "original_prunable": self.original_prunable}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.completed_prunes = int(state_dict["completed_prunes"])
        self.plans = list(state_dict["plans"])
        self.stages = dict(state_dict.get("stages", {}))
        self.original_prunable = state_dict.get("original_prunable")

    # ------------------------------------------------------------------ pruning
    def _prune(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        index = self.completed_prunes
        imgsz = self.imgsz or int(getattr(pl_module, "hparams", {}).get("imgsz", 640))
        self.stages["train"] = self._stage(trainer, pl_module, imgsz)
        path, network = find_network(pl_module, self.model_attr)
        plan = self._plan(trainer, network, index, imgsz)
        small = compact(network, plan)
        ema = getattr(pl_module, "ema", None)
        if hasattr(pl_module, "set_network"):  # YOLOv5Module: swaps network, EMA and loss together
            small_ema = compact(ema.module, plan) if isinstance(ema, AveragedModel) else None
            updates = int(ema.n_averaged) if isinstance(ema, AveragedModel) else 0
            pl_module.set_network(small, ema_network=small_ema, ema_updates=updates)
        else:
            _replace_submodule(pl_module, path, small)
        self._rebuild_optimizers(trainer, pl_module)
        self._target = None
        self.plans.append(plan.to_dict())
        self.completed_prunes += 1
        log.info("pruned at epoch %d: %d of %d channels removed", trainer.current_epoch, plan.removed_channels,
                 plan.total_channels)
        self.stages["pruned"] = self._stage(trainer, pl_module, imgsz)
        if self.write_artifacts and trainer.is_global_zero:
            pictures = self._write_artifacts(Path(trainer.default_root_dir), network, small, imgsz, index)
            log_images(trainer, pictures, trainer.global_step)

    def _plan(self, trainer: L.Trainer, network: YOLOv5, index: int, imgsz: int) -> PruningPlan:
        plan_dict = None
        if trainer.is_global_zero:
            prunable = _prunable_channels(network, self.policy)
            if self.original_prunable is None:
                self.original_prunable = prunable
            already = self.original_prunable - prunable
            wanted = self.ratios[index] * self.original_prunable - already
            ratio = min(max(wanted / prunable, 0.0), 0.999) if prunable else 0.0
            plan_dict = plan_pruning(network, ratio=ratio, policy=self.policy, round_to=self.round_to,
                                     min_channels=self.min_channels, imgsz=imgsz).to_dict()
        # Every rank must build the identical architecture: rank 0 decides.
        plan_dict = trainer.strategy.broadcast(plan_dict, src=0)
        self.original_prunable = trainer.strategy.broadcast(self.original_prunable, src=0)
        return PruningPlan.from_dict(plan_dict)

    def _rebuild_optimizers(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        old_states = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy):
            # DDP registered its all-reduce hooks on the old parameters: wrap the new ones afresh.
            strategy.model = pl_module
            strategy.configure_ddp()
        # No public "reset optimizers" API exists; this re-runs configure_optimizers and re-wraps.
        strategy.setup_optimizers(trainer)
        if self.finetune_schedule == "continue":
            for config, state in zip(trainer.lr_scheduler_configs, old_states):
                if len(config.scheduler.optimizer.param_groups) != len(state.get("base_lrs", [])):
                    continue
                config.scheduler.load_state_dict(state)
                for group, rate in zip(config.scheduler.optimizer.param_groups, config.scheduler.get_last_lr()):
                    group["lr"] = rate

    def _stage(self, trainer: L.Trainer, pl_module: L.LightningModule, imgsz: int) -> dict[str, Any]:
        """Validate now (the fit's own validation loop) and measure the network."""
        _run_validation(trainer)
        _, network = find_network(pl_module, self.model_attr)
        measured = getattr(pl_module, "inference_model", network)
        metrics = trainer.callback_metrics
        return {"epoch": trainer.current_epoch,
                "map50": float(metrics["val/map50"]) if "val/map50" in metrics else None,
                "map": float(metrics["val/map"]) if "val/map" in metrics else None,
                "params": count_parameters(measured), "gflops": round(count_gflops(measured, imgsz), 4),
                "latency_ms": round(cpu_latency_ms(measured, imgsz), 3) if trainer.is_global_zero else None}

    def _write_histogram(self, trainer: L.Trainer, network: YOLOv5, name: str, title: str) -> None:
        """``<name>.png`` in the run folder: |γ| of the prunable BatchNorms; also logged as an image."""
        from yolo_slim.slim.plots import plot_gamma_histogram

        folder = Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        # Every producer, as the histogram drawn at each prune (slim.report) shows them.
        picture = plot_gamma_histogram(producer_gammas(network), folder / f"{name}.png", title=title)
        log_images(trainer, {f"slim/{name}": picture}, trainer.global_step)

    def _write_artifacts(self, folder: Path, before: YOLOv5, after: YOLOv5, imgsz: int,
                         index: int) -> dict[str, Path]:
        """Write the per-layer table and the two charts of one prune; returns the charts by TensorBoard tag."""
        from yolo_slim.slim.plots import write_prune_artifacts

        suffix = "" if len(self.prune_epochs) == 1 else f"_{index}"
        return write_prune_artifacts(
            folder, before, after, imgsz, suffix,
            histogram_title=f"|gamma| after sparse training, before pruning (epoch {self.prune_epochs[index]})")


def log_images(trainer: L.Trainer, pictures: dict[str, Path], step: int) -> None:
    """Send PNGs to every logger of ``trainer`` that takes images (TensorBoard's ``add_image``); others are skipped."""
    import numpy
    from PIL import Image

    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if not hasattr(experiment, "add_image"):
            continue
        for tag, path in pictures.items():
            with Image.open(path) as picture:
                pixels = numpy.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
            experiment.add_image(tag, pixels, step, dataformats="HWC")


def find_network(module: nn.Module, model_attr: str | None = None) -> tuple[str, YOLOv5]:
    """The YOLOv5 a LightningModule trains: ``model_attr``, or the only one outside an EMA copy.

    Raises:
        ValueError: none or several found (name them and ask for ``model_attr``).
    """
    if model_attr is not None:
        network = module.get_submodule(model_attr)
        if not isinstance(network, YOLOv5):
            raise ValueError(f"model_attr={model_attr!r} is a {type(network).__name__}, not a yolo_slim YOLOv5")
        return model_attr, network
    averaged = [name for name, m in module.named_modules() if isinstance(m, AveragedModel)]
    found = [(name, m) for name, m in module.named_modules()
             if isinstance(m, YOLOv5) and not any(name.startswith(f"{a}.") for a in averaged)]
    if len(found) != 1:
        names = [name for name, _ in found]
        raise ValueError(f"SlimCallback needs exactly one yolo_slim YOLOv5 in {type(module).__name__}, found "
                         f"{len(found)} ({names}); pass model_attr='...' to choose")
    return found[0]


def restore_pruned_network(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Rebuild a pruned YOLOv5 inside ``module`` before the checkpoint's weights load.

    Call it from your LightningModule's ``on_load_checkpoint(self, checkpoint)`` (the one line a
    module other than ``YOLOv5Module`` needs to resume a pruned run).
    """
    stored = checkpoint.get(CHECKPOINT_KEY)
    if not stored or "spec" not in stored:
        return
    path, network = find_network(module, stored.get("model_attr"))
    rebuilt = YOLOv5.from_spec(stored["spec"], names=stored.get("names"))
    if rebuilt.spec != network.spec:
        reference = next(network.parameters())
        _replace_submodule(module, path, rebuilt.to(reference.device, reference.dtype))


def _replace_submodule(module: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(module.get_submodule(parent_path) if parent_path else module, name, new)


def _prunable_channels(network: YOLOv5, policy: str) -> int:
    from yolo_slim.slim.graph import trace_channels

    return sum(g.size for g in trace_channels(network.spec, policy).groups.values() if not g.frozen)


def _run_validation(trainer: L.Trainer) -> None:
    """Run the fit's validation loop now, as Lightning's training epoch loop does at its end.

    Lightning has no public way to validate in the middle of a fit; this mirrors what its own
    ``_TrainingEpochLoop.on_advance_end`` does around ``val_loop.run()``.
    """
    if not trainer.limit_val_batches:
        return
    loop = trainer.fit_loop.epoch_loop.val_loop
    trainer.validating = True
    loop.run()
    trainer.training = True


def _validate(sparsity: float, bias_sparsity: float, schedule: str, epochs: list[int], ratios: list[float],
              policy: str, round_to: int, min_channels: int, floor: float, finetune_schedule: str) -> None:
    if sparsity < 0 or bias_sparsity < 0:
        raise ValueError(f"sparsity and bias_sparsity must be >= 0, found {sparsity} and {bias_sparsity}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, found {schedule!r}")
    if finetune_schedule not in FINETUNE_SCHEDULES:
        raise ValueError(f"finetune_schedule must be one of {FINETUNE_SCHEDULES}, found {finetune_schedule!r}")
    if any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in epochs):
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
    for ratio in ratios or [0.0]:  # with no prune epoch, still check round_to and min_channels
        check_plan_arguments(ratio=ratio, policy=policy, round_to=round_to, min_channels=min_channels)
    if not 0 <= floor <= 1:
        raise ValueError(f"floor must be in [0, 1], found {floor}")
