"""From decoded predictions to detections: confidence filter and per-class NMS (torchvision)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, box_convert


@dataclass(frozen=True)
class NMSConfig:
    """Post-processing settings; defaults are YOLOv5's validation settings.

    Attributes:
        conf_threshold: Keep (box, class) pairs whose objectness x class probability exceeds this.
        iou_threshold: Boxes of one class overlapping more than this are suppressed.
        max_det: Detections kept per image, best first.
        multi_label: One candidate per class above the threshold (YOLOv5's val), instead of only
            the best class per box (its detect.py).
        max_candidates: Candidates per image entering NMS, best first (bounds NMS time early in
            training, when everything clears a 0.001 threshold).
    """

    conf_threshold: float = 0.001
    iou_threshold: float = 0.6
    max_det: int = 300
    multi_label: bool = True
    max_candidates: int = 30000

    def __post_init__(self) -> None:
        for name in ("conf_threshold", "iou_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"nms.{name} must be in [0, 1], found {value}")
        for name in ("max_det", "max_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"nms.{name} must be >= 1, found {getattr(self, name)}")


def non_max_suppression(predictions: torch.Tensor, config: NMSConfig = NMSConfig()) -> list[torch.Tensor]:
    """Per image, detections (n, 6): ``x1, y1, x2, y2, score, class`` in input pixels, best first.

    Args:
        predictions: (B, N, 5 + nc) from the model in eval mode: ``cx, cy, w, h``, objectness,
            class probabilities.
    """
    results = []
    for image_predictions in predictions:  # (N, 5 + nc)
        candidates = image_predictions[image_predictions[:, 4] > config.conf_threshold]
        scores = candidates[:, 5:] * candidates[:, 4:5]  # (n, nc): P(object) * P(class | object)
        boxes = box_convert(candidates[:, :4], "cxcywh", "xyxy")
        if config.multi_label:
            box_index, classes = (scores > config.conf_threshold).nonzero(as_tuple=True)
            boxes, scores = boxes[box_index], scores[box_index, classes]
        else:
            scores, classes = scores.max(dim=1)
            keep = scores > config.conf_threshold
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        if scores.numel() > config.max_candidates:
            top = scores.topk(config.max_candidates).indices
            boxes, scores, classes = boxes[top], scores[top], classes[top]
        kept = batched_nms(boxes.float(), scores.float(), classes, config.iou_threshold)[: config.max_det]
        results.append(torch.cat((boxes[kept], scores[kept, None], classes[kept, None].to(boxes.dtype)), dim=1))
    return results
