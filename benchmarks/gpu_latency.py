"""GPU latency of a dense YOLOv5 and of pruned copies (CUDA events, fp16 and fp32).

    python benchmarks/gpu_latency.py --model yolov5s --imgsz 640 --batch-sizes 1 32

Pruned copies come from the dense model with randomised BatchNorm γ (so the kept widths spread over
the groups as after sparse training), with and without rounding channel counts to multiples of 8.
"""

from __future__ import annotations

import argparse

import torch

from yolo_slim.models import YOLOv5, count_gflops, count_parameters
from yolo_slim.slim import compact, plan_pruning


def cuda_latency_ms(model: torch.nn.Module, image: torch.Tensor, runs: int) -> float:
    """Median milliseconds of one forward pass on CUDA (events around each run, after 10 warm-ups)."""
    with torch.no_grad():
        for _ in range(10):
            model(image)
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(image)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = YOLOv5(args.model).eval()
    with torch.no_grad():
        for module in dense.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0, 1)
    variants = [("dense", 0.0, 8, dense)]
    for ratio in (0.3, 0.5, 0.7):
        for round_to in (8, 1):
            variants.append((f"ratio {ratio}", ratio, round_to, compact(dense, plan_pruning(dense, ratio=ratio, round_to=round_to))))
    print(f"{torch.cuda.get_device_name()}  {args.model} imgsz={args.imgsz}  median of {args.runs} runs")
    print(f"{'variant':<10} {'round':>5} {'params':>11} {'GFLOPs':>7} {'FLOPs x':>7} " +
          " ".join(f"{f'{dtype} b{b} ms':>13} {'x':>5}" for dtype in ('fp32', 'fp16') for b in args.batch_sizes))
    base_flops = count_gflops(dense, args.imgsz)
    baseline: dict[tuple[str, int], float] = {}
    for name, ratio, round_to, model in variants:
        cells = []
        for dtype, torch_dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            network = model.to("cuda", torch_dtype)
            for batch in args.batch_sizes:
                image = torch.rand(batch, 3, args.imgsz, args.imgsz, device="cuda", dtype=torch_dtype)
                ms = cuda_latency_ms(network.eval(), image, args.runs)
                baseline.setdefault((dtype, batch), ms)
                cells.append(f"{ms:>13.2f} {ms / baseline[(dtype, batch)]:>5.2f}")
            model.float().cpu()
        gflops = count_gflops(model, args.imgsz)
        print(f"{name:<10} {round_to:>5} {count_parameters(model):>11,} {gflops:>7.2f} {gflops / base_flops:>7.2f} "
              + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
