"""Turn Hydra config nodes into typed arguments, failing early with messages that name the setting."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from yolo_slim.data import AugmentConfig, YOLODataModule
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.models import YOLOv5, load_pretrained, shipped_configs
from yolo_slim.models.checkpoint import CHECKPOINT_KEY, network_from_checkpoint, read_checkpoint
from yolo_slim.models.postprocess import NMSConfig

log = logging.getLogger(__name__)

LARGEST_STRIDE = 32


def require_imgsz(value: Any, setting: str) -> int:
    """A positive int multiple of 32 (the largest stride of every shipped layout)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % LARGEST_STRIDE:
        raise ValueError(f"{setting} must be a positive multiple of {LARGEST_STRIDE}, found {value!r}")
    return value


def build_model(model_config: DictConfig, nc: int | None = None,
                names: list[str] | None = None) -> YOLOv5:
    """A YOLOv5 from ``model.cfg`` (a shipped name or a yaml path), or from ``model.weights``.

    ``model.weights`` (an ultralytics ``.pt`` or a yolo_slim ``.ckpt``) brings its own architecture;
    with a different ``nc`` everything but the Detect output convs is kept.

    Raises:
        ValueError: ``model.cfg`` names no shipped config or file, or ``model.weights`` is missing.
    """
    cfg = model_config.get("cfg")
    weights = model_config.get("weights")
    nc = nc if nc is not None else model_config.get("nc")
    if weights is not None:
        if not Path(weights).is_file():
            raise ValueError(f"model.weights={weights!r} does not exist; give the path of an ultralytics .pt "
                             f"or a yolo_slim .ckpt")
        return load_pretrained(weights, nc=nc, names=names)
    if cfg is None or (str(cfg) not in shipped_configs() and not Path(str(cfg)).is_file()
                       and Path(str(cfg)).stem not in shipped_configs()):
        raise ValueError(f"model.cfg={cfg!r} is neither a model yaml file nor a shipped config; "
                         f"shipped: {', '.join(shipped_configs())}")
    return YOLOv5(str(cfg), nc=nc, names=names)


def require_positive_int(value: Any, setting: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{setting} must be an int >= {minimum}, found {value!r}")
    return value


# trainer.precision=auto: what ultralytics' train.py does by default, mixed precision on a CUDA GPU
# (tensor cores: about twice the fp32 speed) and full precision elsewhere (CPU AMP is slower here).
AUTO_PRECISION = "auto"
CUDA_PRECISION = "16-mixed"
OTHER_PRECISION = "32-true"


def trainer_arguments(trainer_config: DictConfig) -> dict[str, Any]:
    """The ``trainer`` node as ``lightning.Trainer`` keywords, ``precision: auto`` resolved for the device.

    ``auto`` becomes ``16-mixed`` when the trainer will run on CUDA (``accelerator`` cuda, or gpu/auto
    with a CUDA device present) and ``32-true`` otherwise; any other value goes to Lightning as given
    (which names its allowed values when it refuses one).
    """
    arguments = plain(trainer_config)
    if arguments.get("precision") == AUTO_PRECISION:
        arguments["precision"] = CUDA_PRECISION if _runs_on_cuda(arguments.get("accelerator", "auto")) \
            else OTHER_PRECISION
        log.info("trainer.precision=%s: %s", AUTO_PRECISION, arguments["precision"])  # what the run used
    return arguments


def _runs_on_cuda(accelerator: Any) -> bool:
    # Lightning's "auto" and "gpu" pick CUDA whenever it is there (before MPS).
    name = str(accelerator).lower()
    return name == "cuda" or (name in ("gpu", "auto") and torch.cuda.is_available())


def plain(node: Any) -> Any:
    """A config node as plain Python containers (what library code receives)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def load_checkpoint_module(checkpoint: Path, nms: NMSConfig) -> YOLOv5Module:
    """A yolo_slim Lightning checkpoint as is; an ultralytics .pt wrapped in a fresh module.

    Raises:
        ValueError: ``ckpt`` names no file.
    """
    if not checkpoint.is_file():
        raise ValueError(f"ckpt={str(checkpoint)!r} does not exist; give a checkpoint written by `train` "
                         f"(e.g. outputs/train/<run>/checkpoints/best.ckpt) or an ultralytics .pt")
    # Through the safe reader first, whatever the suffix: a corrupt, foreign or hostile file is refused
    # with its name before Lightning's own (unrestricted) unpickling sees it.
    content = read_checkpoint(checkpoint)
    if isinstance(content, Mapping) and CHECKPOINT_KEY in content:
        return YOLOv5Module.load_from_checkpoint(checkpoint, map_location="cpu", nms=nms)
    network = network_from_checkpoint(content, checkpoint)
    return YOLOv5Module(network.train(), names=network.names, nms=nms, data=None)


def checkpoint_datamodule(data_config: DictConfig, module: YOLOv5Module,
                          augment: AugmentConfig | None) -> tuple[YOLODataModule, int]:
    """The data to evaluate a checkpoint on: ``data.path``/``data.imgsz``, else what it was trained with.

    Raises:
        ValueError: no data location at all, or data whose class count differs from the model's.
    """
    data = data_config.path if data_config.path is not None else module.hparams.data
    if data is None:
        raise ValueError("the checkpoint carries no data location (an ultralytics .pt?): give data.path")
    imgsz = require_imgsz(data_config.imgsz if data_config.imgsz is not None else module.hparams.imgsz,
                          "data.imgsz")
    datamodule = YOLODataModule(data=data, imgsz=imgsz,
                                batch_size=require_positive_int(data_config.batch_size, "data.batch_size"),
                                workers=require_positive_int(data_config.workers, "data.workers", minimum=0),
                                augment=augment, cache_dir=data_config.cache_dir)
    if datamodule.nc != module.model.nc:
        raise ValueError(f"data {data} has {datamodule.nc} classes but the checkpoint's model has {module.model.nc}")
    return datamodule, imgsz
