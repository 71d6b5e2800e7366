"""Turn Hydra config nodes into typed arguments, failing early with messages that name the setting."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import math
import pickle
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from yolo_slim.data import AugmentConfig, YOLODataModule
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.models import CheckpointFormatError, YOLOv5, load_pretrained, shipped_configs
from yolo_slim.models.checkpoint import CHECKPOINT_KEY, network_from_checkpoint, read_checkpoint
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.models.spec import STRIDE_UNIT
from yolo_slim.predict import Detector, load_detector
from yolo_slim.predict.runtime import SUPPORTED

log = logging.getLogger(__name__)


def not_a_file(path: str | Path) -> str:
    """Why ``path`` is no file to read, for "ckpt=... {this}": missing, or a folder (a run folder: its best.ckpt
    is named)."""
    path = Path(path)
    if not path.is_dir():
        return "does not exist"
    best = path / "checkpoints" / "best.ckpt"
    return f"is a folder (did you mean {str(best)!r}?)" if best.is_file() else "is a folder, not a file"


@contextlib.contextmanager
def named_settings(section: str, names: Iterable[str]) -> Iterator[None]:
    """Name a library argument's error by the setting it came from: ``ratio must be in [0, 1)``, raised by
    ``plan_pruning`` or ``SlimCallback``, which know nothing of the CLI, becomes ``prune.ratio must be ...``."""
    names = set(names)
    try:
        yield
    except ValueError as error:
        first = re.match(r"\w+", str(error))
        if first is None or first.group(0) not in names:
            raise
        raise ValueError(f"{section}.{error}") from error


def typed_overrides(key: str) -> list[str]:
    """The command line's overrides of ``key`` (``model=yolov5s``, ``+prune.epoch=3``), as typed: in the composed
    config a default and a typed value look the same. Empty outside a Hydra run."""
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") == key]


def require_imgsz(value: Any, setting: str) -> int:
    """A positive int multiple of 32 (every layout's largest stride divides by it; P6/P7 need more, see below)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % STRIDE_UNIT:
        raise ValueError(f"{setting} must be a positive multiple of {STRIDE_UNIT}, found {value!r}")
    return value


def require_stride_multiple(imgsz: int, model: YOLOv5, setting: str) -> int:
    """``imgsz`` when the model's largest stride divides it (64 for the P6 layouts, 128 for P7)."""
    return require_multiple_of_stride(imgsz, int(model.stride.max()), setting)


def require_multiple_of_stride(imgsz: int, stride: int, setting: str) -> int:
    """``imgsz`` when ``stride`` (a model's largest) divides it."""
    if imgsz % stride:
        raise ValueError(f"{setting} must be a multiple of {stride} for this model (its largest stride), "
                         f"found {imgsz}; e.g. {max(round(imgsz / stride), 1) * stride}")
    return imgsz


def require_number(value: Any, setting: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` as a float, within ``[minimum, maximum]`` where given."""
    number = None if isinstance(value, bool) else _as_float(value)
    too_low = minimum is not None and number is not None and number < minimum
    too_high = maximum is not None and number is not None and number > maximum
    if number is None or too_low or too_high:
        bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
        if len(bounds) == 2:
            bounds = [f"in [{minimum}, {maximum}]"]
        raise ValueError(" ".join([f"{setting} must be a number", *bounds]) + f", found {value!r}")
    return number


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def require_bool(value: Any, setting: str) -> bool:
    """``value`` when it is true or false: a string such as ``no`` would otherwise count as true."""
    if not isinstance(value, bool):
        raise ValueError(f"{setting} must be true or false, found {value!r}")
    return value


@dataclass(frozen=True)
class Optimization:
    """The ``optim`` group, checked: what train's module and Trainer, and prune's fine-tune, are given."""

    optimizer: Callable[..., Optimizer]
    scheduler: Callable[..., LRScheduler]
    weight_decay: float  # already scaled for the batch size and the accumulation
    accumulate: int  # batches per optimizer step
    ema_decay: float
    ema_ramp: float


def optimization(optim: DictConfig, batch_size: int, accumulate: Any = None, processes: int = 1) -> Optimization:
    """The ``optim`` node for batches of ``batch_size`` on each of ``processes`` (the Trainer's world size);
    ``accumulate``: ``trainer.accumulate_grad_batches``.

    As YOLOv5 does, ``accumulate`` null sums the gradients of enough batches to make an optimizer step
    of ``optim.nominal_batch_size`` images, counted over all processes (YOLOv5's ``--batch-size`` is the
    total across its DDP ranks, ours is per process), and weight decay is scaled by the images per step
    over it.
    """
    nominal = require_positive_int(optim.nominal_batch_size, "optim.nominal_batch_size")
    images_per_batch = batch_size * processes
    if accumulate is None:
        accumulate = max(round(nominal / images_per_batch), 1)
    accumulate = require_positive_int(accumulate, "trainer.accumulate_grad_batches")
    images_per_step = images_per_batch * accumulate
    weight_decay = require_number(optim.weight_decay, "optim.weight_decay", minimum=0) * images_per_step / nominal
    optimizer, scheduler = _factories(optim)
    return Optimization(optimizer=optimizer, scheduler=scheduler, weight_decay=weight_decay, accumulate=accumulate,
                        ema_decay=_ema_decay(optim.ema_decay),
                        ema_ramp=require_number(optim.ema_ramp, "optim.ema_ramp", minimum=1))


def _ema_decay(value: object) -> float:
    decay = require_number(value, "optim.ema_decay", minimum=0)
    if decay >= 1:
        raise ValueError(f"optim.ema_decay must be in [0, 1) (0 disables the EMA), found {value!r}")
    return decay


def _factories(optim: DictConfig) -> tuple[Callable[..., Optimizer], Callable[..., LRScheduler]]:
    """``optim.optimizer`` and ``optim.scheduler`` as factories, tried once on a throwaway parameter.

    The module calls them only in ``configure_optimizers``, inside the fit: a bad value there
    (``optim.optimizer.lr=abc``, an unknown keyword, ``optim.scheduler.shape=cosin``) would surface
    as a traceback minutes later instead of a line naming the group now.
    """
    factories = []
    for group in ("optimizer", "scheduler"):
        try:
            factories.append(instantiate(optim[group]))
        except InstantiationException as error:
            raise ValueError(f"optim.{group} could not be made: {error}") from error
    for group in ("optimizer", "scheduler"):
        _require_default_kinds(group, optim[group])
    optimizer_factory, scheduler_factory = factories
    probe = [{"params": [torch.nn.Parameter(torch.zeros(1))], "name": "weight"}]
    try:
        optimizer = optimizer_factory(probe)
    except (TypeError, ValueError) as error:
        raise ValueError(f"optim.optimizer does not accept its settings {plain(optim.optimizer)}: {error}") from error
    try:
        scheduler_factory(optimizer, total_steps=2, steps_per_epoch=1, batches_per_step=1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"optim.scheduler does not accept its settings {plain(optim.scheduler)}: {error}") from error
    return optimizer_factory, scheduler_factory


def _require_default_kinds(group: str, node: DictConfig) -> None:
    """A keyword whose default is a number or a bool must be given one: torch's own check of ``lr=fast``
    (``if lr < 0.0``) would say only "'<' not supported between instances of 'str' and 'float'"."""
    from hydra.utils import get_object

    target = str(node["_target_"])
    parameters = inspect.signature(get_object(target)).parameters  # imported by instantiate already
    free = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    passed = {n: v for n, v in plain(node).items() if not n.startswith("_")}  # Hydra's _target_, _partial_
    unknown = [name for name in passed if name not in parameters]
    if unknown and not free:
        # The first parameter is what the factory is called with (the parameter groups, the optimizer).
        arguments = [n for n, p in list(parameters.items())[1:] if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        raise ValueError(f"optim.{group}.{unknown[0]} is not an argument of {target}; its arguments: "
                         f"{', '.join(arguments)}")
    for name, value in passed.items():
        default = parameters[name].default if name in parameters else None
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"optim.{group}.{name} must be true or false, found {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and \
                (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"optim.{group}.{name} must be a number, found {value!r}")


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
            raise ValueError(f"model.weights={weights!r} {not_a_file(weights)}; give the path of an ultralytics .pt "
                             f"or a yolo_slim .ckpt")
        return load_pretrained(weights, nc=nc, names=names)
    if cfg is None or (str(cfg) not in shipped_configs() and not Path(str(cfg)).is_file()
                       and Path(str(cfg)).stem not in shipped_configs()):
        raise ValueError(f"model.cfg={cfg!r} is neither a model yaml file nor a shipped config; "
                         f"shipped: {', '.join(shipped_configs())}")
    return YOLOv5(str(cfg), nc=nc, names=names)


MAX_SEED = 2**32 - 1  # the range Lightning's seed_everything and numpy accept


def require_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, {MAX_SEED}], found {value!r}")
    return value


def require_positive_int(value: Any, setting: str, minimum: int = 1, maximum: int | None = None) -> int:
    too_high = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_high:
        allowed = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{setting} must be an int {allowed}, found {value!r}")
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
    # Lightning reads these only once the fit runs (a str one is a TypeError deep inside it).
    for setting in ("log_every_n_steps", "num_nodes"):
        if arguments.get(setting) is not None:
            require_positive_int(arguments[setting], f"trainer.{setting}")
    if arguments.get("precision") == AUTO_PRECISION:
        arguments["precision"] = CUDA_PRECISION if _runs_on_cuda(arguments.get("accelerator", "auto")) \
            else OTHER_PRECISION
        log.info("trainer.precision=%s: %s", AUTO_PRECISION, arguments["precision"])  # what the run used
    return arguments


def tensorboard_logger(run_dir: Path, resume: str | None) -> TensorBoardLogger:
    """The run's TensorBoard log, ``run_dir/tensorboard`` (train's, and prune's fine-tune). A resumed fit logs
    again from its checkpoint's step, which the killed attempt had passed: ``purge_step`` (SummaryWriter's)
    hides that attempt's events from the step on, which TensorBoard would otherwise draw twice, one curve
    folding back over the other."""
    purge_step = None if resume is None else logged_step(read_checkpoint(resume))
    return TensorBoardLogger(save_dir=run_dir, name="tensorboard", version="", purge_step=purge_step)


def logged_step(checkpoint: dict) -> int:
    """The step Lightning's loggers had reached when ``checkpoint`` was saved: the fit loop's count of batches
    that stepped (what it passes to ``log_metrics``), else the optimizer steps (``global_step``)."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


def make_trainer(settings: dict[str, Any], **ours: Any) -> L.Trainer:
    """``lightning.Trainer(**settings, **ours)``, ``settings`` being the user's ``trainer.*``.

    Lightning checks its arguments as it goes, some with a TypeError or RuntimeError (``gradient_clip_val=abc``,
    ``benchmark=maybe``) or a ModuleNotFoundError (``accelerator=tpu`` without torch_xla) that would read as a
    bug: those, and a key that is no Trainer argument, become a ValueError naming the setting.
    """
    _quiet_lightning()
    accepted = inspect.signature(L.Trainer.__init__).parameters
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(accepted), n=1)
        hint = f"; did you mean trainer.{close[0]}?" if close else ""
        raise ValueError(f"trainer.{unknown[0]} is not an argument of lightning.Trainer{hint}")
    try:
        return L.Trainer(**settings, **ours)
    except (TypeError, RuntimeError) as error:
        raise ValueError(f"lightning.Trainer refused the trainer.* settings: {error}") from error
    except ModuleNotFoundError as error:  # an accelerator or strategy whose package is not installed (tpu: torch_xla)
        raise ValueError(f"the trainer.* settings need a package this environment lacks: {error}") from error


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines: said by every Trainer, even one
    with logger=False, they are about Lightning's cloud, not the run, and came before a one-line error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def _quiet_lightning() -> None:
    """Silence what Lightning says on every run that a user can do nothing about (idempotent)."""
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisement) for f in lightning_log.filters):
        lightning_log.addFilter(_NoAdvertisement())
    # torch 2.14 deprecates the LeafSpec that Lightning 2.6's own _pytree still builds, once per run.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")


def _runs_on_cuda(accelerator: Any) -> bool:
    # Lightning's "auto" and "gpu" pick CUDA whenever it is there (before MPS).
    name = str(accelerator).lower()
    return name == "cuda" or (name in ("gpu", "auto") and torch.cuda.is_available())


def plain(node: Any) -> Any:
    """A config node as plain Python containers (what library code receives)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def read_detector(path: Any, setting: str, imgsz: int) -> Detector:
    """The model ``setting=path`` names (a checkpoint or an export), ready for inference (``imgsz``: the side an
    export that does not say its own size is tried at).

    Raises:
        ValueError: no such file, or one that is not a model yolo_slim can read.
    """
    try:
        return load_detector(str(path), imgsz)
    except FileNotFoundError as error:
        raise ValueError(f"{setting}={str(path)!r} {not_a_file(path)}; give {SUPPORTED}") from error
    except (CheckpointFormatError, pickle.UnpicklingError) as error:
        raise ValueError(f"{setting}={str(path)!r} is not a model yolo_slim can read: {error}") from error


def load_checkpoint_module(checkpoint: Path, nms: NMSConfig) -> YOLOv5Module:
    """A yolo_slim Lightning checkpoint as is; an ultralytics .pt wrapped in a fresh module.

    Raises:
        ValueError: ``ckpt`` names no file.
    """
    if not checkpoint.is_file():
        raise ValueError(f"ckpt={str(checkpoint)!r} {not_a_file(checkpoint)}; give a checkpoint written by `train` "
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
    return evaluation_datamodule(data_config, augment, data=module.hparams.data, imgsz=module.hparams.imgsz,
                                 stride=int(module.model.stride.max()), names=module.model.names)


def evaluation_datamodule(data_config: DictConfig, augment: AugmentConfig | None, *, data: str | None, imgsz: int,
                          stride: int, names: list[str], source: str = "checkpoint") -> tuple[YOLODataModule, int]:
    """The data ``data.path``/``data.imgsz`` give, else ``data``/``imgsz`` (what the ``source`` was made with),
    checked against the model's largest ``stride`` and its class ``names`` ([]: unknown).

    Raises:
        ValueError: no data location at all, or data whose class count differs from the model's.
    """
    data = data_config.path if data_config.path is not None else data
    if data is None:
        hint = " (an ultralytics .pt?)" if source == "checkpoint" else ""
        raise ValueError(f"the {source} carries no data location{hint}: give data.path")
    imgsz = require_imgsz(data_config.imgsz if data_config.imgsz is not None else imgsz, "data.imgsz")
    datamodule = YOLODataModule(data=data, imgsz=imgsz,
                                batch_size=require_positive_int(data_config.batch_size, "data.batch_size"),
                                workers=require_positive_int(data_config.workers, "data.workers", minimum=0),
                                augment=augment, cache_dir=data_config.cache_dir)
    require_multiple_of_stride(imgsz, stride, "data.imgsz")
    if names and datamodule.nc != len(names):
        raise ValueError(f"data {data} has {datamodule.nc} classes but the {source}'s model has {len(names)}")
    if names and list(datamodule.names) != list(names):  # scored by class index: the same count may be other classes
        log.warning("data %s names its classes %s, the %s's model %s: they are scored by index", data,
                    _shown(datamodule.names), source, _shown(names))
    return datamodule, imgsz


def _shown(names: list[str]) -> str:
    return str(list(names[:6]))[:-1] + (", ...]" if len(names) > 6 else "]")
