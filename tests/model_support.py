"""Models with non-trivial BatchNorm statistics, shared by the pruning and export tests."""

import torch

from yolo_slim.models import YOLOv5


def randomize_norms(model: YOLOv5, seed: int = 0) -> YOLOv5:
    """Random γ, β and running statistics, so that pruning and parity checks see real values."""
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
