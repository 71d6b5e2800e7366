"""One image through a detector as ``predict`` and ultralytics' ``detect.py`` do it: letterbox, forward, NMS,
boxes back in the image's own pixels, each step timed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import nn

import torch

from yolo_slim.data.augment import letterbox
from yolo_slim.models.postprocess import NMSConfig, non_max_suppression
from yolo_slim.predict.runtime import Detector


@dataclass(frozen=True)
class ImagePrediction:
    """Detections of one image.

    Attributes:
        detections: (n, 6) ``x1, y1, x2, y2, score, class`` in the original image's pixels, best first.
        width, height: The original image's size.
        milliseconds: Pre-process (letterbox, to float), inference and NMS times.
    """

    detections: torch.Tensor
    width: int
    height: int
    milliseconds: tuple[float, float, float]


def predict_image(detector: Detector, image: torch.Tensor, imgsz: int | tuple[int, int],
                  nms: NMSConfig) -> ImagePrediction:
    """Run ``detector`` on ``image`` (3, H, W) uint8 RGB letterboxed to ``imgsz``: a square side or
    ``(height, width)``, multiples of its stride."""
    start = time.perf_counter()
    height, width = image.shape[-2:]
    padded, (ratio_x, ratio_y), (pad_left, pad_top) = letterbox(image, imgsz)
    batch = padded.unsqueeze(0).float().div_(255)  # (1, 3, imgsz height, imgsz width)
    loaded = time.perf_counter()
    raw = detector.run(batch)  # (1, N, 5 + nc)
    inferred = time.perf_counter()
    detections = non_max_suppression(raw.float(), nms)[0].clone()
    # Undo the letterbox: subtract the padding, divide by the resize ratio, keep inside the image.
    detections[:, [0, 2]] = ((detections[:, [0, 2]] - pad_left) / ratio_x).clamp_(0, width)
    detections[:, [1, 3]] = ((detections[:, [1, 3]] - pad_top) / ratio_y).clamp_(0, height)
    done = time.perf_counter()
    return ImagePrediction(detections, int(width), int(height),
                           tuple(1000 * d for d in (loaded - start, inferred - loaded, done - inferred)))


# Settings of the pictures of a run (predictions.png): detect.py's thresholds, few enough boxes to read.
PICTURE_NMS = NMSConfig(conf_threshold=0.25, iou_threshold=0.45, max_det=100, multi_label=False)


def detect_batch(network: nn.Module, images: torch.Tensor, nms: NMSConfig = PICTURE_NMS) -> list[torch.Tensor]:
    """Detections (n, 6) per image of ``images`` (B, 3, H, W) uint8, already at the network's input size, in
    those pixels; ``network`` (a YOLOv5) is run in eval mode and left in the mode it was in."""
    was_training = network.training
    network.eval()
    try:
        parameter = next(network.parameters())
        with torch.no_grad():
            raw = network(images.to(parameter.device, parameter.dtype).div(255))
    finally:
        network.train(was_training)
    return [d.cpu() for d in non_max_suppression(raw.float(), nms)]
