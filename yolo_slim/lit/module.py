"""``YOLOv5Module``: YOLOv5 training and validation as a LightningModule.

The hooks are thin: the loss, NMS, mAP, EMA and LR schedule live in plain-torch modules that are
tested without a Trainer. Everything stored in a checkpoint is plain data (the architecture as a
spec dict, settings as dicts), so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from yolo_slim.lit._lightning_internals import optimizer_steps_per_epoch, training_batches
from yolo_slim.lit.ema import make_ema, update_ema
from yolo_slim.lit.evaluation import MapValidation, images_as_float, make_map_metric
from yolo_slim.lit.network import restore_pruned_network, store_network
from yolo_slim.lit.optim import parameter_groups
from yolo_slim.lit.schedule import WarmupDecayLR
from yolo_slim.models import YOLOv5
from yolo_slim.models.loss import LossConfig, YOLOv5Loss
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.models.spec import DEFAULT_IMGSZ, STRIDE_UNIT

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[dict[str, Any]]], Optimizer]
SchedulerFactory = Callable[..., LRScheduler]

default_optimizer: OptimizerFactory = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.937, nesterov=True)
default_scheduler: SchedulerFactory = functools.partial(WarmupDecayLR)


class YOLOv5Module(MapValidation, L.LightningModule):
    """Trains a :class:`YOLOv5` with YOLOv5's recipe and validates it with COCO mAP.

    The recipe's Trainer side is the Trainer's: YOLOv5 makes each optimizer step of 64 images
    (``accumulate_grad_batches=max(round(64 / images_per_batch), 1)``, images counted over all processes),
    clips the gradient norm at 10 (``gradient_clip_val=10``), trains in ``16-mixed`` on a GPU, and passes
    ``weight_decay`` already scaled by the images per step over 64. ``python -m yolo_slim train`` sets all
    of these; with your own Trainer, set them as the README's example does.

    Args:
        model: The network, a spec dict (as stored in checkpoints) or a shipped config name.
        names: Class names (default: the model's).
        imgsz: Training image size (the objectness gain scales with it).
        optimizer: Factory ``f(param_groups) -> Optimizer``; default SGD(lr 0.01, momentum 0.937, Nesterov).
        scheduler: Factory ``f(optimizer, total_steps=, steps_per_epoch=, batches_per_step=) -> LRScheduler`` stepped
            every optimizer step; default :class:`WarmupDecayLR`.
        weight_decay: L2 on conv weights (not on biases or BatchNorm weights), used as given (YOLOv5: 5e-4 times
            the images per optimizer step over 64).
        loss: Loss gains before scaling for levels, classes and image size.
        nms: Post-processing for validation.
        ema_decay: Final decay of the weight EMA used for validation and checkpoints; 0 disables it.
        ema_ramp: Updates over which the EMA decay ramps up.
        data: Where the data came from (kept in the checkpoint so ``val`` can find it again).
    """

    def __init__(self, model: YOLOv5 | Mapping[str, Any] | str = "yolov5n", names: Sequence[str] | None = None,
                 imgsz: int = DEFAULT_IMGSZ, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None,
                 weight_decay: float = 5e-4, loss: LossConfig | Mapping[str, Any] | None = None,
                 nms: NMSConfig | Mapping[str, Any] | None = None, ema_decay: float = 0.9999,
                 ema_ramp: float = 2000.0, data: str | None = None) -> None:
        super().__init__()
        if isinstance(model, YOLOv5):
            network = model
        elif isinstance(model, Mapping):
            network = YOLOv5.from_spec(model, names=names)
        else:
            network = YOLOv5(model, names=names)
        if names is not None:
            network.names = [str(n) for n in names]
        if imgsz <= 0 or imgsz % STRIDE_UNIT:
            raise ValueError(f"imgsz must be a positive multiple of {STRIDE_UNIT}, found {imgsz}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, found {weight_decay}")
        self.loss_config = loss if isinstance(loss, LossConfig) else LossConfig(**_tuples(loss or {}))
        self.nms_config = nms if isinstance(nms, NMSConfig) else NMSConfig(**(nms or {}))
        self.optimizer_factory = optimizer or default_optimizer
        self.scheduler_factory = scheduler or default_scheduler
        self.save_hyperparameters(ignore=["model", "names", "optimizer", "scheduler", "loss", "nms"])
        self.hparams.update(model=network.spec.to_dict(), names=list(network.names),
                            loss=dataclasses.asdict(self.loss_config), nms=dataclasses.asdict(self.nms_config))
        self.val_map = make_map_metric(self.nms_config.max_det)
        self.set_network(network)

    # ------------------------------------------------------------------ the network
    def set_network(self, network: YOLOv5, ema_network: YOLOv5 | None = None, ema_updates: int = 0) -> None:
        """Install ``network``, its EMA and its loss: at start, and after pruning.

        Args:
            network: The network to train.
            ema_network: Weights the EMA continues from (a compacted EMA after pruning); default:
                a copy of ``network``.
            ema_updates: Updates the EMA had already made, so that its decay ramp continues.
        """
        self.model = network
        self.hparams["model"] = network.spec.to_dict()  # load_from_checkpoint then builds this architecture
        self.ema = None
        if self.hparams.ema_decay:
            self.ema = make_ema(ema_network if ema_network is not None else network, self.hparams.ema_decay,
                                self.hparams.ema_ramp)
            if ema_network is not None:
                self.ema.n_averaged.fill_(ema_updates)
        detect = network.detect
        scaled = self.loss_config.scaled(detect.nl, detect.nc, self.hparams.imgsz)
        self.criterion = YOLOv5Loss(detect.anchors, detect.nc, scaled)

    @torch.no_grad()
    def set_anchors(self, anchors_px: torch.Tensor) -> None:
        """New anchors (nl * na, 2) pixels for the network, its EMA and the loss (AutoAnchor's one entry point)."""
        self.model.set_anchors(anchors_px)
        if self.ema is not None:
            self.ema.module.set_anchors(anchors_px)
        self.criterion.anchors.copy_(self.model.detect.anchors.to(self.criterion.anchors.device))
        self.hparams["model"] = self.model.spec.to_dict()  # load_from_checkpoint builds the spec with them

    @property
    def names(self) -> list[str]:
        return self.model.names

    @property
    def pruning_plans(self) -> list[dict[str, Any]]:
        """Every plan applied to reach this architecture, oldest first (the network's ``pruning_history``)."""
        return self.model.pruning_history

    @property
    def inference_model(self) -> YOLOv5:
        """The weights validation and export use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.model(images)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images = images_as_float(batch["images"])
        loss, parts = self.criterion(self.model(images), batch["targets"])
        self.log_dict({"train/box": parts[0], "train/obj": parts[1], "train/cls": parts[2]},
                      prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        # Lightning divides the loss by accumulate_grad_batches and DDP averages the gradients of its
        # processes; YOLOv5 sums the gradients of every image of an optimizer step, on all its ranks (its
        # learning rate assumes a sum over the nominal batch of 64 images).
        return loss * self.trainer.accumulate_grad_batches * self.trainer.world_size

    def on_fit_start(self) -> None:
        size = getattr(getattr(self.trainer, "datamodule", None), "imgsz", None)
        if isinstance(size, int) and size != self.hparams.imgsz:
            log.warning("YOLOv5Module was made for imgsz=%d (its loss gains; SlimCallback's GFLOPs and latency), "
                        "but its datamodule gives %d-pixel images: make it with imgsz=%d", self.hparams.imgsz, size,
                        size)
        # The EMA copy is frozen in eval mode on purpose (it is only read: validation, checkpoints), and Lightning
        # warns at every fit's start that its ~270 modules are in eval mode. The warning is silenced only when
        # the EMA's are the only ones, so that it still speaks of a layer the user left in eval mode.
        in_eval = [name for name, module in self.named_modules() if not module.training]
        if in_eval and all(name == "ema" or name.startswith("ema.") for name in in_eval):
            warnings.filterwarnings("ignore", message=rf"Found {len(in_eval)} module\(s\) in eval mode at the start "
                                                      r"of training")

    def on_train_start(self) -> None:
        # After Lightning restored a resumed run's schedule: on other devices an epoch may take other steps.
        # A fit that max_steps ends is counted in steps (global_step), so its restored counts stay as they are.
        by_epochs, by_steps = _steps_left(self.trainer)
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, WarmupDecayLR) and by_epochs <= by_steps:
                config.scheduler.rescale(optimizer_steps_per_epoch(self.trainer))
        # And its optimizer: torch's load_state_dict restores every group's hyperparameters, so the weight
        # decay would stay scaled for the first run's images per step; hparams hold it scaled for this one's.
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if group.get("name") == "weight":
                    group["weight_decay"] = self.hparams.weight_decay

    def on_train_epoch_start(self) -> None:
        # Lightning keeps each submodule's own mode; a network installed from eval weights (a pruned
        # EMA in `prune`) must still train with batch statistics.
        self.model.train()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # once per real optimizer step, after gradient accumulation
            update_ema(self.ema, self.model)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        """Optimizer and per-step LR schedule, rebuilt from the factories whenever called (also after pruning).

        The schedule spans the optimizer steps the fit has left: all of them at the start, the rest
        when a prune rebuilds it mid-fit (``finetune_schedule="restart"``; with "continue" the old
        schedule's state replaces this one's).
        """
        optimizer = self.optimizer_factory(parameter_groups(self.model, self.hparams.weight_decay))
        trainer = self.trainer
        if math.isinf(trainer.estimated_stepping_batches):  # max_epochs=-1 and no max_steps: Lightning's "no end"
            raise ValueError("YOLOv5Module's LR schedule needs a fit of known length: give the Trainer max_epochs >= 0 "
                             f"or max_steps >= 0, found max_epochs={trainer.max_epochs}, max_steps={trainer.max_steps}")
        # (Reading estimated_stepping_batches above made Lightning size the training loader.) The schedule is laid
        # over this run's steps per epoch: derived from the estimate instead, a fit that max_steps ends would have
        # its epochs' length misread, and on_train_start would rescale it out of shape.
        total_steps = max(int(min(_steps_left(trainer))), 1)
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=optimizer_steps_per_epoch(trainer),
            # An epoch shorter than the accumulation ends in a step of its own (Lightning steps at the epoch's end).
            batches_per_step=min(trainer.accumulate_grad_batches, training_batches(trainer)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        store_network(checkpoint, self.model)  # merges with what a callback (SlimCallback) wrote

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the architecture stored in the checkpoint before its weights are loaded.

        A pruned run's checkpoint holds a smaller network than its hyperparameters describe.
        """
        restore_pruned_network(self, checkpoint, model_attr="model")


def _steps_left(trainer: L.Trainer) -> tuple[float, float]:
    """Optimizer steps the fit has left until max_epochs, at this run's steps per epoch, and until max_steps
    (inf where that bound is not set); the fit ends at the smaller.

    Not ``estimated_stepping_batches - global_step``: after a resume on other devices, global_step counts the
    first run's steps, so a prune's restarted schedule would be sized wrong.
    """
    by_epochs = (math.inf if trainer.max_epochs is None or trainer.max_epochs < 0
                 else optimizer_steps_per_epoch(trainer) * max(trainer.max_epochs - trainer.current_epoch, 0))
    by_steps = (math.inf if trainer.max_steps is None or trainer.max_steps < 0
                else max(trainer.max_steps - trainer.global_step, 0))
    return by_epochs, by_steps


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
