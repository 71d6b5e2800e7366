"""Cost of the sparsity penalty: training step time with the L1 subgradient over step time without.

    python benchmarks/sparsity_cost.py [--model yolov5n] [--imgsz 160] [--batch-size 16] [--steps 20]

One process, one model, steps with and without ``add_bn_l1_grad`` interleaved (so that drift of the
machine's speed hits both alike); median step times. Target: a ratio of at most 1.02.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from yolo_slim.models import YOLOv5
from yolo_slim.models.loss import LossConfig, YOLOv5Loss
from yolo_slim.slim import add_bn_l1_grad, sparsity_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5n")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = YOLOv5(args.model, nc=4).train()
    loss_fn = YOLOv5Loss(model.detect.anchors, 4, LossConfig().scaled(3, 4, args.imgsz))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = sparsity_target(model)
    images = torch.rand(args.batch_size, 3, args.imgsz, args.imgsz)
    targets = torch.tensor([[i % args.batch_size, i % 4, 0.5, 0.5, 0.2, 0.3] for i in range(4 * args.batch_size)])

    def step(with_penalty: bool) -> float:
        start = time.perf_counter()
        loss, _ = loss_fn(model(images), targets)
        loss.backward()
        if with_penalty:
            add_bn_l1_grad(target, 1e-3)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for _ in range(3):  # warm-up
        step(True)
    plain, penalised, penalty_only = [], [], []
    for _ in range(args.steps):
        plain.append(step(False))
        penalised.append(step(True))
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    for _ in range(args.steps):
        start = time.perf_counter()
        add_bn_l1_grad(target, 1e-3)
        penalty_only.append(time.perf_counter() - start)
    without, with_ = statistics.median(plain), statistics.median(penalised)
    print(f"{args.model} {args.imgsz}px batch {args.batch_size}, {len(target.weights)} BatchNorms, "
          f"{torch.get_num_threads()} threads: step {without * 1000:.1f} ms without, {with_ * 1000:.1f} ms with "
          f"the penalty (ratio {with_ / without:.3f}); the penalty alone {statistics.median(penalty_only) * 1000:.3f} ms")


if __name__ == "__main__":
    main()
