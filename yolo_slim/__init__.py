"""yolo_slim: network slimming for YOLOv5 (BatchNorm-scale sparsity, channel pruning, fine-tuning).

Importing the package has no side effects and loads nothing heavy: each name below loads its module
(and torch, or Lightning) on first use (``yolo_slim.YOLOv5Module``), so graph-only users do not pay
for Lightning's import, and ``python -m yolo_slim`` reports a bad setting before torch loads.
"""

from importlib import import_module
from typing import Any

__all__ = ["ModelSpec", "SlimCallback", "YOLODataModule", "YOLOv5", "YOLOv5Module", "load_yolov5"]
__version__ = "0.1.0"

_LAZY = {"ModelSpec": "yolo_slim.models", "YOLOv5": "yolo_slim.models", "load_yolov5": "yolo_slim.models",
         "YOLOv5Module": "yolo_slim.lit.module", "YOLODataModule": "yolo_slim.data.datamodule",
         "SlimCallback": "yolo_slim.lit.slim_callback"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolo_slim' has no attribute {name!r}")
