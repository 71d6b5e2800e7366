"""Size and cost of a YOLOv5: parameters, GFLOPs (torch's own flop counter), a per-layer table."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from yolo_slim.models.fuse import fuse_batchnorm
from yolo_slim.models.spec import ModelSpec
from yolo_slim.models.yolo import YOLOv5


@dataclass(frozen=True)
class LayerInfo:
    index: int
    sources: tuple[int, ...]
    module: str
    params: int
    out_channels: int
    gflops: float


@dataclass(frozen=True)
class ModelInfo:
    layers: tuple[LayerInfo, ...]
    params: int
    gflops: float
    imgsz: tuple[int, int]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (BatchNorm affine weights included, as ultralytics counts them)."""
    return sum(p.numel() for p in model.parameters())


def _as_hw(imgsz: int | tuple[int, int]) -> tuple[int, int]:
    return (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))


def _count_on_meta(spec: ModelSpec, imgsz: int | tuple[int, int]) -> FlopCounterMode:
    height, width = _as_hw(imgsz)
    with torch.device("meta"):
        shadow = YOLOv5.from_spec(spec).eval()
        image = torch.zeros(1, spec.in_channels, height, width)
    counter = FlopCounterMode(display=False)
    with counter:
        shadow(image)
    return counter


def spec_gflops(spec: ModelSpec, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of the architecture ``spec`` describes, without building real weights."""
    return _count_on_meta(spec, imgsz).get_total_flops() / 1e9


def model_info(model: YOLOv5, imgsz: int | tuple[int, int] = 640) -> ModelInfo:
    """Parameters and GFLOPs (2 FLOPs per multiply-add, batch 1, eval mode) overall and per layer.

    The count runs on a copy of the architecture built on the meta device, so it costs no real
    arithmetic even for yolov5x at 640 and leaves ``model`` untouched.

    Args:
        model: The network.
        imgsz: Input size, an int (square) or (height, width); multiples of the largest stride.
    """
    height, width = _as_hw(imgsz)
    counter = _count_on_meta(model.spec, (height, width))
    per_module = counter.get_flop_counts()
    prefix = f"{YOLOv5.__name__}.model"
    channels = model.spec.output_channels()
    layers = []
    for index, (layer_spec, layer) in enumerate(zip(model.spec.layers, model.model)):
        flops = sum(per_module.get(f"{prefix}.{index}", {}).values())
        layers.append(LayerInfo(index=index, sources=layer_spec.sources, module=layer_spec.module,
                                params=count_parameters(layer), out_channels=channels[index], gflops=flops / 1e9))
    return ModelInfo(layers=tuple(layers), params=count_parameters(model),
                     gflops=counter.get_total_flops() / 1e9, imgsz=(height, width))


def cpu_latency_ms(model: torch.nn.Module, imgsz: int | tuple[int, int] = 640, runs: int = 20,
                   warmup: int = 3) -> float:
    """Median CPU latency (milliseconds) of one eval-mode forward pass at batch 1, on a float32 copy.

    The copy is prepared as for deployment: BatchNorms folded into the convolutions
    (:func:`~yolo_slim.models.fuse.fuse_batchnorm`) and channels-last memory format, which
    oneDNN's convolutions use natively (in NCHW each convolution reorders its input and output).
    """
    import time

    height, width = _as_hw(imgsz)
    shadow = fuse_batchnorm(model).float().cpu()  # fuse_batchnorm copies: the caller's model is untouched
    spec = getattr(model, "spec", None)  # any module is timed; a YOLOv5 says its input channels (grayscale: 1)
    image = torch.rand(1, spec.in_channels if spec is not None else 3, height, width)
    if all(tensor.dim() != 5 for tensor in [*shadow.parameters(), *shadow.buffers()]):  # channels_last needs 4-D
        shadow = shadow.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for index in range(warmup + runs):
            start = time.perf_counter()
            shadow(image)
            if index >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def count_gflops(model: YOLOv5, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of one forward pass at ``imgsz`` (see :func:`model_info`)."""
    return model_info(model, imgsz).gflops


def format_table(info: ModelInfo) -> str:
    """The per-layer table and totals as text, for the CLI."""
    header = f"{'idx':>4} {'from':>14} {'module':<10} {'params':>12} {'out_ch':>7} {'GFLOPs':>9}"
    lines = [header, "-" * len(header)]
    for layer in info.layers:
        sources = ",".join(str(s) for s in layer.sources)
        lines.append(f"{layer.index:>4} {sources:>14} {layer.module:<10} {layer.params:>12,} "
                     f"{layer.out_channels:>7} {layer.gflops:>9.3f}")
    lines.append("-" * len(header))
    lines.append(f"{len(info.layers)} layers, {info.params:,} parameters, "
                 f"{info.gflops:.2f} GFLOPs at {info.imgsz[0]}x{info.imgsz[1]}")
    return "\n".join(lines)
