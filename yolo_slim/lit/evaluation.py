"""Detection metrics: torchmetrics' COCO mAP (faster-coco-eval backend) fed from YOLO batches."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DistributedSampler
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_convert


def make_map_metric(max_det: int) -> MeanAveragePrecision:
    """mAP@0.5 and mAP@0.5:0.95; the largest detection threshold matches the NMS ``max_det`` so that
    torchmetrics neither warns nor silently drops detections.

    torchmetrics wants exactly three thresholds (COCO's 1, 10, 100 by default) and accepts repeats: a
    ``max_det`` of 1 or up to 10 gives ``[1, max_det, max_det]`` or ``[1, 1, 1]``; mAP is read at the last.
    """
    thresholds = sorted([1, min(10, max_det), max_det])
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


def repeated_positions(loader: Any, batch_index: int, batch_length: int) -> list[int]:
    """Positions in a validation batch that hold a DistributedSampler's repeats: it pads the split to an
    equal count per process with images from its start, which would otherwise count twice in the mAP.

    Rank ``r`` reads padded positions ``r, r + W, r + 2W, ...``; those at or past the split's length
    are the repeats (with or without shuffling, as long as the sampler does not drop the tail).
    """
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last or loader.batch_size is None:
        return []
    first, count = batch_index * loader.batch_size, len(sampler.dataset)
    return [j for j in range(batch_length) if sampler.rank + (first + j) * sampler.num_replicas >= count]


def blank_out(predictions: list[dict[str, torch.Tensor]], truths: list[dict[str, torch.Tensor]],
              positions: list[int]) -> None:
    """Empty the entries at ``positions``: no detections and no objects leave COCO's AP untouched.

    They are emptied rather than dropped: torchmetrics gathers its per-image lists across processes
    element by element, which needs the same number of images on every process.
    """
    for position in positions:
        boxes = predictions[position]["boxes"]
        predictions[position] = {"boxes": boxes.new_zeros((0, 4)), "scores": boxes.new_zeros((0,)),
                                 "labels": predictions[position]["labels"].new_zeros((0,))}
        truths[position] = {"boxes": boxes.new_zeros((0, 4)), "labels": truths[position]["labels"].new_zeros((0,))}
