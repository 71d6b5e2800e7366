"""``python -m yolo_slim train [overrides]``: YOLOv5 training with Lightning, configured by Hydra.

Every setting is turned into a typed argument and checked before the Trainer starts, so a bad
config fails in the first second with a message that names it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from yolo_slim.cli.errors import stopped_by_signal, users_input
from yolo_slim.cli.resume import continue_hint, starting_point
from yolo_slim.cli.settings import (build_model, make_trainer, named_settings, optimization, plain, require_bool,
                                    require_imgsz, require_positive_int, require_seed, require_stride_multiple,
                                    tensorboard_logger, trainer_arguments, typed_overrides)
from yolo_slim.cli.summary import stage_metrics, write_summary
from yolo_slim.data import AugmentConfig, YOLODataModule
from yolo_slim.data.synthetic import SyntheticConfig
from yolo_slim.lit.autoanchor import AutoAnchor
from yolo_slim.lit.checkpoint_io import AtomicCheckpointIO, RunFolderCheckpoint
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.lit.slim_callback import SlimCallback
from yolo_slim.lit.speed import TrainingSpeed
from yolo_slim.models import YOLOv5, load_yolov5
from yolo_slim.models.anchors import are_placeholders
from yolo_slim.models.info import cpu_latency_ms
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.models.spec import DEFAULT_IMGSZ

log = logging.getLogger(__name__)
ConfigT = TypeVar("ConfigT")


@dataclass
class TrainingJob:
    """Everything a training run is made of, built and checked from the config."""

    trainer: L.Trainer
    module: YOLOv5Module
    datamodule: YOLODataModule
    run_dir: Path
    imgsz: int
    model_name: str


def build_datamodule(data_config: DictConfig) -> tuple[YOLODataModule, int]:
    """The datamodule and the image size (``data.imgsz``, or its default for the data source)."""
    synthetic = _data_config(SyntheticConfig, data_config.synthetic, "data.synthetic")
    imgsz = data_config.imgsz
    if imgsz is None:
        imgsz = synthetic.image_size if data_config.path is None else DEFAULT_IMGSZ
    imgsz = require_imgsz(imgsz, "data.imgsz")
    datamodule = YOLODataModule(
        data=data_config.path, imgsz=imgsz,
        batch_size=require_positive_int(data_config.batch_size, "data.batch_size"),
        workers=require_positive_int(data_config.workers, "data.workers", minimum=0),
        augment=_data_config(AugmentConfig, data_config.augment, "data.augment"), synthetic=synthetic,
        cache_dir=data_config.cache_dir,
        cache=data_config.cache)
    return datamodule, imgsz


def _data_config(kind: type[ConfigT], node: DictConfig, setting: str) -> ConfigT:
    """``kind(**node)``, its errors naming the setting as written on the command line (``data.augment.mosaic``)
    rather than the library's field (``AugmentConfig.mosaic``)."""
    try:
        return kind(**plain(node))
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace(f"{kind.__name__}.", f"{setting}.")) from error


def build_job(config: DictConfig, run_dir: Path, resume: str | None = None) -> TrainingJob:
    """Turn the composed config into a ready-to-fit Trainer, module and datamodule (``resume``: the checkpoint
    the fit will continue from, if any)."""
    datamodule, imgsz = build_datamodule(config.data)
    names = datamodule.names  # reads data.yaml now: a bad one fails here, before any model is built
    model = _network(config.model, names, resume)
    require_stride_multiple(imgsz, model, "data.imgsz")  # 64 for the P6 layouts, 128 for P7
    trainer_args = trainer_arguments(config.trainer)
    # Lightning reads -1 as "no end" and null as 1000 epochs; the LR schedule, the EMA ramp and a prune's
    # epoch are all laid out over a known number of epochs.
    require_positive_int(trainer_args.get("max_epochs"), "trainer.max_epochs", minimum=0)
    accumulate = trainer_args.pop("accumulate_grad_batches")
    best = RunFolderCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/map", mode="max",
                               save_last=False, auto_insert_metric_name=False)
    # last.ckpt from a checkpoint callback of its own, every epoch: Lightning's save_last=True writes it
    # only when the monitored checkpoint is saved too, so a run whose mAP stalls would resume from an old
    # epoch. Listed after `best`, which stays trainer.checkpoint_callback. Both keep their record when the run
    # folder is moved (RunFolderCheckpoint).
    last = RunFolderCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                               every_n_epochs=1, enable_version_counter=False)
    callbacks: list[L.Callback] = [best, last, LearningRateMonitor(logging_interval="step"), TrainingSpeed()]
    if require_bool(config.model.get("autoanchor", True), "model.autoanchor"):
        callbacks.append(AutoAnchor(seed=require_seed(config.seed)))
    elif are_placeholders(model.anchors_px().cpu().numpy()):
        raise ValueError("model.autoanchor=false, but the model yaml gives a count of anchors, not their sizes: "
                         "set model.autoanchor=true to fit them to the data, or give sizes in the yaml")
    if config.get("prune") is not None:
        one = typed_overrides("prune.epoch")
        # prune.epoch always has a value (its default 20): only a typed one clashes with a list of epochs.
        if one and config.prune.epochs is not None:
            raise ValueError(f"give prune.epoch (one prune) or prune.epochs (a list of them), not both (found "
                             f"{one[0]} and prune.epochs={plain(config.prune.epochs)})")
        slim = build_slim_callback(config.prune, imgsz)
        late = slim.late_prunes(trainer_args.get("max_epochs"))
        if late:  # SlimCallback would say so too, but only once the fit has started
            setting, found = ("prune.epoch", late[0]) if config.prune.epochs is None else ("prune.epochs", late)
            raise ValueError(f"{setting} must be < trainer.max_epochs={trainer_args['max_epochs']} (a prune happens "
                             f"at the start of its epoch, and fine-tuning needs the epochs after it), found {found}")
        callbacks.append(slim)
    trainer = make_trainer(trainer_args, default_root_dir=run_dir,
                           logger=tensorboard_logger(run_dir, resume), callbacks=callbacks,
                           plugins=[AtomicCheckpointIO()])
    # The accumulation counts the images of all processes, known once the Trainer has resolved its devices.
    optim = optimization(config.optim, datamodule.batch_size, accumulate, processes=trainer.world_size)
    trainer.accumulate_grad_batches = optim.accumulate
    module = YOLOv5Module(
        model, names=names, imgsz=imgsz, optimizer=optim.optimizer, scheduler=optim.scheduler,
        weight_decay=optim.weight_decay, loss=plain(config.loss),  # the module turns the dict into a LossConfig
        nms=NMSConfig(**plain(config.nms)), ema_decay=optim.ema_decay, ema_ramp=optim.ema_ramp,
        data=str(datamodule.data_yaml.resolve()))  # absolute: prune/val run from other folders
    model_name = str(config.model.weights or config.model.cfg)
    return TrainingJob(trainer=trainer, module=module, datamodule=datamodule, run_dir=run_dir, imgsz=imgsz,
                       model_name=model_name)


def _network(model_config: DictConfig, names: list[str], resume: str | None) -> YOLOv5:
    asked_nc = model_config.get("nc")
    if asked_nc is not None and require_positive_int(asked_nc, "model.nc", minimum=1) != len(names):
        # train always takes the class count from the data, whose labels it trains on; a different one was a slip.
        raise ValueError(f"model.nc={asked_nc}, but the data has {len(names)} classes: train takes the count from "
                         f"the data; leave model.nc unset")
    weights, cfg = model_config.get("weights"), model_config.get("cfg")
    if weights is not None:
        gone = ("model.weights", weights) if not Path(str(weights)).is_file() else None
    else:  # a shipped name (model=yolov5s) is no file, and is never gone
        gone = ("model.cfg", cfg) if cfg is not None and Path(str(cfg)).suffix in (".yaml", ".yml") \
            and not Path(str(cfg)).is_file() else None
    if resume is not None and gone is not None:
        # The fit restores every weight from the checkpoint it resumes, whose architecture this is too: the file
        # the run started from is not needed any more.
        log.warning("%s=%s does not exist any more; the network is built from %s, which is resumed", *gone, resume)
        return load_yolov5(resume)
    return build_model(model_config, nc=len(names), names=names)


def build_slim_callback(prune: DictConfig, imgsz: int) -> SlimCallback:
    """The ``+prune=sparse`` group as a SlimCallback: its settings are the callback's arguments (the schema in
    cli/schemas.py is read off its signature), ``epoch``/``epochs`` its ``prune_epochs``."""
    settings = plain(prune)
    epoch, epochs = settings.pop("epoch"), settings.pop("epochs")
    with named_settings("prune", settings):
        return SlimCallback(**settings, prune_epochs=epoch if epochs is None else epochs, imgsz=imgsz)


def run(config: DictConfig) -> None:
    with users_input():
        # verbose=False: its notice would precede an error line
        L.seed_everything(require_seed(config.seed), workers=True, verbose=False)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        resume, done = starting_point(config, run_dir, "train", "trainer.max_epochs",
                                      longer="to train it longer, start a new run from it (train "
                                      "model.weights={checkpoint} ...)")
        if done:  # a requeued job whose run had finished
            return
        job = build_job(config, run_dir, resume)
    if resume is not None:
        log.info("resuming %s from %s", run_dir, resume)
    with stopped_by_signal(job.trainer, lambda: continue_hint(
            run_dir, "train", nothing_saved="no epoch had finished, so nothing was saved: run the command again")):
        job.trainer.fit(job.module, datamodule=job.datamodule, ckpt_path=resume)
    slim = next((c for c in job.trainer.callbacks if isinstance(c, SlimCallback)), None)
    if slim is None:
        best = job.trainer.checkpoint_callback.best_model_path or None
        stages = {"train": stage_metrics(job.trainer, job.module, job.datamodule, job.imgsz, ckpt_path=best)}
    else:
        # The result is the last model, which the stages measure. best.ckpt ranks only the epochs after
        # the last prune (SlimCallback starts the monitors over); in sparse training only
        # (prune.epochs=[]) it may predate most of the sparsity.
        best = str(run_dir / "checkpoints" / "last.ckpt")
        final = stage_metrics(job.trainer, job.module, job.datamodule, job.imgsz)
        if job.trainer.is_global_zero:  # one process times it, as SlimCallback's stages: the others would compete
            final["latency_ms"] = round(cpu_latency_ms(job.module.inference_model, job.imgsz), 3)
        stages = {**slim.stages, "finetuned": final} if slim.prune_epochs else {"train": final}
    if job.trainer.is_global_zero:
        path = write_summary(run_dir, model=job.model_name, imgsz=job.imgsz, data=job.module.hparams.data,
                             stages=stages, checkpoint=best, prune=slim.describe() if slim is not None else None)
        log.info("summary: %s", path)
