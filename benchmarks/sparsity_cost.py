"""Cost of each sparsity method: its share of the training step time.

    python benchmarks/sparsity_cost.py [--model yolov5n] [--imgsz 160] [--batch-size 16] [--steps 20]

One process, one model; each method's per-step work (``SparsityMethod.step`` and ``after_step``, as
SlimCallback calls them once per optimizer step) timed alone over many calls, and a plain training
step (forward, loss, backward, SGD step) timed for reference; then steps with and without the
method interleaved (so that drift of the machine's speed hits both alike). ``targeted`` is timed
with its choice installed, in the hold phase (shrink plus dropped gradients, on the network and an
EMA copy: its most expensive step). Target: every method under 2% of the step time.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from yolo_slim.lit.sparsity_methods import METHODS, MethodSettings, make_method
from yolo_slim.models import YOLOv5
from yolo_slim.models.loss import LossConfig, YOLOv5Loss
from yolo_slim.slim import plan_pruning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5n")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = YOLOv5(args.model, nc=4).train()
    ema = copy.deepcopy(model)
    loss_fn = YOLOv5Loss(model.detect.anchors, 4, LossConfig().scaled(3, 4, args.imgsz))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.rand(args.batch_size, 3, args.imgsz, args.imgsz)
    targets = torch.tensor([[i % args.batch_size, i % 4, 0.5, 0.5, 0.2, 0.3] for i in range(4 * args.batch_size)])
    methods = {}
    for name in METHODS:
        method = make_method(MethodSettings(method=name, strength=1e-3 if name != "targeted" else 30.0), "grouped")
        method.bind(model, [ema])
        if name == "targeted":
            method.set_choice(plan_pruning(model, ratio=0.5), model)
        methods[name] = method

    def apply(name: str) -> None:
        # progress 0.9: l1/polarize at their constant strength, targeted in its hold phase
        methods[name].step(0.9, 250)
        methods[name].after_step()

    def step(name: str | None) -> float:
        start = time.perf_counter()
        loss, _ = loss_fn(model(images), targets)
        loss.backward()
        if name is not None:
            apply(name)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for _ in range(3):  # warm-up
        step("l1")
    print(f"{args.model} {args.imgsz}px batch {args.batch_size}, {torch.get_num_threads()} threads")
    print("| method | method alone, ms per step | plain step, ms | share of the step | interleaved with/without |")
    print("|---|---:|---:|---:|---:|")
    for name in METHODS:
        plain, penalised = [], []
        for _ in range(args.steps):
            plain.append(step(None))
            penalised.append(step(name))
        for parameter in model.parameters():
            parameter.grad = torch.zeros_like(parameter)
        alone = []
        for _ in range(10 * args.steps):
            started = time.perf_counter()
            apply(name)
            alone.append(time.perf_counter() - started)
        optimizer.zero_grad(set_to_none=True)
        cost, base = statistics.median(alone), statistics.median(plain)
        print(f"| {name} | {cost * 1000:.3f} | {base * 1000:.1f} | {cost / base:.2%} | "
              f"{statistics.median(penalised) / base:.3f} |")


if __name__ == "__main__":
    main()
