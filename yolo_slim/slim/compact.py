"""Physical compaction: build the smaller network a plan describes and copy the kept weights into it.

Every conv keeps the rows (output channels) of its own group's kept indices and the columns
(input channels) its input segments keep; every BatchNorm keeps its group's indices; the Detect
output convs keep all outputs. The result is a plain :class:`YOLOv5` built from a rewritten spec,
so ``YOLOv5.from_spec(small.spec)`` rebuilds it empty and ``small.state_dict()`` loads into that
with ``strict=True``.

Bias compensation: a removed channel whose γ is ~0 still emits the constant ``act(β)`` (summed over
a residual stream's members) into its consumers. For each consumer that constant times the
consumer's weights (summed over the kernel) is a constant per output channel, folded into the
consumer's BatchNorm running mean (or the Detect conv's bias). This is exact for 1x1 consumers;
for 3x3 consumers it is exact away from the image border, where zero padding replaced the constant.
In training mode BatchNorm subtracts the batch mean, which absorbs such constants anyway.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from yolo_slim.models import ModelSpec, YOLOv5
from yolo_slim.models.fuse import require_unfused
from yolo_slim.models.spec import LayerSpec
from yolo_slim.slim.graph import ChannelGraph, Consumer, trace_channels
from yolo_slim.slim.plan import PruningPlan


def pruned_spec(spec: ModelSpec, plan: PruningPlan) -> ModelSpec:
    """The architecture after pruning: every producer's width set to its group's kept count.

    Raises:
        ValueError: the plan does not match the spec's groups.
    """
    graph = trace_channels(spec, plan.policy)
    _check_plan(graph, plan)
    width = {producer: len(plan.keep[group.name]) for group in graph.groups.values() for producer in group.members}
    layers = [_resize_layer(index, layer, width) for index, layer in enumerate(spec.layers)]
    # Input widths follow from the new output widths, layer by layer.
    channels: list[int] = []
    resized = []
    for layer in layers:
        inputs = [spec.in_channels if s < 0 else channels[s] for s in layer.sources]
        params = dict(layer.params)
        if layer.module == "Detect":
            params["in_channels"] = inputs
        elif "in_channels" in params:
            params["in_channels"] = sum(inputs)
        layer = dataclasses.replace(layer, params=params)
        resized.append(layer)
        channels.append(_output_width(layer, inputs))
    return dataclasses.replace(spec, layers=tuple(resized))


def compact(model: YOLOv5, plan: PruningPlan, fold_removed: bool = True) -> YOLOv5:
    """A new, physically smaller YOLOv5 holding the kept channels of ``model`` (which is untouched).

    Args:
        model: The network to prune.
        plan: From :func:`~yolo_slim.slim.plan.plan_pruning` on this architecture.
        fold_removed: Fold the constant output of removed channels into their consumers.

    Returns:
        The compacted network on ``model``'s device and dtype, in ``model``'s train/eval mode,
        with its anchors, strides, nc and class names, and ``model``'s ``pruning_history`` plus
        ``plan``; SyncBatchNorm stays SyncBatchNorm.
    """
    require_unfused(model, "compact")
    graph = trace_channels(model.spec, plan.policy)
    spec = pruned_spec(model.spec, plan)
    reference = next(model.parameters())
    # Built on the meta device, then given uninitialised storage: the random initialisation of every
    # weight, all overwritten below, was a third of compact's time. Everything the loop does not copy
    # is set after it (Detect's stride, its only non-persistent buffer, and the anchors).
    with torch.device("meta"):
        small = YOLOv5.from_spec(spec, names=list(model.names), pruning_history=[*model.pruning_history,
                                                                                 plan.to_dict()])
    # Module._apply with plain torch.empty, not Module.to_empty: to_empty's empty_like on meta tensors goes
    # through torch's Python reference implementations, whose first use imports sympy (0.4 s, cold).
    small = small._apply(lambda t: torch.empty(t.shape, device=reference.device,
                                               dtype=reference.dtype if t.is_floating_point() else t.dtype))
    keep = {producer: torch.tensor(plan.keep[group.name], device=reference.device)
            for group in graph.groups.values() for producer in group.members}
    with torch.no_grad():
        for consumer in graph.consumers:
            columns = _input_indices(consumer, plan, reference.device)
            source = model.model.get_submodule(consumer.path)
            target = small.model.get_submodule(consumer.path)
            # index_select, not advanced indexing: several times faster on large conv weights.
            if consumer.detect:
                target.weight.copy_(source.weight.index_select(1, columns))
                target.bias.copy_(source.bias)
            else:
                rows = keep[consumer.path]
                target.conv.weight.copy_(source.conv.weight.index_select(0, rows).index_select(1, columns))
                _copy_norm(source.bn, target.bn, rows)
            if fold_removed:
                _fold_removed_inputs(model, graph, consumer, columns, source, target,
                                     None if consumer.detect else keep[consumer.path])
        small.detect.anchors.copy_(model.detect.anchors)
        small.detect.stride.copy_(model.detect.stride)
    if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        small = nn.SyncBatchNorm.convert_sync_batchnorm(small)
    return small.train(model.training)


def _check_plan(graph: ChannelGraph, plan: PruningPlan) -> None:
    expected = {name: group.size for name, group in graph.groups.items()}
    if not plan.fits(graph):
        raise ValueError("the plan was made for a different architecture (its groups or their sizes differ); "
                         "plan and compact the same model")
    for name, kept in plan.keep.items():
        if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= expected[name]:
            raise ValueError(f"plan keeps invalid channels for group {name!r}: {kept} (size {expected[name]})")
        if graph.groups[name].frozen and len(kept) != expected[name]:
            raise ValueError(f"plan prunes group {name!r}, which policy {plan.policy!r} keeps whole")


def _resize_layer(index: int, layer: LayerSpec, width: dict[str, int]) -> LayerSpec:
    params = copy.deepcopy(layer.params)
    prefix = f"{index}"
    if layer.module == "Conv":
        params["out_channels"] = width[prefix]
    elif layer.module == "Focus":
        params["out_channels"] = width[f"{prefix}.conv"]
    elif layer.module == "C3":
        params["cv1_channels"] = width[f"{prefix}.cv1"]
        params["cv2_channels"] = width[f"{prefix}.cv2"]
        params["bottlenecks"] = [[width[f"{prefix}.m.{j}.cv1"], width[f"{prefix}.m.{j}.cv2"]]
                                 for j in range(len(params["bottlenecks"]))]
        params["out_channels"] = width[f"{prefix}.cv3"]
    elif layer.module in ("SPP", "SPPF", "Bottleneck"):
        params["hidden_channels"] = width[f"{prefix}.cv1"]
        params["out_channels"] = width[f"{prefix}.cv2"]
    return dataclasses.replace(layer, params=params)


def _output_width(layer: LayerSpec, inputs: list[int]) -> int:
    if "out_channels" in layer.params:
        return layer.params["out_channels"]
    return sum(inputs) if layer.module == "Concat" else (inputs[0] if inputs else 0)


def _input_indices(consumer: Consumer, plan: PruningPlan, device: torch.device) -> torch.Tensor:
    """Indices of the consumer's input channels that survive, in the dense input's numbering."""
    pieces, offset = [], 0
    for segment in consumer.segments:
        kept = plan.keep[segment.group] if segment.group is not None else range(segment.size)
        pieces.append(torch.tensor([offset + i for i in kept], dtype=torch.long))
        offset += segment.size
    return torch.cat(pieces).to(device)


def _copy_norm(source: nn.BatchNorm2d, target: nn.BatchNorm2d, rows: torch.Tensor) -> None:
    target.weight.copy_(source.weight.index_select(0, rows))
    target.bias.copy_(source.bias.index_select(0, rows))
    target.running_mean.copy_(source.running_mean.index_select(0, rows))
    target.running_var.copy_(source.running_var.index_select(0, rows))
    target.num_batches_tracked.copy_(source.num_batches_tracked)


def _removed_constants(model: YOLOv5, graph: ChannelGraph, consumer: Consumer) -> torch.Tensor:
    """What each dense input channel of ``consumer`` carries when its γ is zero: Σ act(β) over its sources."""
    values = []
    for segment in consumer.segments:
        total = None
        for producer in segment.sources:
            bias = model.model.get_submodule(producer).bn.bias.detach()
            value = nn.functional.silu(bias) if graph.activations[producer] else bias
            total = value if total is None else total + value
        values.append(total if total is not None else torch.zeros(segment.size, device=model.detect.anchors.device))
    return torch.cat(values)


def _fold_removed_inputs(model: YOLOv5, graph: ChannelGraph, consumer: Consumer, columns: torch.Tensor,
                         source: nn.Module, target: nn.Module, rows: torch.Tensor | None) -> None:
    weight = source.weight if consumer.detect else source.conv.weight  # (out, in, k, k)
    removed = torch.ones(weight.shape[1], dtype=torch.bool, device=weight.device)
    removed[columns] = False
    if not removed.any():
        return
    constants = _removed_constants(model, graph, consumer).to(weight.dtype)  # (in,)
    # (out,) shift of the conv output: each removed input's constant through the kernel's sum.
    shift = weight.sum(dim=(2, 3))[:, removed] @ constants[removed]
    if rows is None:  # Detect output conv: a plain bias
        target.bias.add_(shift)
    else:  # BN computes (conv - mean): a lost +shift is the same as a mean lowered by it
        target.bn.running_mean.sub_(shift[rows])
