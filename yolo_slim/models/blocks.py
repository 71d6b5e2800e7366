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


class _CSP(nn.Module):
    """The cross-stage-partial shape of C3 and its variants: ``cv3(cat(m(cv1(x)), cv2(x)))``."""

    cv1: Conv
    cv2: Conv
    cv3: Conv
    m: nn.Module

    def _convs(self, in_channels: int, cv1_channels: int, cv2_channels: int, inner_out: int,
               out_channels: int) -> None:
        self.cv1 = Conv(in_channels, cv1_channels, 1, 1)
        self.cv2 = Conv(in_channels, cv2_channels, 1, 1)
        # cv3 before m: ultralytics registers them in this order, so state dicts list keys alike.
        self.cv3 = Conv(inner_out + cv2_channels, out_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class C3(_CSP):
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
        chain_in = [cv1_channels] + [out for _, out in bottlenecks[:-1]]
        self._convs(in_channels, cv1_channels, cv2_channels, bottlenecks[-1][1] if bottlenecks else cv1_channels,
                    out_channels)
        self.m = nn.Sequential(*(Bottleneck(c_in, hidden, out, shortcut, groups)
                                 for c_in, (hidden, out) in zip(chain_in, bottlenecks)))


class GhostConv(nn.Module):
    """Ghost convolution (GhostNet): a Conv to half the outputs, then a cheap depthwise 5x5 Conv of
    those, both halves concatenated."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        hidden = out_channels // 2
        self.cv1 = Conv(in_channels, hidden, kernel_size, stride, None, groups, act=act)
        self.cv2 = Conv(hidden, hidden, 5, 1, None, hidden, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), dim=1)


class GhostBottleneck(nn.Module):
    """Two GhostConvs (a depthwise Conv between them at stride 2) plus a shortcut: the input itself at
    stride 1, a depthwise + pointwise Conv at stride 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        hidden = out_channels // 2
        # ultralytics' DWConv is a Conv whose groups are gcd(in, out); the same module, so the same keys.
        self.conv = nn.Sequential(
            GhostConv(in_channels, hidden, 1, 1),
            Conv(hidden, hidden, kernel_size, stride, groups=hidden, act=False) if stride == 2 else nn.Identity(),
            GhostConv(hidden, out_channels, 1, 1, act=False))
        self.shortcut = nn.Sequential(
            Conv(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=False),
            Conv(in_channels, out_channels, 1, 1, act=False)) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


class C3Ghost(_CSP):
    """C3 whose chain holds ``depth`` GhostBottlenecks of ``cv1_channels``."""

    def __init__(self, in_channels: int, cv1_channels: int, cv2_channels: int, out_channels: int,
                 depth: int = 1) -> None:
        super().__init__()
        self._convs(in_channels, cv1_channels, cv2_channels, cv1_channels, out_channels)
        self.m = nn.Sequential(*(GhostBottleneck(cv1_channels, cv1_channels) for _ in range(depth)))


class TransformerLayer(nn.Module):
    """Multi-head self-attention and a two-layer projection, each with a residual (no LayerNorm, as
    ultralytics' ViT-style layer); works on (tokens, batch, channels)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.q = nn.Linear(channels, channels, bias=False)
        self.k = nn.Linear(channels, channels, bias=False)
        self.v = nn.Linear(channels, channels, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=channels, num_heads=heads)
        self.fc1 = nn.Linear(channels, channels, bias=False)
        self.fc2 = nn.Linear(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ma(self.q(x), self.k(x), self.v(x))[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """A feature map as tokens (one per pixel), a learned position embedding, ``layers`` TransformerLayers."""

    def __init__(self, in_channels: int, out_channels: int, heads: int, layers: int) -> None:
        super().__init__()
        self.conv = Conv(in_channels, out_channels) if in_channels != out_channels else None
        self.linear = nn.Linear(out_channels, out_channels)
        self.tr = nn.Sequential(*(TransformerLayer(out_channels, heads) for _ in range(layers)))
        self.c2 = out_channels  # ultralytics' attribute name: their forward reads it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        batch, _, height, width = x.shape
        tokens = x.flatten(2).permute(2, 0, 1)
        return self.tr(tokens + self.linear(tokens)).permute(1, 2, 0).reshape(batch, self.c2, height, width)


class C3TR(_CSP):
    """C3 whose chain is a TransformerBlock of ``cv1_channels`` with ``heads`` heads and ``layers`` layers."""

    def __init__(self, in_channels: int, cv1_channels: int, cv2_channels: int, out_channels: int,
                 heads: int = 4, layers: int = 1) -> None:
        super().__init__()
        self._convs(in_channels, cv1_channels, cv2_channels, cv1_channels, out_channels)
        self.m = TransformerBlock(cv1_channels, cv1_channels, heads, layers)


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
