"""YOLOv5's training loss: anchor matching by shape, three cells per target, CIoU, BCE.

Targets arrive in YOLOv5's layout, rows ``[image_index, cls, cx, cy, w, h]`` normalised to the
input image. For each detection level:

1. a target is matched to each anchor whose width and height ratios to it lie within
   ``anchor_t`` (4 by default: the most ``(2 sigmoid)^2`` can stretch an anchor);
2. it is assigned to the cell holding its centre and to the two neighbouring cells closest to the
   centre (the decoded centre can move half a cell past its own cell), which triples positives;
3. box loss is ``1 - CIoU`` of the decoded box, objectness is BCE against the (detached,
   clamped) CIoU at positive cells and 0 elsewhere, class loss is BCE against one-hot targets.

Level losses are weighted 4.0 / 1.0 / 0.4 (small objects' level counts most) and the gains scale
with the number of levels, classes and image size exactly as ultralytics' train.py does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torchvision.ops import box_convert, complete_box_iou_loss


# Ultralytics' objectness weights per level: theirs for 3 levels (our default), and their table for other counts.
THREE_LEVEL_BALANCE = (4.0, 1.0, 0.4)
OTHER_LEVELS_BALANCE = (4.0, 1.0, 0.25, 0.06, 0.02)


@dataclass(frozen=True)
class LossConfig:
    """Loss hyperparameters, YOLOv5's hyp.scratch-low defaults (before :meth:`scaled`).

    Attributes:
        box: Gain of the CIoU box loss.
        obj: Gain of the objectness loss.
        cls: Gain of the class loss.
        anchor_t: Largest width or height ratio between a target and an anchor that still matches.
        balance: Objectness weight per level, finest first. The default is ultralytics' own for three
            levels; a model of another level count then takes theirs for it (4, 1, 0.25, 0.06, 0.02 cut
            to its levels), and a value given for it must have one weight per level.
        label_smoothing: Epsilon of label smoothing for the class targets.
    """

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    balance: tuple[float, ...] = THREE_LEVEL_BALANCE
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for name in ("box", "obj", "cls"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, found {getattr(self, name)}")
        if self.anchor_t <= 1:
            raise ValueError(f"loss.anchor_t must be > 1 (a ratio), found {self.anchor_t}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"loss.label_smoothing must be in [0, 1), found {self.label_smoothing}")
        balance = self.balance
        if (not isinstance(balance, (tuple, list)) or not balance
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b >= 0
                           for b in balance)):
            raise ValueError(f"loss.balance must be a list of numbers >= 0, one per detection level (finest "
                             f"first), found {balance!r}")

    def scaled(self, num_levels: int, nc: int, imgsz: int) -> LossConfig:
        """Gains as ultralytics' train.py rescales them for the model and image size."""
        level_factor = 3 / num_levels
        balance = tuple(self.balance)
        if num_levels != 3 and balance == THREE_LEVEL_BALANCE:  # the default: ultralytics' weights for this count
            balance = OTHER_LEVELS_BALANCE[:num_levels]
        if len(balance) != num_levels:
            raise ValueError(f"loss.balance needs one weight per detection level ({num_levels} for this model), "
                             f"found {list(self.balance)}")
        return replace(self, box=self.box * level_factor, cls=self.cls * nc / 80 * level_factor,
                       obj=self.obj * (imgsz / 640) ** 2 * level_factor, balance=balance)


_EPS = 1e-7  # ultralytics' bbox_iou adds the same to box heights
# Neighbour offsets in cells: own cell, then left, up, right, down (x, y).
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)


class YOLOv5Loss(nn.Module):
    """Callable loss; holds no reference to the network, so it survives pruning unchanged.

    Args:
        anchors: (nl, na, 2) anchors in units of each level's stride (``Detect.anchors``).
        nc: Number of classes.
        config: Gains, already :meth:`LossConfig.scaled` for the model and image size.
    """

    def __init__(self, anchors: torch.Tensor, nc: int, config: LossConfig) -> None:
        super().__init__()
        self.register_buffer("anchors", anchors.detach().clone(), persistent=False)
        # On the anchors' device and the module's: a host tensor copied to the GPU at each step would wait.
        # (A loss made after a prune is never moved by Lightning: it starts where the anchors are.)
        self.register_buffer("neighbours", _NEIGHBOURS.to(anchors.device), persistent=False)
        self.nc = nc
        self.config = config
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, maps: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one batch.

        Args:
            maps: Per level, raw outputs (B, na, ny, nx, 5 + nc).
            targets: (M, 6) rows ``[image_index, cls, cx, cy, w, h]``, normalised.

        Returns:
            ``(total * batch_size, [box, obj, cls] detached)`` as ultralytics returns them: the batch
            factor makes the gradient a sum over images, which the learning rate assumes.
        """
        device = maps[0].device
        config = self.config
        box_loss = torch.zeros((), device=device)
        obj_loss = torch.zeros((), device=device)
        cls_loss = torch.zeros((), device=device)
        positive_target = 1.0 - 0.5 * config.label_smoothing
        negative_target = 0.5 * config.label_smoothing
        for level, raw in enumerate(maps):
            image, anchor, cell_y, cell_x, target_box, target_cls, anchor_wh = self._assign(level, raw, targets)
            objectness_target = torch.zeros(raw.shape[:4], device=device, dtype=raw.dtype)  # (B, na, ny, nx)
            if image.numel():
                picked = raw[image, anchor, cell_y, cell_x]  # (n, 5 + nc)
                xy = picked[:, 0:2].sigmoid() * 2 - 0.5
                # + eps: a saturated logit gives a 0-size box, and CIoU's aspect term (atan(w / h)) would be 0/0.
                wh = (picked[:, 2:4].sigmoid() * 2) ** 2 * anchor_wh + _EPS
                predicted = box_convert(torch.cat((xy, wh), 1), "cxcywh", "xyxy")
                ciou_loss = complete_box_iou_loss(predicted, box_convert(target_box, "cxcywh", "xyxy"),
                                                  reduction="none")
                box_loss = box_loss + ciou_loss.mean()
                objectness_target[image, anchor, cell_y, cell_x] = (1.0 - ciou_loss).detach().clamp(0).to(raw.dtype)
                if self.nc > 1:  # one class: objectness alone carries the score
                    class_target = torch.full_like(picked[:, 5:], negative_target)
                    class_target[torch.arange(len(target_cls), device=device), target_cls] = positive_target
                    cls_loss = cls_loss + self.bce(picked[:, 5:], class_target)
            obj_loss = obj_loss + self.bce(raw[..., 4], objectness_target) * config.balance[level]
        box_loss, obj_loss, cls_loss = box_loss * config.box, obj_loss * config.obj, cls_loss * config.cls
        batch_size = maps[0].shape[0]
        return (box_loss + obj_loss + cls_loss) * batch_size, torch.stack((box_loss, obj_loss, cls_loss)).detach()

    @torch.no_grad()
    def _assign(self, level: int, raw: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Positive samples of one level.

        Returns image, anchor, cell_y, cell_x indices (n,), the target box (n, 4) as centre offset
        from the cell's corner and size in cells, the class (n,) and the matched anchor (n, 2).
        """
        device = raw.device
        _, na, ny, nx, _ = raw.shape
        anchors = self.anchors[level].to(device)  # (na, 2) in cells
        # Scaled by Python numbers: a tensor of the grid size made here would be a host-to-device copy,
        # which waits for the GPU.
        boxes = targets[:, 2:6].float().clone()  # (M, 4) in cells
        boxes[:, 0::2] *= nx
        boxes[:, 1::2] *= ny
        # Each target against each anchor: (na, M)
        ratio = boxes[None, :, 2:4] / anchors[:, None]
        matched = torch.max(ratio, 1 / ratio).amax(dim=2) < self.config.anchor_t
        anchor_index, target_index = matched.nonzero(as_tuple=True)
        boxes, rows = boxes[target_index], targets[target_index]
        centre = boxes[:, 0:2]  # (n, 2)
        mirrored = torch.stack((nx - centre[:, 0], ny - centre[:, 1]), 1)
        # A neighbour is used when the centre lies in the half of the cell facing it, and the
        # neighbour exists (centre more than one cell from that border).
        near_low = (centre % 1 < 0.5) & (centre > 1)  # (n, 2): left, up
        near_high = (mirrored % 1 < 0.5) & (mirrored > 1)  # (n, 2): right, down
        use = torch.stack((torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1],
                           near_high[:, 0], near_high[:, 1]))  # (5, n)
        which, sample = use.nonzero(as_tuple=True)
        offsets = self.neighbours.to(device)[which] * 0.5
        centre, boxes, rows, anchor_index = centre[sample], boxes[sample], rows[sample], anchor_index[sample]
        cell = (centre - offsets).long()
        cell_x, cell_y = cell[:, 0].clamp(0, nx - 1), cell[:, 1].clamp(0, ny - 1)
        target_box = torch.cat((centre - cell, boxes[:, 2:4]), 1)
        return (rows[:, 0].long(), anchor_index, cell_y, cell_x, target_box, rows[:, 1].long(),
                anchors[anchor_index])
