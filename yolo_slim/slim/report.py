"""What pruning did to a network: per-layer widths and parameters, total cost, and the γ it was cut on.

A report compares two networks of the same layer structure, normally a dense model and
``compact(dense, plan)``. It is plain data (:meth:`SlimReport.to_dict` is JSON-ready), so a run can
save it next to its checkpoint and a notebook can plot the γ histograms without rebuilding models.

Worked example, yolov5n (nc=80, BatchNorms randomized as in tests/slim/conftest.py) against
``compact(model, plan_pruning(model, ratio=0.5))`` at 640::

    idx module      out_ch   bn_ch          params
      2 C3           32>24   96>80     4,800>3,872    (bn_ch sums cv1, cv2, cv3 and the Bottleneck's two BNs)
    parameters 1,872,157 -> 615,357 (ratio 0.329)
    GFLOPs at 640x640 4.47 -> 1.85 (ratio 0.413)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm  # BatchNorm2d and SyncBatchNorm (a DDP run's network)

from yolo_slim.models import YOLOv5, model_info
from yolo_slim.slim.graph import trace_channels


@dataclass(frozen=True)
class LayerChange:
    """One layer before and after: output channels, summed BatchNorm channels, parameters, GFLOPs."""

    index: int
    module: str
    out_channels_before: int
    out_channels_after: int
    bn_channels_before: int
    bn_channels_after: int
    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float


@dataclass(frozen=True)
class SlimReport:
    """Per-layer changes, totals at ``imgsz`` (height, width), and |γ| of every producer of the dense model.

    Ratios are after / before: 0.4 means 40 % of the parameters (or GFLOPs) remain.
    """

    layers: tuple[LayerChange, ...]
    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float
    imgsz: tuple[int, int]
    gammas: dict[str, list[float]]
    left_whole: dict[int, tuple[str, ...]] = field(default_factory=dict)  # layer -> why (some of) it was not pruned

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 0.0

    @property
    def gflops_ratio(self) -> float:
        return self.gflops_after / self.gflops_before if self.gflops_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: ints, floats, strings, lists and dicts only."""
        return {
            "imgsz": list(self.imgsz),
            "layers": [asdict(layer) for layer in self.layers],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_ratio": self.params_ratio,
            "gflops_before": self.gflops_before,
            "gflops_after": self.gflops_after,
            "gflops_ratio": self.gflops_ratio,
            "gammas": {producer: list(values) for producer, values in self.gammas.items()},
            "left_whole": {str(layer): list(reasons) for layer, reasons in self.left_whole.items()},
        }


def report(before: YOLOv5, after: YOLOv5, imgsz: int | tuple[int, int] = 640) -> SlimReport:
    """Compare a network with its pruned version, layer by layer.

    Args:
        before: The dense (or less pruned) network; its |γ| go into ``gammas``.
        after: The pruned network, e.g. ``compact(before, plan)``.
        imgsz: Input size for the GFLOPs count, an int (square) or (height, width).

    Returns:
        A :class:`SlimReport`; neither model is modified.

    Raises:
        ValueError: the two networks differ in their number of layers, a layer's module type or its
            inputs (pruning changes widths, never the layer structure).
    """
    _check_same_structure(before, after)
    info_before, info_after = model_info(before, imgsz), model_info(after, imgsz)
    layers = tuple(
        LayerChange(index=old.index, module=old.module,
                    out_channels_before=old.out_channels, out_channels_after=new.out_channels,
                    bn_channels_before=_bn_channels(before.model[old.index]),
                    bn_channels_after=_bn_channels(after.model[new.index]),
                    params_before=old.params, params_after=new.params,
                    gflops_before=old.gflops, gflops_after=new.gflops)
        for old, new in zip(info_before.layers, info_after.layers))
    policy = after.pruning_history[-1].get("policy", "grouped") if after.pruning_history else "grouped"
    return SlimReport(layers=layers, params_before=info_before.params, params_after=info_after.params,
                      gflops_before=info_before.gflops, gflops_after=info_after.gflops,
                      imgsz=info_before.imgsz, gammas=producer_gammas(before),
                      left_whole=dict(trace_channels(before.spec, policy).whole_layers))


def format_report(slim_report: SlimReport) -> str:
    """The per-layer table and totals as text, for the CLI and logs."""
    header = (f"{'idx':>4} {'module':<10} {'out_ch':>11} {'bn_ch':>11} {'params':>21} {'GFLOPs':>15}")
    lines = [header, "-" * len(header)]
    for layer in slim_report.layers:
        out_channels = f"{layer.out_channels_before}>{layer.out_channels_after}"
        bn_channels = f"{layer.bn_channels_before}>{layer.bn_channels_after}"
        params = f"{layer.params_before:,}>{layer.params_after:,}"
        gflops = f"{layer.gflops_before:.3f}>{layer.gflops_after:.3f}"
        lines.append(f"{layer.index:>4} {layer.module:<10} {out_channels:>11} {bn_channels:>11} {params:>21} "
                     f"{gflops:>15}")
    lines.append("-" * len(header))
    height, width = slim_report.imgsz
    lines.append(f"parameters {slim_report.params_before:,} -> {slim_report.params_after:,} "
                 f"(ratio {slim_report.params_ratio:.3f})")
    lines.append(f"GFLOPs at {height}x{width} {slim_report.gflops_before:.2f} -> {slim_report.gflops_after:.2f} "
                 f"(ratio {slim_report.gflops_ratio:.3f})")
    if slim_report.left_whole:
        lines.append("channels kept whole (not pruned):")
        lines.extend(f"  layer {layer}: {'; '.join(reasons)}" for layer, reasons in slim_report.left_whole.items())
    return "\n".join(lines)


def _check_same_structure(before: YOLOv5, after: YOLOv5) -> None:
    old_layers, new_layers = before.spec.layers, after.spec.layers
    if len(old_layers) != len(new_layers):
        raise ValueError(f"before and after must share a layer structure: before has {len(old_layers)} layers, "
                         f"after has {len(new_layers)}; compare a model with its own compacted version")
    for index, (old, new) in enumerate(zip(old_layers, new_layers)):
        if (old.module, tuple(old.sources)) != (new.module, tuple(new.sources)):
            raise ValueError(f"before and after must share a layer structure: layer {index} is {old.module} "
                             f"from {old.sources} before but {new.module} from {new.sources} after; compare a "
                             f"model with its own compacted version")


def _bn_channels(layer: nn.Module) -> int:
    return sum(module.num_features for module in layer.modules() if isinstance(module, _BatchNorm))


def producer_gammas(model: YOLOv5) -> dict[str, list[float]]:
    """|γ| of every producer (Conv unit), in graph order: the data of a slimming histogram."""
    graph = trace_channels(model.spec)
    return {producer: model.model.get_submodule(producer).bn.weight.detach().abs().float().cpu().tolist()
            for producer in graph.producers()}
