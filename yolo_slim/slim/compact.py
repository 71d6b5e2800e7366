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

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from yolo_slim.models import ModelSpec, YOLOv5
from yolo_slim.models.activations import make_activation
from yolo_slim.models.fuse import require_unfused
from yolo_slim.models.registry import block_type
from yolo_slim.slim.graph import ChannelGraph, Consumer, trace_channels
from yolo_slim.slim.plan import PruningPlan
from yolo_slim.slim.rules import resize_block


def pruned_spec(spec: ModelSpec, plan: PruningPlan) -> ModelSpec:
    """The architecture after pruning: every producer's width set to its group's kept count.

    Raises:
        ValueError: the plan does not match the spec's groups.
    """
    graph = trace_channels(spec, plan.policy)
    _check_plan(graph, plan)
    width = {producer: len(plan.keep[group.name]) for group in graph.groups.values() for producer in group.members}
    # Output widths from the plan, then input widths from the new output widths, layer by layer.
    channels: list[int] = []
    resized = []
    for index, layer in enumerate(spec.layers):
        block = block_type(layer.module)
        inputs = [spec.in_channels if s < 0 else channels[s] for s in layer.sources]
        params = block.set_inputs(resize_block(layer.module, copy.deepcopy(layer.params), str(index), width), inputs)
        resized.append(dataclasses.replace(layer, params=params))
        channels.append(block.output_channels(params, inputs))
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
        ``plan``; SyncBatchNorm stays SyncBatchNorm, and a parameter frozen in ``model``
        (``requires_grad=False``) stays frozen: call ``requires_grad_(True)`` to train a compacted EMA copy.
    """
    if not isinstance(model, YOLOv5) or not isinstance(plan, PruningPlan):
        raise TypeError(f"compact takes a yolo_slim YOLOv5 and a PruningPlan (from plan_pruning on it), found "
                        f"{type(model).__name__} and {type(plan).__name__}")
    require_unfused(model, "compact")
    graph = trace_channels(model.spec, plan.policy)
    spec = pruned_spec(model.spec, plan)
    reference = next(model.parameters())
    # Built with the weight initialisers switched off (every tensor is overwritten below): they were
    # two thirds of the build, and the build most of compact's time. Everything the loop does not copy
    # (the anchors, Detect's stride, the insides of blocks left whole) is copied after it.
    with _initialisers_skipped():
        small = YOLOv5.from_spec(spec, names=list(model.names), pruning_history=[*model.pruning_history,
                                                                                 plan.to_dict()])
    if (reference.device, reference.dtype) != (torch.device("cpu"), torch.get_default_dtype()):
        # Fresh storage where the model lives, not a copy of the uninitialised CPU tensors.
        small = small._apply(lambda t: torch.empty(t.shape, device=reference.device,
                                                   dtype=reference.dtype if t.is_floating_point() else t.dtype))
    channels = _Channels(model, graph, plan, reference.device, fold=fold_removed)
    keep = {producer: channels.kept[group.name] for group in graph.groups.values() for producer in group.members}
    with torch.no_grad():
        for consumer in graph.consumers:
            columns, removed, constants = channels.columns(consumer)
            source = model.model.get_submodule(consumer.path)
            target = small.model.get_submodule(consumer.path)
            # index_select, not advanced indexing: several times faster on large conv weights.
            grouped = not consumer.detect and source.conv.groups != 1
            if consumer.detect:
                target.weight.copy_(source.weight.index_select(1, columns))
                target.bias.copy_(source.bias)
            elif grouped:
                # A grouped conv's weight holds in/groups input channels: the tracer froze all of them and
                # all its outputs, so it is copied whole (the check below guards that promise).
                _require_whole(consumer.path, keep[consumer.path], columns, source.conv)
                target.conv.weight.copy_(source.conv.weight)
                _copy_norm(source.bn, target.bn, keep[consumer.path])
            else:
                rows = keep[consumer.path]
                target.conv.weight.copy_(source.conv.weight.index_select(0, rows).index_select(1, columns))
                _copy_norm(source.bn, target.bn, rows)
            if fold_removed and not grouped:  # a grouped conv loses no inputs
                _fold_removed_inputs(source.weight if consumer.detect else source.conv.weight, removed, constants,
                                     target, None if consumer.detect else keep[consumer.path])
        _copy_unwritten(model, small, graph)
    # A fresh build trains every parameter: keep what the caller froze (a backbone, an average's copy).
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    for name, parameter in small.named_parameters():
        parameter.requires_grad_(name not in frozen)
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


def _require_whole(path: str, rows: torch.Tensor, columns: torch.Tensor, conv: nn.Conv2d) -> None:
    if len(rows) != conv.out_channels or len(columns) != conv.in_channels:
        raise ValueError(f"the plan prunes the grouped convolution at {path}, which must be kept whole")


def _copy_unwritten(model: YOLOv5, small: YOLOv5, graph: ChannelGraph) -> None:
    """Copy every tensor the consumer loop did not write (the anchors and strides, the insides of blocks
    left whole: a transformer, a custom block) from ``model`` as it is; its shape must not have changed."""
    units = {f"model.{c.path}" for c in graph.consumers if not c.detect}  # their conv.weight, bn.*
    heads = {f"model.{c.path}" for c in graph.consumers if c.detect}  # weight, bias
    for name, tensor in [*small.named_parameters(), *small.named_buffers()]:
        if name.rsplit(".", 2)[0] in units or name.rsplit(".", 1)[0] in heads:
            continue
        owner, _, attribute = name.rpartition(".")
        dense = getattr(model.get_submodule(owner), attribute, None)
        if not isinstance(dense, torch.Tensor) or dense.shape != tensor.shape:
            raise ValueError(f"compaction cannot fill {name}: the plan changed the width of a tensor no slimming "
                             f"rule resizes (dense {tuple(dense.shape) if isinstance(dense, torch.Tensor) else None}, "
                             f"pruned {tuple(tensor.shape)})")
        tensor.copy_(dense)


def _copy_norm(source: nn.BatchNorm2d, target: nn.BatchNorm2d, rows: torch.Tensor) -> None:
    target.weight.copy_(source.weight.index_select(0, rows))
    target.bias.copy_(source.bias.index_select(0, rows))
    target.running_mean.copy_(source.running_mean.index_select(0, rows))
    target.running_var.copy_(source.running_var.index_select(0, rows))
    target.num_batches_tracked.copy_(source.num_batches_tracked)


@contextlib.contextmanager
def _initialisers_skipped() -> Iterator[None]:
    """Module construction without the random initialisation of convs, linears, attention and norms.

    torch has no switch for this (``torch.device("meta")`` still runs the initialisers, on meta tensors,
    through a Python dispatch mode: no faster); the same temporary swap of ``reset_parameters`` is what
    Hugging Face's ``no_init_weights`` does. Only for networks whose every tensor is then overwritten.
    """
    swapped = [(_ConvNd, "reset_parameters"), (_NormBase, "reset_parameters"), (_NormBase, "reset_running_stats"),
               (nn.Linear, "reset_parameters"), (nn.MultiheadAttention, "_reset_parameters")]
    saved = [(owner, name, owner.__dict__[name]) for owner, name in swapped]
    try:
        for owner, name in swapped:
            setattr(owner, name, _no_initialisation)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _no_initialisation(module: nn.Module) -> None:
    return None


@functools.lru_cache(maxsize=None)
def _activation(name: str) -> nn.Module:
    return make_activation(name)  # stateless: one module per activation serves every call


class _Channels:
    """Per group its kept and removed channel indices, and per producer the constant ``act(β)`` a removed
    channel still emits, each computed once per compaction (a network has many more consumers than groups)."""

    def __init__(self, model: YOLOv5, graph: ChannelGraph, plan: PruningPlan, device: torch.device,
                 fold: bool = True) -> None:
        self.model, self.graph, self.device, self.fold = model, graph, device, fold
        self.kept = {name: torch.tensor(plan.keep[name], dtype=torch.long, device=device) for name in graph.groups}
        self.removed = {}
        for name, group in graph.groups.items():
            mask = torch.ones(group.size, dtype=torch.bool)
            mask[plan.keep[name]] = False
            self.removed[name] = mask.nonzero().flatten().to(device)
        self._constants: dict[str, torch.Tensor] = {}

    def columns(self, consumer: Consumer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The consumer's kept input channels, its removed ones (dense numbering) and their constants."""
        kept, removed, constants, offset = [], [], [], 0
        for segment in consumer.segments:
            if segment.group is None:
                kept.append(torch.arange(offset, offset + segment.size, device=self.device))
            else:
                kept.append(self.kept[segment.group] + offset)
                lost = self.removed[segment.group]
                if self.fold and len(lost) and segment.sources:
                    removed.append(lost + offset)
                    constants.append(sum(self._constant(p) for p in segment.sources)[lost])
            offset += segment.size
        if not removed:
            return torch.cat(kept), torch.empty(0, dtype=torch.long), torch.empty(0)
        return torch.cat(kept), torch.cat(removed), torch.cat(constants)

    def _constant(self, producer: str) -> torch.Tensor:
        if producer not in self._constants:
            bias = self.model.model.get_submodule(producer).bn.bias.detach()
            activation = self.graph.activations[producer]
            self._constants[producer] = _activation(activation)(bias) if activation is not None else bias
        return self._constants[producer]


def _fold_removed_inputs(weight: torch.Tensor, removed: torch.Tensor, constants: torch.Tensor,
                         target: nn.Module, rows: torch.Tensor | None) -> None:
    """Fold the constants the removed input channels still carry into the consumer (weight: (out, in, k, k))."""
    if not len(removed):
        return
    # (out,) shift of the conv output: each removed input's constant through the kernel's sum.
    shift = weight.index_select(1, removed).sum(dim=(2, 3)) @ constants.to(weight.dtype)
    if rows is None:  # Detect output conv: a plain bias
        target.bias.add_(shift)
    else:  # BN computes (conv - mean): a lost +shift is the same as a mean lowered by it
        target.bn.running_mean.sub_(shift[rows])
