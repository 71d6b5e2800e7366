"""A factory of models with non-trivial BatchNorm statistics, so pruning tests exercise real values."""

import pytest
import torch

from yolo_slim.models import YOLOv5
from yolo_slim.models.testing import randomize_norms


@pytest.fixture()
def random_model():
    def make(name: str = "yolov5n", seed: int = 0, nc: int = 3) -> YOLOv5:
        torch.manual_seed(seed)
        return randomize_norms(YOLOv5(name, nc=nc), seed)

    return make
