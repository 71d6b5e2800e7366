"""Networks with realistic BatchNorm values, for the tests and the benchmarks.

A freshly built YOLOv5 has every γ = 1 and zero running statistics, so a pruning plan on it has nothing
to rank and a parity check compares trivial outputs; :func:`randomize_norms` gives it seeded values.
"""

from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from yolo_slim.models.yolo import YOLOv5


def randomize_norms(model: YOLOv5, seed: int = 0) -> YOLOv5:
    """Draw every BatchNorm's γ (uniform in [0.01, 1.01)), β and running statistics from a generator seeded
    with ``seed``; returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):  # SyncBatchNorm too
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.01)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
    return model.eval()
