"""YOLOv5's building blocks, with every channel count an explicit argument.

Attribute names (``conv``, ``bn``, ``cv1``, ``m`` ...) follow ultralytics so that state-dict keys
match theirs exactly; the constructors differ on purpose: ultralytics derives hidden widths from
an expansion ratio, while here each width is given, so that a pruned block (whose widths no
ratio describes) is built by the same code as a dense one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# ultralytics sets these on every BatchNorm after construction (models/yolo.py initialize_weights);
# they are not stored in state dicts, so a faithful port must set them itself.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size for stride 1 (and divides it by the stride otherwise)."""
    return (dilation * (kernel_size - 1) + 1) // 2


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU: the unit every prunable channel lives in."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, groups: int = 1, dilation: int = 1, act: bool = True) -> None:
        super().__init__()
        padding = same_padding(kernel_size, dilation) if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              groups=groups, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """Space-to-depth (B, C, H, W) -> (B, 4C, H/2, W/2), then a Conv: the v5.0 stem."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = Conv(4 * in_channels, out_channels, kernel_size, stride, padding, groups, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The order of the four phases fixes the meaning of the conv's input channels: it must be
        # ultralytics' order (even/even, odd/even, even/odd, odd/odd rows/cols) for their weights.
        phases = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(phases, dim=1))


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, plus the input when ``shortcut`` (which needs in == out channels)."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 shortcut: bool = True, groups: int = 1) -> None:
        super().__init__()
        if shortcut and in_channels != out_channels:
            raise ValueError(f"Bottleneck with shortcut needs in_channels == out_channels, "
                             f"got {in_channels} and {out_channels}")
        self.cv1 = Conv(in_channels, hidden_channels, 1, 1)
        self.cv2 = Conv(hidden_channels, out_channels, 3, 1, groups=groups)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C3(nn.Module):
    """CSP block: ``cv3(cat(m(cv1(x)), cv2(x)))`` with a chain of Bottlenecks ``m``.

    Args:
        in_channels: Channels of the input.
        cv1_channels: Output channels of ``cv1`` (the Bottleneck chain's input).
        cv2_channels: Output channels of ``cv2`` (the bypass).
        bottlenecks: Per Bottleneck, ``[hidden_channels, out_channels]``.
        out_channels: Output channels of ``cv3``.
        shortcut: Whether the Bottlenecks add their input (then every Bottleneck's
            out_channels must equal ``cv1_channels``).
        groups: Groups of the Bottlenecks' 3x3 convs.
    """

    def __init__(self, in_channels: int, cv1_channels: int, cv2_channels: int,
                 bottlenecks: Sequence[Sequence[int]], out_channels: int,
                 shortcut: bool = True, groups: int = 1) -> None:
        super().__init__()
        self.cv1 = Conv(in_channels, cv1_channels, 1, 1)
        self.cv2 = Conv(in_channels, cv2_channels, 1, 1)
        chain_in = [cv1_channels] + [out for _, out in bottlenecks[:-1]]
        # cv3 before m: ultralytics registers them in this order, so state dicts list keys alike.
        self.cv3 = Conv((bottlenecks[-1][1] if bottlenecks else cv1_channels) + cv2_channels, out_channels, 1, 1)
        self.m = nn.Sequential(*(Bottleneck(c_in, hidden, out, shortcut, groups)
                                 for c_in, (hidden, out) in zip(chain_in, bottlenecks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling: ``cv2(cat(y, pool_k(y) for k in kernel_sizes))`` with ``y = cv1(x)``."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 kernel_sizes: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        self.cv1 = Conv(in_channels, hidden_channels, 1, 1)
        self.cv2 = Conv(hidden_channels * (len(kernel_sizes) + 1), out_channels, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return self.cv2(torch.cat([y] + [pool(y) for pool in self.m], dim=1))


class SPPF(nn.Module):
    """SPP with one pool applied three times in a chain: k=5 equals SPP(5, 9, 13), at less cost."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.cv1 = Conv(in_channels, hidden_channels, 1, 1)
        self.cv2 = Conv(hidden_channels * 4, out_channels, 1, 1)
        self.m = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.cv1(x)
        y1 = self.m(y0)
        y2 = self.m(y1)
        return self.cv2(torch.cat((y0, y1, y2, self.m(y2)), dim=1))


class Concat(nn.Module):
    """Concatenate a list of feature maps along ``dimension`` (channels)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.dimension = dimension

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=self.dimension)


class Upsample(nn.Upsample):
    """``nn.Upsample`` taking the spec's keyword names (``scale_factor``, ``mode``)."""

    def __init__(self, scale_factor: float = 2.0, mode: str = "nearest") -> None:
        super().__init__(scale_factor=scale_factor, mode=mode)
