"""Inference copies of a YOLOv5 with every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution
with rescaled weights and a bias. Folding it removes a full read and write of every feature map
(``benchmarks/latency.py`` compares the eager and the folded model), which is what ultralytics'
``model.fuse()`` and onnxruntime's graph optimizer do before inference too. The copy
is for inference only: with the BatchNorms gone there is no γ left to rank, so the slimming
functions refuse it (prune first, fuse after).
"""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from yolo_slim.models.blocks import Conv

ModuleType = TypeVar("ModuleType", bound=nn.Module)


def fuse_batchnorm(model: ModuleType) -> ModuleType:
    """A new eval-mode copy of ``model`` (a YOLOv5, or any module holding yolo_slim Conv units) whose
    Conv units have the BatchNorm folded in; ``model`` is untouched."""
    fused = copy.deepcopy(model).eval()
    for unit in fused.modules():
        if isinstance(unit, Conv) and isinstance(unit.bn, _BatchNorm):
            unit.conv = fuse_conv_bn_eval(unit.conv, unit.bn)
            unit.bn = nn.Identity()
    return fused


def is_fused(model: nn.Module) -> bool:
    """Whether some Conv unit of ``model`` has had its BatchNorm folded away by :func:`fuse_batchnorm`."""
    return any(isinstance(unit, Conv) and isinstance(unit.bn, nn.Identity) for unit in model.modules())


def require_unfused(model: nn.Module, action: str) -> None:
    """Raise a ValueError naming ``action`` when ``model`` has no BatchNorms left to work on."""
    if is_fused(model):
        raise ValueError(f"{action} needs the model's BatchNorm layers, but this model was fused for inference "
                         f"(fuse_batchnorm folds them into the convolutions); {action.split()[0]} the unfused model "
                         f"and fuse the result")
