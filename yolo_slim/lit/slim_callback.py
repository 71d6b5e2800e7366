"""``SlimCallback``: sparsity training, scheduled pruning and fine-tuning inside one Lightning fit.

* Every optimizer step of the sparse phase, the chosen method (:mod:`yolo_slim.lit.sparsity_methods`)
  acts on the prunable BatchNorms in ``on_before_optimizer_step`` (after gradient accumulation and
  after AMP unscaled the gradients, before clipping).
* ``targeted``: at the first batch past its warm-up, then at each epoch start until its hold, the
  channels the prune would remove are chosen on rank 0 and broadcast, so every rank shrinks the
  same ones.
* At the start of each prune epoch: validate, plan on rank 0, broadcast the plan, compact the
  network (and its weight averages: the module's EMA or AveragedModel, the copy that Lightning's
  WeightAveraging and StochasticWeightAveraging callbacks average) on every rank, swap it in,
  rebuild the optimizers and the DDP wrapper, continue the LR schedule, validate again.
* Every epoch: how separated the channels the next prune would remove are (logged, and appended
  to ``separation.csv`` in the run folder).
* Checkpoints carry the pruned spec and its plans; a resumed fit rebuilds the architecture before
  loading the weights (``YOLOv5Module`` does it itself; any other module calls
  :func:`~yolo_slim.lit.network.restore_pruned_network` from its ``on_load_checkpoint``) and the
  callback's own state says which prunes are done and which channels ``targeted`` had chosen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel

from yolo_slim.lit import _lightning_internals as internals
from yolo_slim.lit.console import show_info_lines
from yolo_slim.lit.network import (averaged_copies, find_network, replace_submodule, store_network,
                                   unaveraged_copies, weight_averages)
from yolo_slim.lit.slim_arguments import check_slim_arguments, epochs_and_ratios
from yolo_slim.lit.slim_artifacts import (PredictionPictures, append_separation_row, drop_separation_rows_from,
                                         write_histogram, write_prune_charts)
from yolo_slim.lit.sparsity_methods import DEFAULT_STRENGTH, METHOD_SPECIFIC, MethodSettings, make_method
from yolo_slim.models import YOLOv5, count_gflops, count_parameters
from yolo_slim.models.checkpoint import CHECKPOINT_KEY
from yolo_slim.models.info import cpu_latency_ms
from yolo_slim.models.spec import DEFAULT_IMGSZ
from yolo_slim.slim import PruningPlan, compact, plan_pruning, sparsity_target
from yolo_slim.slim.graph import trace_channels
from yolo_slim.slim.separation import NEGLIGIBLE_GAMMA, separation

log = logging.getLogger(__name__)


class SlimCallback(L.Callback):
    """Network slimming for a LightningModule that holds a :class:`YOLOv5`.

    Args:
        method: The sparsity method: ``"targeted"`` (default; shrinks only the channels the prune
            will remove, so pruning is nearly free; tied to ``ratio``), ``"l1"`` (the paper's
            penalty on every γ) or ``"polarize"`` (Zhuang et al. 2020). See
            :mod:`yolo_slim.lit.sparsity_methods`.
        sparsity: The method's strength; default: the method's value chosen from the benchmark
            table (``DEFAULT_STRENGTH``). ``l1``: s of ``s·sign(γ)`` per step; ``polarize``: λ;
            ``targeted``: the full-strength shrink in e-folds per sparse phase.
        schedule: ``l1``/``polarize``: how the strength evolves over the sparse phase: constant
            (the default), linear or cosine (both decaying to ``floor * sparsity``).
        prune_epochs: Epoch(s) at whose start the network is pruned; several for iterative pruning;
            ``[]`` for sparse training only (the checkpoint that ``prune`` sweeps start from).
        ratio: Fraction of the original prunable channels removed after each prune: one value, or
            one cumulative target per prune epoch.
        policy: ``"grouped"`` (every group, residual ones as a whole) or ``"seed"`` (spares shortcuts).
        round_to: Kept channel counts are rounded up to a multiple of this.
        min_channels: No group keeps fewer channels.
        model_attr: Path of the YOLOv5 inside the module (``"model"``); default: the only one found.
        bias_sparsity: ``l1``/``polarize``: L1 strength on β (default 0: off).
        polarization_t: ``polarize``: weight ``t`` of the L1 pull (default 1.2, the paper's CIFAR value).
        warmup: ``targeted``: fraction of each sparse phase before the first choice, trained with
            the ``l1`` penalty so that |γ| ranks the channels. Default: 0.6 from a fresh network
            (every γ still 1), 0 from trained weights, whose |γ| already rank.
        hold: ``targeted``: final fraction of each sparse phase in which the choice is fixed and the
            chosen channels lose their task gradient. Default: 0.15 from a fresh network, 0.5 from
            trained weights (the shrink then spans the first half of the phase).
        warmup_sparsity: ``targeted``: the ``l1`` strength of the warm-up (default: ``l1``'s default).
        floor: ``l1``/``polarize``: final strength fraction of the decaying schedules (default 0.1).
        sparsity_after_prune: ``l1``/``polarize``: keep the penalty on while fine-tuning.
        finetune_schedule: ``"continue"`` the LR schedule through the prune, or ``"restart"`` it.
        imgsz: Image size for GFLOPs and latency; default: the module's ``hparams.imgsz`` or 640.
        write_artifacts: Write the per-layer table, the channel chart, the γ histograms (at the
            start and at each prune) and ``separation.csv`` into the run folder, and log the charts
            to TensorBoard as images.
    """

    def __init__(self, method: str = "targeted", sparsity: float | None = None, schedule: str | None = None,
                 prune_epochs: int | Sequence[int] = 0, ratio: float | Sequence[float] = 0.5,
                 policy: str = "grouped", round_to: int = 8, min_channels: int = 8, model_attr: str | None = None,
                 bias_sparsity: float | None = None, polarization_t: float | None = None,
                 warmup: float | None = None, hold: float | None = None, warmup_sparsity: float | None = None,
                 floor: float | None = None,
                 sparsity_after_prune: bool = False, finetune_schedule: str = "continue", imgsz: int | None = None,
                 write_artifacts: bool = True) -> None:
        epochs, ratios = epochs_and_ratios(prune_epochs, ratio)
        # None: the method's default. A value equal to the default changes nothing, so it is not a foreign
        # argument either: bias_sparsity=0 is "off" for every method, and the saved config of a run made
        # before schedule and floor defaulted to None spells out constant and 0.1 (a resume re-reads it).
        specific = {"schedule": schedule, "floor": floor, "bias_sparsity": bias_sparsity,
                    "polarization_t": polarization_t, "warmup": warmup, "hold": hold,
                    "warmup_sparsity": warmup_sparsity}
        defaults = MethodSettings()
        given = {name for name, value in specific.items()
                 if value is not None and value != getattr(defaults, METHOD_SPECIFIC[name][0])}
        strength = DEFAULT_STRENGTH.get(method, 0.0) if sparsity is None else float(sparsity)
        self.settings = MethodSettings(method=method, strength=strength, **{
            METHOD_SPECIFIC[name][0]: specific[name] if name == "schedule" else float(specific[name])
            for name in given})
        if not epochs and not isinstance(ratio, (int, float)):
            raise ValueError(f"with prune_epochs=[] (sparse training only) ratio must be one float, the ratio the "
                             f"sparse model is meant for, found {ratio!r}")
        check_slim_arguments(self.settings, given, epochs, ratios, policy, round_to, min_channels,
                             finetune_schedule, sparsity_after_prune, imgsz)
        if method == "targeted" and sparsity is not None and strength < 1:
            log.warning("targeted's sparsity is in e-folds per sparse phase: %g shrinks the chosen channels by at "
                        "most a factor %.3f, far from zero (its default is %g)", strength, math.exp(-strength),
                        DEFAULT_STRENGTH["targeted"])
        self.prune_epochs, self.ratios = epochs, [float(r) for r in ratios]
        # The ratio a sparse-only run aims at (targeted needs one; diagnostics use it for the others).
        self.target_ratio = float(ratio) if isinstance(ratio, (int, float)) else float(self.ratios[-1])
        self.policy, self.round_to, self.min_channels = policy, round_to, min_channels
        self.model_attr, self.sparsity_after_prune = model_attr, sparsity_after_prune
        self.finetune_schedule, self.imgsz, self.write_artifacts = finetune_schedule, imgsz, write_artifacts
        self.method = make_method(self.settings, policy)
        # Progress (saved in checkpoints): prunes done, the stage figures, the original channel count.
        self.completed_prunes = 0
        self.stages: dict[str, dict[str, Any]] = {}
        self.original_prunable: int | None = None
        self._batch_fraction = 0.0
        self._stepping = False  # on_before_optimizer_step ran in this batch: after_step is due at its end
        self._pictures = PredictionPictures()  # predictions.png: dense before the first prune | final
        self._fit_epochs: int | None = None  # the fit's max_epochs as the user set it (see setup)

    @property
    def sparsity(self) -> float:
        return self.settings.strength

    def describe(self) -> dict[str, Any]:
        """The settings in force, defaults resolved, as plain data (for ``summary.json``)."""
        return {**self.method.describe(), "prune_epochs": list(self.prune_epochs),
                "ratio": list(self.ratios) if self.prune_epochs else self.target_ratio, "policy": self.policy,
                "round_to": self.round_to, "min_channels": self.min_channels,
                "sparsity_after_prune": self.sparsity_after_prune, "finetune_schedule": self.finetune_schedule}

    # ------------------------------------------------------------------ hooks
    def late_prunes(self, max_epochs: int | None) -> list[int]:
        """The prune epochs still to come that a fit of ``max_epochs`` would never reach (none when unbounded)."""
        return [e for e in self.prune_epochs[self.completed_prunes:] if max_epochs is not None
                and 0 <= max_epochs <= e]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        show_info_lines()  # the prune lines, in a script that set up no logging
        if stage == "fit":
            # Read before any callback's on_fit_start: StochasticWeightAveraging's adds one epoch to the fit
            # loop there for its BatchNorm update, which the sparse phase and the prune checks must not count.
            self._fit_epochs = trainer.max_epochs

    def _max_epochs(self, trainer: L.Trainer) -> int | None:
        return self._fit_epochs if self._fit_epochs is not None else trainer.max_epochs

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        max_epochs = self._max_epochs(trainer)
        late = self.late_prunes(max_epochs)
        if late:
            raise ValueError(f"SlimCallback prune_epochs {late} must be < trainer.max_epochs={max_epochs} "
                             f"(a prune at epoch e happens at its start, so e < max_epochs leaves fine-tuning time)")
        self._check_swa(internals.swa_first_epoch(trainer), max_epochs)
        path, network = find_network(pl_module, self.model_attr)  # fail now if there is no single YOLOv5 to prune
        copies = unaveraged_copies(pl_module, path) if self.completed_prunes == 0 else []
        if copies:
            # Not pruned, as a teacher should not be; an EMA kept this way would break at its first update after
            # the prune (its shapes no longer match), so the way to keep one in step is named.
            log.warning("SlimCallback prunes %s only; %s hold(s) a copy of its architecture outside any "
                        "torch AveragedModel and will stay dense. If one is a weight average, keep it as "
                        "AveragedModel(%s, multi_avg_fn=get_ema_multi_avg_fn(decay)) so that it is pruned too",
                        path, ", ".join(copies), path)
        if self.prune_epochs[:1] == [trainer.current_epoch] and self.completed_prunes == 0 and _untrained(network):
            # Legitimate from trained weights (one-shot pruning, then fine-tuning); from a fresh network the plan
            # has nothing to rank by.
            log.warning("SlimCallback prunes at epoch %d, before any training: every BatchNorm γ is still 1, so "
                        "the channels removed are picked by their order, not their importance; give prune_epochs "
                        "a later epoch (a sparse phase first), or start from trained weights",
                        trainer.current_epoch)
        self._bind(trainer, pl_module)  # a resumed fit holds a rebuilt network
        # A resumed fit (ckpt_path) has already trained: its γ are not "before sparse training".
        if self.write_artifacts and self.completed_prunes == 0 and trainer.ckpt_path is None and trainer.is_global_zero:
            write_histogram(trainer, network, "gamma_histogram_start", "|gamma| before sparse training")

    def _check_swa(self, swa_start: int | None, max_epochs: int | None) -> None:
        """Refuse a ``StochasticWeightAveraging`` (first averaged epoch ``swa_start``) that cannot work here.

        Its average is an equal mean from its first epoch on: across a prune it would mix the dense and
        pruned networks (and its SWALR scheduler would not survive the optimizers rebuilt at the prune);
        over ``targeted``'s sparse-only run it would leave the chosen γ at the mean of their shrinking
        values, not near 0, in the weights it ends the fit on. And one that starts after the fit's last
        epoch never averages, yet Lightning still ends the fit on its copy of the starting weights.
        """
        if swa_start is None:
            return
        last_epoch = max_epochs - 1 if max_epochs is not None and max_epochs >= 0 else None
        pending = self.prune_epochs[self.completed_prunes:]
        if pending and swa_start <= pending[-1]:
            if last_epoch is not None and pending[-1] >= last_epoch:
                raise ValueError(f"StochasticWeightAveraging averages from epoch {swa_start} on, at or before "
                                 f"SlimCallback's last prune (epoch {pending[-1]}), and no epoch of "
                                 f"max_epochs={max_epochs} is left after it; prune earlier or drop the SWA")
            raise ValueError(f"StochasticWeightAveraging averages from epoch {swa_start} on, at or before "
                             f"SlimCallback's last prune (epoch {pending[-1]}); set its swa_epoch_start to "
                             f"{pending[-1] + 2} or later (it counts from 1) so that it averages the pruned network")
        if not self.prune_epochs and self.settings.method == "targeted" and (last_epoch is None
                                                                             or swa_start <= last_epoch):
            raise ValueError("StochasticWeightAveraging over targeted's sparse-only run would average the chosen "
                             "channels' shrinking γ instead of ending them near 0; use EMAWeightAveraging (targeted "
                             "shrinks its copy too), or method l1 or polarize")
        if last_epoch is not None and swa_start > last_epoch:
            raise ValueError(f"StochasticWeightAveraging starts at epoch {swa_start}, after the last of "
                             f"max_epochs={max_epochs}: it would never average, and Lightning would still end the "
                             f"fit on the copy of the starting weights it keeps")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.completed_prunes and self.write_artifacts and trainer.is_global_zero:
            network = _validated_network(pl_module, find_network(pl_module, self.model_attr)[1])
            self._pictures.write(Path(trainer.default_root_dir), network, trainer,
                                 f"pruned + fine-tuned (epoch {trainer.current_epoch})")
        # Sparse training only: no prune drew the "after" histogram, so draw it at the end, from the
        # weights a later `prune` run ranks (the EMA, when the module keeps one).
        if not self.prune_epochs and self.write_artifacts and trainer.is_global_zero:
            network = _validated_network(pl_module, find_network(pl_module, self.model_attr)[1])
            write_histogram(trainer, network, "gamma_histogram",
                            f"|gamma| after sparse training (epoch {trainer.current_epoch})")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # By now (unlike in on_fit_start) a resumed fit's loops are restored: the epochs from current_epoch on are
        # run again, and so are their separation rows (one killed before its checkpoint had written its row).
        if self.write_artifacts and trainer.is_global_zero:
            drop_separation_rows_from(Path(trainer.default_root_dir), trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batch_fraction = 0.0
        pending = self.prune_epochs[self.completed_prunes:]
        if pending and pending[0] < trainer.current_epoch:
            # A fit resumed from a checkpoint without this callback's progress, already past a prune epoch:
            # pruning late, or never, would not be the run that was asked for.
            raise ValueError(f"SlimCallback prune_epochs {pending} include epochs before the current epoch "
                             f"{trainer.current_epoch} (a checkpoint without SlimCallback's progress was resumed?); "
                             f"give prune epochs >= {trainer.current_epoch}")
        if pending and trainer.current_epoch == pending[0]:
            self._prune(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_fraction = internals.batch_fraction(trainer, batch_idx)
        # targeted: the first choice at the first batch past the warm-up (so that a phase of one or
        # two epochs gets one too), then again at each epoch start of its window. Every rank sees the
        # same batch index and progress, so all of them enter the broadcast together.
        if self._sparse_phase_active() and self.method.needs_choice(self._segment_progress(trainer),
                                                                    epoch_start=batch_idx == 0):
            _, network = find_network(pl_module, self.model_attr)
            self.method.set_choice(self._plan(trainer, network, self._next_ratio_index()), network)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if not self._sparse_phase_active():
            return
        progress = self._segment_progress(trainer) if self.method.tied_to_ratio else self._progress(trainer)
        self.method.step(progress, self._segment_steps(trainer))
        self._stepping = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Lightning steps inside training_step's closure, so a batch that stepped has stepped by now; a batch that
        # only accumulated gradients did not call on_before_optimizer_step, and its after_step waits for one that did.
        if self._stepping:
            self._stepping = False
            self.method.after_step()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _, network = find_network(pl_module, self.model_attr)
        gammas = torch.cat([w.detach().abs().flatten().float() for w in sparsity_target(network, self.policy).weights])
        figures: dict[str, float | None] = {"gamma_mean": float(gammas.mean()),
                                            "gamma_below_0_01": float((gammas < NEGLIGIBLE_GAMMA).float().mean())}
        # The coming prune's removal, measured as it stands (nothing to measure after the last prune).
        figures.update(dict.fromkeys(("channels_below_0_01", "removed_gamma_mean", "kept_gamma_mean",
                                      "removed_output_mass")))
        if self._next_ratio_index() is not None:
            plan = self.method.chosen_plan() or plan_pruning(
                network, ratio=self._relative_ratio(network, self._next_ratio_index()), policy=self.policy,
                round_to=self.round_to, min_channels=self.min_channels)
            figures.update(separation(network, plan).to_dict())
        for name, value in figures.items():
            if value is not None:
                pl_module.log(f"slim/{name}", value, sync_dist=False)
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_histogram"):
                experiment.add_histogram("slim/gamma", gammas.cpu(), trainer.current_epoch)
        if self.write_artifacts:
            append_separation_row(Path(trainer.default_root_dir), {"epoch": trainer.current_epoch, **figures})

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        path, network = find_network(pl_module, self.model_attr)
        store_network(checkpoint, network, model_attr=path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning loads a checkpoint's weights before any callback hears of it (callbacks' on_load_checkpoint
        # runs after), so rebuilding a pruned network is the module's part; a module that skips it fails with torch's
        # long list of size mismatches, which this ends with the one line that fixes it.
        stored = (internals.checkpoint_being_restored(trainer) or {}).get(CHECKPOINT_KEY) or {}
        if not (isinstance(exception, RuntimeError) and "size mismatch" in str(exception) and stored.get("plans")):
            return
        hint = (f"{trainer.ckpt_path} holds a network pruned {len(stored['plans'])} time(s), which "
                f"{type(pl_module).__name__} loads into the dense one it builds: call "
                f"yolo_slim.lit.restore_pruned_network(self, checkpoint) in its on_load_checkpoint to rebuild "
                f"the pruned one first (YOLOv5Module does)")
        if hasattr(exception, "add_note"):  # Python 3.11+: shown at the end of the traceback
            exception.add_note(hint)
        else:
            log.error(hint)

    def state_dict(self) -> dict[str, Any]:
        index = self._next_ratio_index()
        # The rules a targeted choice was made with, so that `prune` can reuse it (targeted_choice_in).
        rules = {"ratio": self.target_ratio if index == -1 else self.ratios[index], "policy": self.policy,
                 "round_to": self.round_to, "min_channels": self.min_channels} if index is not None else None
        return {"completed_prunes": self.completed_prunes, "stages": dict(self.stages),
                "original_prunable": self.original_prunable, "method": self.settings.method,
                "method_state": self.method.state_dict(), "choice_rules": rules,
                "dense_predictions": self._pictures.state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.completed_prunes = int(state_dict["completed_prunes"])
        self.stages = dict(state_dict.get("stages", {}))
        self.original_prunable = state_dict.get("original_prunable")
        self._pictures.restore(state_dict.get("dense_predictions", []))
        if state_dict.get("method", self.settings.method) == self.settings.method:
            self.method.load_state_dict(dict(state_dict.get("method_state", {})))

    # ------------------------------------------------------------------ phases
    def _sparse_phase_active(self) -> bool:
        if not self.prune_epochs or self.completed_prunes < len(self.prune_epochs):
            return True
        return self.sparsity_after_prune

    def _next_ratio_index(self) -> int | None:
        """Which ratio target the coming prune aims at (-1: a sparse-only run's ``ratio``); None after the last."""
        if not self.prune_epochs:
            return -1
        return self.completed_prunes if self.completed_prunes < len(self.prune_epochs) else None

    def _segment(self, trainer: L.Trainer) -> tuple[float, float] | None:
        """First and end epoch of the current sparse phase (from the last prune, or 0, to the next prune)."""
        start = self.prune_epochs[self.completed_prunes - 1] if self.completed_prunes else 0
        if self.completed_prunes < len(self.prune_epochs):
            return float(start), float(self.prune_epochs[self.completed_prunes])
        max_epochs = self._max_epochs(trainer)
        if max_epochs is not None and max_epochs > 0:
            return float(start), float(max_epochs)
        return None

    def _segment_progress(self, trainer: L.Trainer) -> float:
        """Progress through the current sparse phase in [0, 1], at batch granularity."""
        segment = self._segment(trainer)
        if segment is None:
            return trainer.global_step / trainer.max_steps if trainer.max_steps > 0 else 0.0
        start, end = segment
        return min(max((trainer.current_epoch + self._batch_fraction - start) / max(end - start, 1.0), 0.0), 1.0)

    def _segment_steps(self, trainer: L.Trainer) -> int:
        segment = self._segment(trainer)
        if segment is None:
            return max(trainer.max_steps, 1)
        start, end = segment
        return max(round((end - start) * internals.optimizer_steps_per_epoch(trainer)), 1)

    def _progress(self, trainer: L.Trainer) -> float:
        """How far the sparse phase is, in [0, 1], for the l1/polarize strength schedules.

        Epoch granularity, as the seed implementation decays it, up to the last prune epoch; with no
        prune epoch (sparse training only) over the whole fit: its epochs, else its steps.
        """
        if self.prune_epochs:
            return trainer.current_epoch / max(self.prune_epochs[-1], 1)
        max_epochs = self._max_epochs(trainer)
        if max_epochs is not None and max_epochs > 0:
            return trainer.current_epoch / max_epochs
        if trainer.max_steps > 0:
            return trainer.global_step / trainer.max_steps
        return 0.0  # unbounded fit: hold the starting strength

    def _bind(self, trainer: L.Trainer | None, pl_module: L.LightningModule) -> None:
        path, network = find_network(pl_module, self.model_attr)
        copies = averaged_copies(pl_module, network)
        for average in internals.trainer_weight_averages(trainer):
            copied = average.module.get_submodule(path)
            copies += [copied, *averaged_copies(average.module, copied)]
        self.method.bind(network, copies)

    # ------------------------------------------------------------------ pruning
    def _prune(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping_before = trainer.should_stop
        self._prune_and_measure(trainer, pl_module)
        # The pruned network is another model: what monitors ranked of the dense one no longer counts.
        # An EarlyStopping that checks at validation end (asked to, or validating less than once an epoch)
        # counted the two validations around the prune as epochs without progress (patience 2 ended the
        # fit at the prune); a monitored ModelCheckpoint would keep the dense network as its best.
        internals.start_monitors_over(trainer)
        if trainer.early_stopping_callbacks:
            trainer.should_stop = stopping_before

    def _prune_and_measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        index = self.completed_prunes
        suffix = "" if index == 0 else f"_{index + 1}"
        imgsz = self.imgsz or int(getattr(pl_module, "hparams", {}).get("imgsz", DEFAULT_IMGSZ))
        self.stages[f"train{suffix}"] = self._stage(trainer, pl_module, imgsz)
        path, network = find_network(pl_module, self.model_attr)
        if index == 0 and self.write_artifacts and trainer.is_global_zero:
            self._pictures.capture_dense(trainer, _validated_network(pl_module, network))
        # targeted prunes exactly what it shrank (identical on every rank: its choice was broadcast).
        plan = self.method.chosen_plan() or self._plan(trainer, network, index)
        figures = separation(network, plan).to_dict()
        small = _install_compacted(pl_module, path, plan)
        # Lightning's WeightAveraging and StochasticWeightAveraging callbacks average a copy of the whole module:
        # it is pruned the same way, or their next update (and their swap at validation) would meet the old shapes.
        for module_copy in internals.trainer_module_copies(trainer):
            _install_compacted(module_copy, path, plan)
        internals.rebuild_optimizers(trainer, pl_module, continue_schedule=self.finetune_schedule == "continue")
        self.completed_prunes += 1
        self._bind(trainer, pl_module)
        if trainer.is_global_zero:  # every rank pruned the same channels (the plan was broadcast): one line
            log.info("pruned at epoch %d: %d of %d channels removed; removed output mass %.2e", trainer.current_epoch,
                     plan.removed_channels, plan.total_channels, figures["removed_output_mass"])
        self.stages[f"pruned{suffix}"] = {**self._stage(trainer, pl_module, imgsz), **figures,
                                          "removed_channels": plan.removed_channels,
                                          "total_channels": plan.total_channels}
        if self.write_artifacts and trainer.is_global_zero:
            chart_suffix = "" if len(self.prune_epochs) == 1 else f"_{index}"
            write_prune_charts(trainer, network, small, imgsz, chart_suffix,
                               f"|gamma| after sparse training, before pruning (epoch {self.prune_epochs[index]})")

    def _relative_ratio(self, network: YOLOv5, index: int) -> float:
        """The share of ``network``'s prunable channels to remove to reach ratio target ``index``."""
        prunable = _prunable_channels(network, self.policy)
        if self.original_prunable is None:
            self.original_prunable = prunable
        target = self.target_ratio if index < 0 else self.ratios[index]
        wanted = target * self.original_prunable - (self.original_prunable - prunable)
        return min(max(wanted / prunable, 0.0), 0.999) if prunable else 0.0

    def _plan(self, trainer: L.Trainer, network: YOLOv5, index: int) -> PruningPlan:
        """The plan for ratio target ``index``, decided on rank 0 and broadcast to every rank."""
        plan_dict = None
        if trainer.is_global_zero:
            plan_dict = plan_pruning(network, ratio=self._relative_ratio(network, index), policy=self.policy,
                                     round_to=self.round_to, min_channels=self.min_channels).to_dict()
        # Every rank must build the identical architecture (and shrink the same channels): rank 0 decides.
        plan_dict = trainer.strategy.broadcast(plan_dict, src=0)
        self.original_prunable = trainer.strategy.broadcast(self.original_prunable, src=0)
        return PruningPlan.from_dict(plan_dict)

    def _stage(self, trainer: L.Trainer, pl_module: L.LightningModule, imgsz: int) -> dict[str, Any]:
        """Validate now (the fit's own validation loop) and measure the network."""
        internals.run_validation(trainer)
        _, network = find_network(pl_module, self.model_attr)
        measured = _validated_network(pl_module, network)
        metrics = trainer.callback_metrics
        return {"epoch": trainer.current_epoch,
                "map50": float(metrics["val/map50"]) if "val/map50" in metrics else None,
                "map": float(metrics["val/map"]) if "val/map" in metrics else None,
                "params": count_parameters(measured), "gflops": round(count_gflops(measured, imgsz), 4),
                "latency_ms": round(cpu_latency_ms(measured, imgsz), 3) if trainer.is_global_zero else None}


def targeted_choice_in(checkpoint: dict[str, Any], ratio: float, policy: str, round_to: int,
                       min_channels: int, aggregate: str = "max") -> PruningPlan | None:
    """The plan a ``targeted`` SlimCallback had chosen and shrunk, stored in a Lightning checkpoint, if it was
    chosen with these rules (a sparse-only run's ``last.ckpt``, pruned at its own ratio).

    A fresh plan on the shrunk γ would take the ~0 channels plus a few live ones, and rounding kept
    counts up to ``round_to`` can then cut a whole block of live channels; the stored choice cannot.
    The callback ranks a residual group by its largest |γ| (``plan_pruning``'s default ``aggregate``), so
    a prune asking for another aggregate gets no stored choice.
    """
    if aggregate != "max":
        return None
    wanted = {"ratio": float(ratio), "policy": policy, "round_to": round_to, "min_channels": min_channels}
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not str(key).startswith("SlimCallback") or not isinstance(state, dict):
            continue
        choice = (state.get("method_state") or {}).get("choice")
        if state.get("method") == "targeted" and choice is not None and state.get("choice_rules") == wanted:
            return PruningPlan.from_dict(choice)
    return None


def _install_compacted(module: torch.nn.Module, path: str, plan: PruningPlan) -> YOLOv5:
    """Swap the network at ``path`` of ``module`` for its compacted copy, and its weight averages with it.

    ``YOLOv5Module`` rebuilds its EMA and loss in ``set_network``; any other module's torch
    ``AveragedModel`` of the network keeps its update count and gets a compacted copy of its weights.
    """
    network = module.get_submodule(path)
    small = compact(network, plan)
    if hasattr(module, "set_network"):
        ema = getattr(module, "ema", None)
        averaged = isinstance(ema, AveragedModel)
        module.set_network(small, ema_network=compact(ema.module, plan) if averaged else None,
                           ema_updates=int(ema.n_averaged) if averaged else 0)
        return small
    averages = weight_averages(module, network)
    replace_submodule(module, path, small)
    for average in averages:
        average.module = compact(average.module, plan)
    return small


def _validated_network(pl_module: L.LightningModule, network: YOLOv5) -> YOLOv5:
    """The network validation runs: the module's weight average when it keeps one (YOLOv5Module's EMA)."""
    averaged = getattr(pl_module, "inference_model", None)
    return averaged if isinstance(averaged, YOLOv5) else network


def _prunable_channels(network: YOLOv5, policy: str) -> int:
    return sum(g.size for g in trace_channels(network.spec, policy).groups.values() if not g.frozen)


def _untrained(network: torch.nn.Module) -> bool:
    """Whether every BatchNorm scale is still at its initial 1 (a network that has not trained)."""
    norms = [m for m in network.modules() if isinstance(m, _BatchNorm) and m.weight is not None]
    return bool(norms) and all(bool((norm.weight == 1).all()) for norm in norms)
