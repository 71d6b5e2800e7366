"""How long planning and compaction take, and what folding the removed channels' constant buys.

    python benchmarks/prune_speed.py [--models yolov5s yolov5x] [--repeats 5]
    /tmp/refenv/bin/python benchmarks/prune_speed.py   # with torch-pruning installed there: its column too

Part 1: wall time of ``plan_pruning(ratio=0.5)`` and ``compact`` on CPU, median of ``--repeats``,
one line per model (γ randomized first, so the plan removes real channels rather than ties), and
the first call of the process (cold) beside the median (warm). Where Torch-Pruning is installed
(a scratch environment: yolo_slim does not depend on it), the same model pruned by the same ratio
with its ``MagnitudePruner`` and ``BNScaleImportance`` (global ranking, Detect's output convs
ignored), timed from the model to the pruned model (dependency graph + ``step()``) on a fresh copy
each time, the copy not timed; yolo_slim's plan + compact does not modify its input.

Part 2, bias folding: on yolov5n with random BatchNorm statistics, zero γ (but not β) of every
channel a ratio-0.5 plan removes. Those channels then emit the constant act(β), so the dense
model's output depends on them; ``compact(fold_removed=True)`` folds that constant into the
consumers, ``fold_removed=False`` drops it. Printed: max |pruned - dense| for each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from yolo_slim.models import YOLOv5, count_parameters
from yolo_slim.models.testing import randomize_norms
from yolo_slim.slim import PruningPlan, compact, plan_pruning, trace_channels


def time_pruning(name: str, repeats: int, ratio: float) -> tuple[float, float, float, int, int]:
    """Median seconds of plan and of compact, the first call's total, and the parameters before and after."""
    torch.manual_seed(0)
    model = randomize_norms(YOLOv5(name, nc=80))
    plan_seconds, compact_seconds = [], []
    small = model
    for _ in range(repeats + 1):
        start = time.perf_counter()
        plan = plan_pruning(model, ratio=ratio)
        middle = time.perf_counter()
        small = compact(model, plan)
        plan_seconds.append(middle - start)
        compact_seconds.append(time.perf_counter() - middle)
    cold = plan_seconds[0] + compact_seconds[0]
    return statistics.median(plan_seconds[1:]), statistics.median(compact_seconds[1:]), cold, \
        count_parameters(model), count_parameters(small)


def time_torch_pruning(name: str, repeats: int, ratio: float) -> tuple[float, float, int] | None:
    """Torch-Pruning's median and first seconds for the same model and ratio, and its parameters after."""
    try:
        import torch_pruning
    except ImportError:
        return None
    import copy

    torch.manual_seed(0)
    model = randomize_norms(YOLOv5(name, nc=80)).eval()
    example = torch.zeros(1, 3, 640, 640)
    seconds, pruned = [], model
    for _ in range(repeats + 1):
        pruned = copy.deepcopy(model)
        start = time.perf_counter()
        pruner = torch_pruning.pruner.MagnitudePruner(
            pruned, example, importance=torch_pruning.importance.BNScaleImportance(), pruning_ratio=ratio,
            global_pruning=True, ignored_layers=list(pruned.detect.m))
        pruner.step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:]), seconds[0], count_parameters(pruned)


def _silence_removed_scales(model: YOLOv5, plan: PruningPlan) -> None:
    """γ = 0 on every removed channel of every member of its group; β stays, so act(β) flows on."""
    graph = trace_channels(model.spec, plan.policy)
    with torch.no_grad():
        for name, group in graph.groups.items():
            removed = sorted(set(range(group.size)) - set(plan.keep[name]))
            for producer in group.members:
                model.model.get_submodule(producer).bn.weight[removed] = 0


def folding_error(imgsz: int, ratio: float) -> tuple[float, float, float]:
    """Max |pruned - dense| with and without folding, and the largest dense output for scale."""
    torch.manual_seed(0)
    model = randomize_norms(YOLOv5("yolov5n", nc=80))
    plan = plan_pruning(model, ratio=ratio)
    _silence_removed_scales(model, plan)
    images = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)  # (B, N, 85)
        folded = (compact(model, plan, fold_removed=True)(images) - expected).abs().max()
        unfolded = (compact(model, plan, fold_removed=False)(images) - expected).abs().max()
    return float(folded), float(unfolded), float(expected.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov5s", "yolov5x"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--imgsz", type=int, default=320, help="image size of the folding comparison")
    args = parser.parse_args()
    print(f"plan + compact at ratio {args.ratio}, CPU, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}", flush=True)
    for name in args.models:
        plan_time, compact_time, cold, before, after = time_pruning(name, args.repeats, args.ratio)
        print(f"{name:<8} plan {plan_time * 1e3:8.1f} ms  compact {compact_time * 1e3:8.1f} ms  "
              f"total {(plan_time + compact_time) * 1e3:8.1f} ms (first call {cold * 1e3:.1f} ms)  "
              f"params {before:,} -> {after:,}", flush=True)
        theirs = time_torch_pruning(name, args.repeats, args.ratio)
        if theirs is not None:
            warm, first, pruned = theirs
            print(f"{'':<8} Torch-Pruning MagnitudePruner + BNScaleImportance: {warm * 1e3:8.1f} ms "
                  f"(first call {first * 1e3:.1f} ms), params -> {pruned:,}; yolo_slim is "
                  f"{warm / (plan_time + compact_time):.1f}x faster warm, {first / cold:.1f}x cold", flush=True)
    folded, unfolded, scale = folding_error(args.imgsz, args.ratio)
    print(f"bias folding, yolov5n, removed channels with γ=0 and β kept, ratio {args.ratio}, "
          f"{args.imgsz}x{args.imgsz}, batch 2 (largest dense output {scale:.1f}):")
    print(f"  max |pruned - dense|  fold_removed=True: {folded:.4g}   fold_removed=False: {unfolded:.4g}")


if __name__ == "__main__":
    main()
