"""Detection metrics: torchmetrics' COCO mAP (faster-coco-eval backend) fed from YOLO batches."""

from __future__ import annotations

import torch
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_convert


def make_map_metric(max_det: int) -> MeanAveragePrecision:
    """mAP@0.5 and mAP@0.5:0.95; the largest detection threshold matches the NMS ``max_det`` so that
    torchmetrics neither warns nor silently drops detections."""
    thresholds = sorted({1, 10, max_det})
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval",
                                max_detection_thresholds=thresholds)


def metric_inputs(detections: list[torch.Tensor], targets: torch.Tensor,
                  image_size: tuple[int, int]) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Convert one batch to torchmetrics' per-image dicts, all in input-image pixels.

    Args:
        detections: Per image, (n, 6) ``x1, y1, x2, y2, score, class`` from NMS.
        targets: (M, 6) ``[image_index, cls, cx, cy, w, h]`` normalised.
        image_size: (height, width) of the network input.
    """
    height, width = image_size
    scale = torch.tensor([width, height, width, height], device=targets.device, dtype=torch.float32)
    predictions, truths = [], []
    for index, found in enumerate(detections):
        predictions.append({"boxes": found[:, :4].float(), "scores": found[:, 4].float(),
                            "labels": found[:, 5].long()})
        rows = targets[targets[:, 0] == index]
        truths.append({"boxes": box_convert(rows[:, 2:6].float() * scale, "cxcywh", "xyxy"),
                       "labels": rows[:, 1].long()})
    return predictions, truths
