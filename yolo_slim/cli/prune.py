"""``python -m yolo_slim prune ckpt=PATH prune.ratio=0.5``: one-shot pruning of a checkpoint.

Plans on the validation weights (the EMA when the checkpoint has one), compacts, validates before
and after on the same data, and writes a normal Lightning checkpoint of the pruned model (it
carries the spec, so ``YOLOv5Module.load_from_checkpoint`` and ``val`` read it), the per-layer
table, the γ histogram and channel chart (also in the fine-tune's TensorBoard log) and
``summary.json`` with stages ``train`` (before), ``pruned`` and, with ``prune.finetune_epochs``,
``finetuned``. A fine-tune that was stopped goes on with ``prune resume=RUN`` (or ``resume=auto``) from
``checkpoints/finetuned.ckpt``, which also keeps what the prune measured (:class:`PruneRecord`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from yolo_slim.cli.errors import stopped_by_signal, users_input
from yolo_slim.cli.resume import FINETUNED, continue_hint, starting_point
from yolo_slim.cli.settings import (
    Optimization,
    checkpoint_datamodule,
    load_checkpoint_module,
    make_trainer,
    named_settings,
    optimization,
    plain,
    require_positive_int,
    require_seed,
    tensorboard_logger,
    trainer_arguments,
)
from yolo_slim.cli.summary import stage_metrics, write_summary
from yolo_slim.data import AugmentConfig, YOLODataModule
from yolo_slim.lit.checkpoint_io import AtomicCheckpointIO, RunFolderCheckpoint
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.lit.slim_artifacts import PredictionPictures, log_images
from yolo_slim.lit.slim_callback import targeted_choice_in
from yolo_slim.models import YOLOv5
from yolo_slim.models.info import cpu_latency_ms
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.slim import PruningPlan, compact, plan_pruning, trace_channels
from yolo_slim.slim.plan import check_plan_arguments
from yolo_slim.slim.separation import separation

log = logging.getLogger(__name__)


def plan_arguments(prune: DictConfig) -> dict:
    """The plan_pruning keywords, with a start-up error when no target (or several) is given."""
    targets = {name: prune[name] for name in ("ratio", "threshold", "flops_target") if prune[name] is not None}
    if len(targets) != 1:
        raise ValueError(f"give exactly one of prune.ratio, prune.threshold, prune.flops_target; "
                         f"found {sorted(targets) or 'none'}")
    arguments = {**{k: float(v) for k, v in targets.items()}, "policy": prune.policy, "aggregate": prune.aggregate,
                 "round_to": require_positive_int(prune.round_to, "prune.round_to"),
                 "min_channels": require_positive_int(prune.min_channels, "prune.min_channels")}
    with named_settings("prune", arguments):
        check_plan_arguments(**arguments)  # fail now, not after loading and validating the model
    return arguments


def run(config: DictConfig) -> None:
    with users_input():
        # verbose=False: its notice would precede an error line
        L.seed_everything(require_seed(config.seed), workers=True, verbose=False)
        arguments = plan_arguments(config.prune)
        finetune_epochs = require_positive_int(config.prune.get("finetune_epochs", 0), "prune.finetune_epochs",
                                               minimum=0)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        resume, done = starting_point(config, run_dir, "prune", "prune.finetune_epochs",
                                      longer="to fine-tune it longer, start a train run from it (train "
                                      "model.weights={checkpoint} ...)")
        if done:  # a requeued job whose prune and fine-tune had finished
            return
        # A resumed fine-tune's checkpoint holds the pruned network, with the data and size it was pruned on.
        module = load_checkpoint_module(Path(str(resume or config.ckpt)), NMSConfig(**plain(config.nms)))
        # Augmentation only touches the fine-tune; evaluation letterboxes the validation split as usual.
        datamodule, imgsz = checkpoint_datamodule(config.data, module, augment=AugmentConfig())
        data = datamodule.data_yaml
        # The pruned (and fine-tuned) checkpoint records the data and size it was pruned on, as train's does, so
        # that val and predict default to them: an ultralytics .pt carries no data, and data.path may be other data.
        module.hparams.update(data=str(data.resolve()), imgsz=imgsz)
        trainer_settings = trainer_arguments(config.trainer)  # once: it logs what precision=auto became
        accumulate = trainer_settings.pop("accumulate_grad_batches", None)
        trainer = make_trainer(trainer_settings, logger=False, enable_checkpointing=False, default_root_dir=run_dir)
        if finetune_epochs:  # the fine-tune's Trainer has these settings, so this world size too
            accumulate = prepare_finetune(module, optimization(config.optim, datamodule.batch_size, accumulate,
                                                               processes=trainer.world_size))
        if resume is None:
            dense = module.inference_model
            # Chosen before the dense model is evaluated: a flops_target it cannot meet is named at once.
            with named_settings("prune", arguments):
                stored = _stored_choice(Path(str(config.ckpt)), dense, arguments)
                plan = stored or plan_pruning(dense, imgsz=imgsz, **arguments)
    if resume is None:
        settings = {**arguments, "fold_removed": bool(config.prune.fold_removed), "finetune_epochs": finetune_epochs,
                    # a targeted sparse run's own choice (the channels it drove to zero), or a plan made here
                    "plan": "the checkpoint's targeted choice" if stored is not None else "plan_pruning"}
        record, pictures = _prune(trainer, module, datamodule, imgsz, plan, settings, run_dir)
    else:
        log.info("resuming the fine-tune of %s from %s", run_dir, resume)
        record, pictures = PruneRecord(), {}  # the fit restores the record from the checkpoint
    checkpoint = run_dir / "checkpoints" / "pruned.ckpt"
    if finetune_epochs:
        trainer, checkpoint = _finetune({**trainer_settings, "accumulate_grad_batches": accumulate}, module,
                                        datamodule, finetune_epochs, run_dir, pictures, record, resume)
        record.stages["finetuned"] = stage_metrics(trainer, module, datamodule, imgsz)
        if trainer.is_global_zero:
            record.stages["finetuned"]["latency_ms"] = round(cpu_latency_ms(module.inference_model, imgsz), 3)
    if not trainer.is_global_zero:
        return
    record.predictions(datamodule).write(run_dir, module.inference_model, final_title=(
        f"pruned + fine-tuned ({finetune_epochs} epochs)" if finetune_epochs else "pruned"))
    write_summary(run_dir, model=str(config.ckpt), imgsz=imgsz, data=str(data), stages=record.stages,
                  checkpoint=str(checkpoint), prune=record.settings)
    before, after = record.stages["train"], record.stages["pruned"]
    print(f"pruned {after['removed_channels']}/{after['total_channels']} channels: params {before['params']:,} -> "
          f"{after['params']:,}, GFLOPs {before['gflops']:.3f} -> {after['gflops']:.3f}, "
          f"mAP50 {before['map50']:.4f} -> {after['map50']:.4f}, mAP {before['map']:.4f} -> {after['map']:.4f}\n"
          f"checkpoint: {checkpoint}")


def _prune(trainer: L.Trainer, module: YOLOv5Module, datamodule: YOLODataModule, imgsz: int, plan: PruningPlan,
           settings: dict, run_dir: Path) -> tuple[PruneRecord, dict[str, Path]]:
    """Evaluate the dense network, compact it by ``plan``, evaluate the pruned one and save it (``pruned.ckpt``)
    with the charts; returns what was measured (the record the fine-tune's checkpoints keep) and the charts."""
    dense = module.inference_model
    before = stage_metrics(trainer, module, datamodule, imgsz)
    # On several devices every rank holds the same plan and network (the same weights, the same
    # rules); one draws and writes the files and times the CPU latency (ranks timing at once would slow each other).
    writer = trainer.is_global_zero
    pictures_of_predictions = PredictionPictures()
    if writer:
        pictures_of_predictions.capture_dense(None, dense, datamodule)
    figures = separation(dense, plan).to_dict()  # as SlimCallback's pruned stage: how much the prune cut
    small = compact(dense, plan, fold_removed=settings["fold_removed"])
    small.requires_grad_(True)  # pruned from the EMA, whose copy is frozen (averaged, not trained): trained now
    log.info("pruned %d of %d channels (threshold %.4g)", plan.removed_channels, plan.total_channels, plan.threshold)
    module.set_network(small)  # compact() recorded the plan in the network's pruning_history
    after = {**stage_metrics(trainer, module, datamodule, imgsz), **figures,
             "removed_channels": plan.removed_channels, "total_channels": plan.total_channels}
    trainer.save_checkpoint(run_dir / "checkpoints" / "pruned.ckpt", weights_only=False)  # without Lightning's notice
    pictures: dict[str, Path] = {}
    if writer:
        from yolo_slim.slim.plots import write_prune_artifacts  # matplotlib: imported when used

        pictures = write_prune_artifacts(run_dir, dense, small, imgsz, histogram_title="|gamma| of the checkpoint, "
                                         f"before pruning (threshold {plan.threshold:.3g})")
        before["latency_ms"] = round(cpu_latency_ms(dense, imgsz), 3)
        after["latency_ms"] = round(cpu_latency_ms(small, imgsz), 3)
    return PruneRecord({"train": before, "pruned": after}, settings, pictures_of_predictions.state()), pictures


class PruneRecord(Callback):
    """What a prune measured before its fine-tune (the stages ``train`` and ``pruned``, its settings, the dense
    network's detections on the picture's images), kept in the fine-tune's checkpoints: a fine-tune resumed
    after a kill has no dense network any more, and still writes the whole summary and picture."""

    def __init__(self, stages: dict[str, dict] | None = None, settings: dict | None = None,
                 dense_predictions: list[torch.Tensor] | None = None) -> None:
        self.stages = dict(stages or {})
        self.settings = dict(settings or {})
        self.dense_predictions = list(dense_predictions or [])

    def state_dict(self) -> dict[str, Any]:
        # Without the fine-tune's stage: a resumed fit measures it again.
        return {"stages": {name: self.stages[name] for name in ("train", "pruned") if name in self.stages},
                "settings": self.settings, "dense_predictions": self.dense_predictions}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stages = dict(state_dict["stages"])
        self.settings = dict(state_dict["settings"])
        self.dense_predictions = list(state_dict["dense_predictions"])

    def predictions(self, datamodule: YOLODataModule) -> PredictionPictures:
        """The dense | final picture, its dense half from the record, over the validation images again."""
        pictures = PredictionPictures()
        pictures.restore(self.dense_predictions, datamodule)
        return pictures


def prepare_finetune(module: YOLOv5Module, optim: Optimization) -> int:
    """Give the loaded module the fine-tune's recipe (before the pruned network, and its EMA, are installed);
    returns the batches per optimizer step.

    A checkpoint keeps neither its optimizer's factories nor its accumulation; without these the
    fine-tune would run torch's defaults one batch per step, four times the weight decay per epoch of
    a 16-image batch trained as YOLOv5 trains. (The size, which the loss's objectness gain scales with,
    is already the one the prune runs at: ``run`` sets ``hparams.imgsz`` before the network is installed.)
    """
    module.optimizer_factory, module.scheduler_factory = optim.optimizer, optim.scheduler
    module.hparams.update(weight_decay=optim.weight_decay, ema_decay=optim.ema_decay, ema_ramp=optim.ema_ramp)
    return optim.accumulate


def _stored_choice(checkpoint: Path, network: YOLOv5, arguments: dict) -> PruningPlan | None:
    """A targeted sparse run's own choice, when this prune asks for the ratio and rules it was trained for."""
    if checkpoint.suffix != ".ckpt" or arguments.get("ratio") is None:
        return None
    # The module already read the weights; mmap leaves them on disk while the callback state is read.
    content = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    plan = targeted_choice_in(content, arguments["ratio"], arguments["policy"], arguments["round_to"],
                              arguments["min_channels"], arguments["aggregate"])
    if plan is None or not plan.fits(trace_channels(network.spec, arguments["policy"])):
        return None
    log.info("pruning the channels the targeted run drove to zero (its stored choice for ratio %s)", arguments["ratio"])
    return plan


def _finetune(trainer_settings: dict, module: YOLOv5Module, datamodule: YOLODataModule, epochs: int,
              run_dir: Path, pictures: dict[str, Path], record: PruneRecord,
              resume: str | None) -> tuple[L.Trainer, Path]:
    """Fine-tune the pruned module for ``epochs`` (its optimizer and schedule rebuilt for the small network), or
    continue the fine-tune ``resume`` saved; returns its Trainer and checkpoint. The fine-tune's TensorBoard log
    also gets the prune's charts."""
    # Rewritten at each epoch's end, atomically, as train's last.ckpt: what `prune resume=` continues from.
    checkpoints = RunFolderCheckpoint(dirpath=run_dir / FINETUNED.parent, filename=FINETUNED.stem, monitor=None,
                                      save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    trainer = make_trainer(trainer_settings, max_epochs=epochs, default_root_dir=run_dir,
                           logger=tensorboard_logger(run_dir, resume), callbacks=[checkpoints, record],
                           plugins=[AtomicCheckpointIO()])
    if trainer.is_global_zero and pictures:
        log_images(trainer, pictures, step=0)
    with stopped_by_signal(trainer, lambda: _continue_hint(run_dir)):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    return trainer, Path(checkpoints.best_model_path or run_dir / FINETUNED)  # monitor=None: the latest


def _continue_hint(run_dir: Path) -> str:
    """How to go on with a fine-tune stopped before its end."""
    pruned = run_dir / "checkpoints" / "pruned.ckpt"
    return continue_hint(run_dir, "prune", nothing_saved=f"the pruned network is saved ({pruned}): fine-tune it "
                         f"with `python -m yolo_slim train model.weights={pruned} data.path=...`, or run this prune "
                         f"again")
