"""Lightning: the YOLOv5 training module and (later) the slimming callbacks; joins graph, slimming and data."""

from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.lit.slim_callback import SlimCallback, find_network, restore_pruned_network

__all__ = ["SlimCallback", "YOLOv5Module", "find_network", "restore_pruned_network"]
