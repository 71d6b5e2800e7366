"""Random BatchNorm scales and statistics for the benchmarks (imported by them as a sibling module).

A freshly built YOLOv5 has every γ = 1, so a plan on it has nothing to rank; the benchmarks draw γ
uniformly in [0.01, 1.01), as the slimming tests do, to give plans real work and realistic output.
"""

from __future__ import annotations

import torch

from yolo_slim.models import YOLOv5


def randomize_norms(model: YOLOv5, seed: int = 0) -> YOLOv5:
    """Draw every BatchNorm's γ, β and running statistics from a seeded generator; returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.01)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
    return model.eval()
