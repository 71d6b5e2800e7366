"""Finding the YOLOv5 inside a LightningModule, and its entry in checkpoints (one writer, one reader).

A Lightning checkpoint of a yolo_slim network carries ``checkpoint["yolo_slim"]``: the
architecture as plain data (``spec``), the class names, the pruning plans that produced it
(``plans``, from the network's ``pruning_history``) and, for a user's own module, the attribute
path of the network (``model_attr``). :func:`store_network` is the only writer: both
``YOLOv5Module`` and ``SlimCallback`` call it, and it merges, so neither erases what the other wrote.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any

import lightning as L
from torch import nn
from torch.optim.swa_utils import AveragedModel

from yolo_slim.lit._lightning_internals import mirror_into_trainer_averages
from yolo_slim.models import YOLOv5
from yolo_slim.models.checkpoint import CHECKPOINT_KEY

log = logging.getLogger(__name__)


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


def unaveraged_copies(module: nn.Module, path: str) -> list[str]:
    """Where ``module`` holds a YOLOv5 of the same architecture as the one at ``path``, outside any
    ``AveragedModel``: a plain copy (an EMA kept by hand? a distillation teacher?) that a prune leaves as is."""
    network = module.get_submodule(path)
    averaged = [name for name, m in module.named_modules() if isinstance(m, AveragedModel)]
    return [name for name, m in module.named_modules()
            if isinstance(m, YOLOv5) and m is not network and m.spec == network.spec
            and not any(name.startswith(f"{a}.") for a in averaged)]


def weight_averages(module: nn.Module, network: YOLOv5) -> list[AveragedModel]:
    """The weight averages (EMA, SWA: torch's ``AveragedModel``) of ``network`` held by ``module``."""
    return [m for m in module.modules()
            if isinstance(m, AveragedModel) and isinstance(m.module, YOLOv5) and m.module.spec == network.spec]


def averaged_copies(module: nn.Module, network: YOLOv5) -> list[YOLOv5]:
    """The networks inside :func:`weight_averages`."""
    return [average.module for average in weight_averages(module, network)]


def store_network(checkpoint: dict[str, Any], network: YOLOv5, model_attr: str | None = None) -> None:
    """Write (merge) ``network``'s entry into a checkpoint being saved: spec, names, plans, model_attr."""
    entry = checkpoint.setdefault(CHECKPOINT_KEY, {})
    entry.update({"spec": network.spec.to_dict(), "names": list(network.names),
                  "plans": [dict(plan) for plan in network.pruning_history]})
    if model_attr is not None:
        entry["model_attr"] = model_attr


def restore_pruned_network(module: nn.Module, checkpoint: dict[str, Any], model_attr: str | None = None) -> None:
    """Rebuild a pruned YOLOv5 inside ``module`` before the checkpoint's weights load.

    Call it from your LightningModule's ``on_load_checkpoint(self, checkpoint)`` (the one line a
    module other than ``YOLOv5Module`` needs to resume a pruned run; ``YOLOv5Module`` calls it too). The
    module's weight averages of the network (torch's ``AveragedModel``) are rebuilt too, and so are those of
    Lightning's ``WeightAveraging`` and ``StochasticWeightAveraging`` callbacks, whose own loading runs after
    this one. A module with a ``set_network`` (``YOLOv5Module``) gets the rebuilt network through it, so
    that what it derives from the architecture (its EMA, its loss) is rebuilt as well.

    Args:
        module: The module the checkpoint is loaded into.
        checkpoint: The checkpoint, as ``on_load_checkpoint`` receives it.
        model_attr: Where the network is when the checkpoint does not say (as ``find_network``'s).
    """
    stored = checkpoint.get(CHECKPOINT_KEY)
    if not stored or "spec" not in stored:
        return
    path, network = find_network(module, stored.get("model_attr") or model_attr)
    rebuilt = YOLOv5.from_spec(stored["spec"], names=stored.get("names"), pruning_history=stored.get("plans", ()))
    if rebuilt.spec != network.spec:
        log.info("the checkpoint holds another architecture than %s.%s (a pruned one?): rebuilding it",
                 type(module).__name__, path)
        if hasattr(module, "set_network"):
            module.set_network(_like(rebuilt, network))
        else:
            for average in weight_averages(module, network):  # the load then fills in the averaged values
                average.module = _like(deepcopy(rebuilt), average.module)
            replace_submodule(module, path, _like(rebuilt, network))
        mirror_into_trainer_averages(attached_trainer(module), module)
    else:
        for copy in [network, *averaged_copies(module, network)]:
            copy.pruning_history = list(rebuilt.pruning_history)


def _like(network: YOLOv5, reference: nn.Module) -> YOLOv5:
    """``network`` on the device and in the dtype of ``reference``'s parameters."""
    parameter = next(reference.parameters())
    return network.to(parameter.device, parameter.dtype)


def replace_submodule(module: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted attribute ``path`` of ``module``."""
    parent_path, _, name = path.rpartition(".")
    setattr(module.get_submodule(parent_path) if parent_path else module, name, new)


def attached_trainer(module: nn.Module) -> L.Trainer | None:
    """The Trainer a LightningModule is attached to, or None (a plain module, or none attached)."""
    if not isinstance(module, L.LightningModule):
        return None
    try:
        return module.trainer
    except RuntimeError:  # LightningModule.trainer raises when no Trainer is attached
        return None
