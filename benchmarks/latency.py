"""CPU inference latency of a dense YOLOv5 and its pruned versions, in torch and in onnxruntime.

    python benchmarks/latency.py [--model yolov5s] [--imgsz 640] [--runs 10] [--threads N]

Batch 1, float32, median of ``--runs`` timed runs after ``--warmup`` untimed ones. torch runs the
eval model under ``no_grad``; onnxruntime runs the file from ``export_onnx`` with its default graph
optimizations (which fuse Conv+BN). Both use ``--threads`` intra-op threads (default: all cores).

Pruned models come from ``plan_pruning(ratio=r, round_to=k, min_channels=8)`` on a model whose
BatchNorm γ are drawn at random (there is no sparse-trained checkpoint here). Random γ are i.i.d.,
so each layer loses about the global ratio of its channels (min_channels and rounding aside); a
sparse-trained model prunes its layers unevenly, and which channels go differs too. Latency depends
on the kept widths, not on which channels were kept, so the table measures uniform pruning at each
ratio, and in particular what ``round_to=8`` versus odd widths (``round_to=1``) does to the kernels.

Run it on an otherwise idle machine: when other processes hold the cores, torch's intra-op threads
wait on each other at every op and its figures jump tenfold (seen here with 2 threads on 2 busy
cores: 0.2 s became 2.8 s per image, at random between models); onnxruntime suffered far less.
``--threads 1`` gives steadier figures on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnxruntime
import torch
from random_norms import randomize_norms

from yolo_slim.models import YOLOv5, count_gflops, count_parameters
from yolo_slim.models.export import export_onnx
from yolo_slim.slim import compact, plan_pruning

RATIOS = (0.3, 0.5, 0.7)
ROUNDINGS = (8, 1)


@dataclass(frozen=True)
class Row:
    ratio: float
    round_to: int | None  # None: the dense model
    params: int
    gflops: float
    torch_ms: float
    ort_ms: float


def _median_ms(step, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(model: YOLOv5, folder: Path, imgsz: int, runs: int, warmup: int, threads: int) -> tuple[float, float]:
    """Median milliseconds per image (batch 1) in torch and in onnxruntime."""
    images = torch.rand(1, 3, imgsz, imgsz)  # (B, C, H, W)
    with torch.no_grad():
        torch_ms = _median_ms(lambda: model(images), runs, warmup)
    path = export_onnx(model, folder / "model.onnx", imgsz=imgsz)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}
    ort_ms = _median_ms(lambda: session.run(None, feed), runs, warmup)
    return torch_ms, ort_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense = randomize_norms(YOLOv5(args.model, nc=80))
    variants = [(0.0, None, dense)]
    for ratio in RATIOS:
        for round_to in ROUNDINGS:
            plan = plan_pruning(dense, ratio=ratio, round_to=round_to, min_channels=8)
            variants.append((ratio, round_to, compact(dense, plan)))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for ratio, round_to, model in variants:
            torch_ms, ort_ms = measure(model, Path(folder), args.imgsz, args.runs, args.warmup, args.threads)
            rows.append(Row(ratio, round_to, count_parameters(model), count_gflops(model, args.imgsz),
                            torch_ms, ort_ms))
    print(f"{args.model} {args.imgsz}x{args.imgsz}, batch 1, CPU, {args.threads} threads, median of {args.runs} "
          f"runs after {args.warmup} warm-up; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(_table(rows))


def _table(rows: list[Row]) -> str:
    header = (f"{'ratio':>5} {'round_to':>8} {'params':>11} {'GFLOPs':>7} {'FLOPs/dense':>11} {'torch ms':>9} "
              f"{'torch/dense':>11} {'ort ms':>8} {'ort/dense':>9}")
    lines = [header, "-" * len(header)]
    dense = rows[0]
    for row in rows:
        round_to = "dense" if row.round_to is None else str(row.round_to)
        lines.append(f"{row.ratio:>5.1f} {round_to:>8} {row.params:>11,} {row.gflops:>7.2f} "
                     f"{row.gflops / dense.gflops:>11.3f} {row.torch_ms:>9.1f} {row.torch_ms / dense.torch_ms:>11.2f} "
                     f"{row.ort_ms:>8.1f} {row.ort_ms / dense.ort_ms:>9.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
