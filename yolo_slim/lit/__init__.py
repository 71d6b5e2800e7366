"""Lightning: the YOLOv5 training module and (later) the slimming callbacks; joins graph, slimming and data."""

from yolo_slim.lit.module import YOLOv5Module

__all__ = ["YOLOv5Module"]
