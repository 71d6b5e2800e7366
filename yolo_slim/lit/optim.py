"""Parameter groups as YOLOv5 builds them, for optimizer factories that take param groups."""

from __future__ import annotations

from typing import Any

from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Three groups: biases, conv/linear weights (with weight decay), BatchNorm weights (without).

    Weight decay on BatchNorm γ would pull every channel's scale towards zero, which is the
    sparsity penalty's job (and only for the layers it chooses); on biases it only hurts. The
    ``name`` key lets the LR schedule treat the bias group's warm-up differently.

    Args:
        model: The network; only parameters with ``requires_grad`` are grouped.
        weight_decay: L2 strength for the conv weights.
    """
    biases, weights, norm_weights = [], [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            if name == "bias":
                biases.append(parameter)
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                norm_weights.append(parameter)
            else:
                weights.append(parameter)
    return [
        {"params": biases, "weight_decay": 0.0, "name": "bias"},
        {"params": weights, "weight_decay": weight_decay, "name": "weight"},
        {"params": norm_weights, "weight_decay": 0.0, "name": "norm_weight"},
    ]
