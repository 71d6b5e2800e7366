"""Lightning: the YOLOv5 training module and the slimming callback; joins graph, slimming and data."""

from yolo_slim.lit.autoanchor import AutoAnchor
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.lit.network import find_network, restore_pruned_network
from yolo_slim.lit.slim_callback import SlimCallback
from yolo_slim.lit.speed import TrainingSpeed

__all__ = ["AutoAnchor", "SlimCallback", "TrainingSpeed", "YOLOv5Module", "find_network", "restore_pruned_network"]
