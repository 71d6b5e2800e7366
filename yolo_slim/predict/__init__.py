"""Inference on the user's own images: sources, model runtimes (torch, TorchScript, ONNX), pictures, outputs.

Sits above :mod:`yolo_slim.models` and :mod:`yolo_slim.data`; the ``predict`` command and SlimCallback's
``predictions.png`` use it.
"""

from yolo_slim.predict.draw import comparison_sheet, draw_detections, side_by_side
from yolo_slim.predict.predictor import ImagePrediction, detect_batch, predict_image
from yolo_slim.predict.runtime import Detector, load_detector
from yolo_slim.predict.sources import image_sources

__all__ = ["Detector", "ImagePrediction", "comparison_sheet", "detect_batch", "draw_detections", "image_sources",
           "load_detector", "predict_image", "side_by_side"]
