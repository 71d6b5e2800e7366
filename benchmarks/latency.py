"""CPU inference latency of a dense YOLOv5 and its pruned versions, in torch and in onnxruntime.

    python benchmarks/latency.py [--model yolov5s] [--imgsz 640] [--runs 15] [--threads N]

Batch 1, float32, median of ``--runs`` timed runs after ``--warmup`` untimed ones. Three ways of
running each model:

* ``eager``: the training-form module under ``inference_mode`` (NCHW, separate BatchNorms);
* ``deploy``: what ``cpu_latency_ms`` (and so every ``summary.json``) measures: BatchNorms folded
  into the convolutions (``fuse_batchnorm``) and channels-last memory format;
* ``ort``: onnxruntime on the file from ``export_onnx``, default graph optimizations (which fold
  Conv+BN and use blocked channel layouts).

The timed runs are interleaved (run 1 of every model, then run 2 of every model, ...) so that the
slow drifts of a shared virtual machine hit every model alike instead of whichever ran last.
``drop/FLOPs drop`` is ``(1 - latency/dense) / (1 - FLOPs/dense)``: 1.0 means the latency falls as
much as the FLOPs.

Pruned models come from ``plan_pruning(ratio=r, round_to=k, min_channels=8)`` on a model whose
BatchNorm γ are drawn at random (there is no sparse-trained checkpoint here). Random γ are i.i.d.,
so each layer loses about the global ratio of its channels (min_channels and rounding aside); a
sparse-trained model prunes its layers unevenly, and which channels go differs too. Latency depends
on the kept widths, not on which channels were kept, so the table measures uniform pruning at each
ratio, and what rounding the kept widths to 8 or 16 (AVX-512 holds 16 float32) does against odd
widths (``round_to=1``).

Run it on an otherwise idle machine: when other processes hold the cores, torch's intra-op threads
wait on each other at every op and its figures jump tenfold. ``--threads 1`` gives the steadiest
figures on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnxruntime
import torch

from yolo_slim.models import YOLOv5, count_gflops, count_parameters, fuse_batchnorm
from yolo_slim.models.export import export_onnx
from yolo_slim.models.testing import randomize_norms
from yolo_slim.slim import compact, plan_pruning

RATIOS = (0.3, 0.5, 0.7)
ROUNDINGS = (16, 8, 1)
RUNNERS = ("eager", "deploy", "ort")


@dataclass(frozen=True)
class Row:
    ratio: float
    round_to: int | None  # None: the dense model
    params: int
    gflops: float
    ms: dict[str, float | None]  # runner -> median milliseconds (None: not measured)


def pruned_variants(model: str, ratios: tuple[float, ...], roundings: tuple[int, ...]
                    ) -> list[tuple[float, int | None, YOLOv5]]:
    """``(ratio, round_to, model)``: the dense model (``round_to`` None) with random γ, then its pruned copies."""
    dense = randomize_norms(YOLOv5(model, nc=80))
    variants: list[tuple[float, int | None, YOLOv5]] = [(0.0, None, dense)]
    for ratio in ratios:
        for round_to in roundings:
            plan = plan_pruning(dense, ratio=ratio, round_to=round_to, min_channels=8)
            variants.append((ratio, round_to, compact(dense, plan).eval()))
    return variants


def runners(model: YOLOv5, onnx_path: Path, imgsz: int, threads: int) -> dict[str, Callable[[], object]]:
    """One zero-argument callable per way of running ``model`` on a fixed batch-1 image."""
    images = torch.rand(1, 3, imgsz, imgsz)  # (B, C, H, W)
    deployed = fuse_batchnorm(model).to(memory_format=torch.channels_last)
    images_last = images.contiguous(memory_format=torch.channels_last)
    export_onnx(model, onnx_path, imgsz=imgsz)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}
    return {"eager": lambda: model(images), "deploy": lambda: deployed(images_last),
            "ort": lambda: session.run(None, feed)}


def interleaved_medians(steps: dict[object, Callable[[], object]], runs: int, warmup: int) -> dict[object, float]:
    """Median milliseconds of each step, timing run i of every step before run i + 1 of any."""
    times: dict[object, list[float]] = {key: [] for key in steps}
    with torch.inference_mode():
        for _ in range(warmup):
            for step in steps.values():
                step()
        for _ in range(runs):
            for key, step in steps.items():
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) * 1e3 for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    variants = pruned_variants(args.model, RATIOS, ROUNDINGS)
    with tempfile.TemporaryDirectory() as folder:
        steps = {}
        for index, (_, _, model) in enumerate(variants):
            for runner, step in runners(model, Path(folder) / f"{index}.onnx", args.imgsz, args.threads).items():
                steps[(index, runner)] = step
        medians = interleaved_medians(steps, args.runs, args.warmup)
    rows = [Row(ratio, round_to, count_parameters(model), count_gflops(model, args.imgsz),
                {runner: medians[(index, runner)] for runner in RUNNERS})
            for index, (ratio, round_to, model) in enumerate(variants)]
    print(f"{args.model} {args.imgsz}x{args.imgsz}, batch 1, CPU, {args.threads} threads, median of {args.runs} "
          f"interleaved runs after {args.warmup} warm-up; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print(latency_table(rows, RUNNERS))


def latency_table(rows: list[Row], runners: tuple[str, ...]) -> str:
    """One line per model: size, FLOPs, and per runner its milliseconds, the ratio to the dense model and
    the latency drop over the FLOPs drop; the first row is the dense model. A runner a row lacks prints "-"."""
    header = f"{'ratio':>5} {'round_to':>8} {'params':>11} {'GFLOPs':>7} {'FLOPs/dense':>11}"
    for runner in runners:
        header += f" {runner + ' ms':>10} {'/dense':>6} {'drop/FLOPs drop':>15}"
    lines = [header, "-" * len(header)]
    dense = rows[0]
    for row in rows:
        flops = row.gflops / dense.gflops
        line = (f"{row.ratio:>5.1f} {'dense' if row.round_to is None else row.round_to:>8} {row.params:>11,} "
                f"{row.gflops:>7.2f} {flops:>11.3f}")
        for runner in runners:
            if row.ms.get(runner) is None or dense.ms.get(runner) is None:
                line += f" {'-':>10} {'-':>6} {'-':>15}"
                continue
            latency = row.ms[runner] / dense.ms[runner]
            drop = "" if row.round_to is None else f"{(1 - latency) / (1 - flops):.2f}"
            line += f" {row.ms[runner]:>10.2f} {latency:>6.2f} {drop:>15}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
