"""The YOLOv5 detection head: one 1x1 conv per level, anchor-based box decoding."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)


class Detect(nn.Module):
    """Per level ``i``, a 1x1 conv from ``in_channels[i]`` to ``na * (nc + 5)`` channels.

    State-dict layout as ultralytics: ``m.{i}.weight``, ``m.{i}.bias`` and the buffer ``anchors``
    of shape (nl, na, 2) in units of each level's stride.

    Args:
        nc: Number of classes.
        anchors: Per level, the flattened (w, h) anchor pairs in input pixels.
        in_channels: Channels of each level's input map.
        strides: Each level's stride in input pixels (8, 16, 32 for the standard heads).
    """

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], in_channels: Sequence[int],
                 strides: Sequence[float]) -> None:
        super().__init__()
        if not len(anchors) == len(in_channels) == len(strides):
            raise ValueError(f"Detect needs one anchor set, input and stride per level; got {len(anchors)} anchor "
                             f"sets, {len(in_channels)} inputs, {len(strides)} strides")
        self.nc = nc
        self.no = nc + 5  # per anchor: x, y, w, h, objectness, nc class scores
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        levels = _order_anchors_like_strides([[float(v) for v in level] for level in anchors], list(strides))
        stride = torch.tensor([float(s) for s in strides])
        # Pixels to grid units in Python floats, not tensor ops: the same float32 values (rounding a double
        # quotient to float32 is exact for a float32 division), and no elementwise op when the network is
        # built on the meta device (info's FLOP count is), whose first one costs seconds of torch set-up.
        grid_units = [[value / float(s) for value in level] for level, s in zip(levels, strides)]
        # Not persistent: ultralytics keeps the stride out of the state dict, and so must we for strict loading.
        self.register_buffer("stride", stride, persistent=False)
        self.register_buffer("anchors", torch.tensor(grid_units).view(self.nl, self.na, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in in_channels)
        if self.anchors.device.type != "meta":  # on meta there are no values to initialise
            self._initialize_biases([float(s) for s in strides])

    @torch.no_grad()
    def _initialize_biases(self, strides: list[float], expected_objects: float = 8.0,
                           image_size: float = 640.0) -> None:
        """Start objectness and class logits at sensible priors instead of 0.5 probability.

        YOLOv5's choice: about ``expected_objects`` objects per ``image_size``-pixel image spread
        over the level's cells, and a class probability of 0.6 / nc. Without this the first
        iterations are dominated by a huge false-positive objectness loss.
        """
        for conv, level_stride in zip(self.m, strides):
            bias = conv.bias.view(self.na, self.no)
            bias[:, 4] += math.log(expected_objects / (image_size / level_stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.nc - 0.99999))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        """Training: the raw maps (B, na, ny, nx, nc + 5) per level. Eval: decoded (B, N, nc + 5).

        Decoded rows are ``cx, cy, w, h`` in input pixels, objectness and class probabilities.
        """
        maps = []
        for level, x in enumerate(xs):
            b, _, ny, nx = x.shape
            maps.append(self.m[level](x).view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return maps
        return torch.cat([self._decode(level, raw) for level, raw in enumerate(maps)], dim=1)

    def _decode(self, level: int, raw: torch.Tensor) -> torch.Tensor:
        b, na, ny, nx, no = raw.shape  # (B, na, ny, nx, nc + 5)
        rows = torch.arange(ny, device=raw.device, dtype=raw.dtype)
        cols = torch.arange(nx, device=raw.device, dtype=raw.dtype)
        grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
        # The -0.5 offset and the factor 2 let a centre reach half a cell beyond its own cell
        # (YOLOv5's "eliminate grid sensitivity"); the same arithmetic order as ultralytics keeps
        # float results identical to theirs.
        grid = torch.stack((grid_x, grid_y), dim=-1).view(1, 1, ny, nx, 2) - 0.5
        level_stride = self.stride[level].to(raw.dtype)
        anchor_px = (self.anchors[level] * self.stride[level]).to(raw.dtype).view(1, na, 1, 1, 2)
        probs = raw.sigmoid()
        xy = (probs[..., 0:2] * 2 + grid) * level_stride
        wh = (probs[..., 2:4] * 2) ** 2 * anchor_px
        return torch.cat((xy, wh, probs[..., 4:]), dim=-1).view(b, na * ny * nx, no)


def _order_anchors_like_strides(anchors: list[list[float]], strides: list[float]) -> list[list[float]]:
    """Reverse the anchor levels when their sizes run against the strides, as ultralytics does.

    A yaml that lists the large anchors first would otherwise give the finest level the largest
    boxes; ultralytics silently flips them at build time, so weights trained there assume it.
    Plain floats, not tensors: this also runs when the model is built on the meta device.
    """
    def mean_area(level: list[float]) -> float:
        return sum(w * h for w, h in zip(level[0::2], level[1::2])) / (len(level) // 2)

    area_trend = mean_area(anchors[-1]) - mean_area(anchors[0])
    stride_trend = strides[-1] - strides[0]
    if area_trend and stride_trend and (area_trend > 0) != (stride_trend > 0):
        log.info("anchor levels run against the strides; reversing them (as ultralytics does)")
        return anchors[::-1]
    return anchors
