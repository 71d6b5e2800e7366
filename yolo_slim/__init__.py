"""yolo_slim: network slimming for YOLOv5 (BatchNorm-scale sparsity, channel pruning, fine-tuning).

Importing the package has no side effects beyond importing torch.
"""

from yolo_slim.models import ModelSpec, YOLOv5, load_yolov5

__all__ = ["ModelSpec", "YOLOv5", "load_yolov5"]
__version__ = "0.1.0"
