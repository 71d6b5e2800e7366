"""Detection metrics: torchmetrics' COCO mAP (faster-coco-eval backend) fed from YOLO batches, and the
validation hooks that compute it for a network or an exported file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.data import DistributedSampler
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_convert

from yolo_slim.models.postprocess import NMSConfig, non_max_suppression


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


def images_as_float(images: torch.Tensor) -> torch.Tensor:
    """A batch's images in [0, 1]. uint8 travels to the device (4x less to copy than float); scaling happens there."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


class MapValidation:
    """Lightning's validation hooks for a detector: NMS, then COCO mAP, logged as ``val/map50`` and ``val/map``.

    Mixed into a LightningModule with ``inference_model`` (images in [0, 1] -> decoded predictions),
    ``nms_config`` and ``val_map`` (from :func:`make_map_metric`).
    """

    inference_model: Callable[[torch.Tensor], torch.Tensor]
    nms_config: NMSConfig
    val_map: MeanAveragePrecision

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        images = images_as_float(batch["images"])
        detections = non_max_suppression(self.inference_model(images), self.nms_config)
        predictions, truths = metric_inputs(detections, batch["targets"], tuple(images.shape[-2:]))
        # On several processes the split is padded with repeats: they must not count twice.
        blank_out(predictions, truths, repeated_positions(self.trainer.val_dataloaders, batch_idx, len(images)))
        self.val_map.update(predictions, truths)

    def on_validation_epoch_end(self) -> None:
        results = self.val_map.compute()
        self.val_map.reset()
        # torchmetrics reports -1 when there is nothing to score (no ground truth at all).
        self.log("val/map50", results["map_50"].clamp_min(0), prog_bar=True)
        self.log("val/map", results["map"].clamp_min(0), prog_bar=True)


class ExportedDetectorValidation(MapValidation, L.LightningModule):
    """The mAP of an exported file (ONNX, TorchScript) under ``Trainer.validate``, scored as a network is.

    Args:
        run: The file's forward, as ``yolo_slim.predict.Detector.run``: (B, 3, H, W) float32 in [0, 1] on the
            CPU -> (B, N, 5 + nc) decoded predictions on the CPU.
        nms: Post-processing, as for a network.
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], nms: NMSConfig) -> None:
        super().__init__()
        self.run = run
        self.nms_config = nms
        self.val_map = make_map_metric(nms.max_det)

    def inference_model(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images.float().cpu()).to(images.device)
