"""GPU latency of a dense YOLOv5 and its pruned copies: eager, CUDA graphs, torch.compile, onnxruntime.

    python benchmarks/gpu_latency.py [--model yolov5s] [--imgsz 640] [--batch-sizes 1 32 128]
        [--ratios 0.3 0.5 0.7] [--roundings 8 32] [--compile-mode reduce-overhead] [--compile-budget-s 240]

One table per batch size, as ``benchmarks/latency.py`` prints on the CPU: per model its parameters
and FLOPs, and per runner the median milliseconds of a forward pass, the ratio to the dense model
and the latency drop over the FLOPs drop (1.0: the latency falls as much as the FLOPs). Every model
runs as deployed: BatchNorm folded into the convolutions (``fuse_batchnorm``), channels-last,
``--dtype`` (fp16 by default). Runners:

* ``eager``: the module under ``inference_mode``, one kernel launch per op from Python;
* ``graph``: the same kernels captured once in a CUDA graph (``torch.cuda.graph``) and replayed, so
  the CPU's launch cost is gone: where ``eager`` is launch-bound (small batches, small models) the
  difference between the two is that cost, and pruning cannot remove it;
* ``compile``: ``torch.compile(mode=--compile-mode)`` (Inductor: fused elementwise kernels; in
  ``reduce-overhead`` mode CUDA graphs as well), one compilation per model and batch size, in the
  order batch by batch until ``--compile-budget-s`` is spent (later cells print "-");
* ``ort``: onnxruntime's CUDA execution provider on the fp32 ONNX file, when onnxruntime-gpu is
  installed (the CPU-only build has no such provider: the column is left out and a line says why).

Pruned copies come from the dense model with random BatchNorm γ (``yolo_slim/models/testing.py``), so
each layer loses about the global ratio of its channels, kept widths rounded to ``--roundings``.
Timings: CUDA events around each run after warm-up runs; on a machine without CUDA (``--device
cpu``, a dry run of the script) wall-clock time and no ``graph`` column.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy
import torch
from latency import Row, latency_table, pruned_variants

from yolo_slim.models import YOLOv5, count_gflops, count_parameters, fuse_batchnorm
from yolo_slim.models.export import export_onnx

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}


def median_ms(step: Callable[[], object], device: torch.device, runs: int, warmup: int = 10) -> float:
    """Median milliseconds of ``step()``: CUDA events around each run on CUDA, else the wall clock."""
    with torch.inference_mode():
        for _ in range(warmup):
            step()
        times = []
        for _ in range(runs):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end))
            else:
                started = time.perf_counter()
                step()
                times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def cuda_latency_ms(model: torch.nn.Module, image: torch.Tensor, runs: int) -> float:
    """Median milliseconds of ``model(image)`` in eager mode (CUDA events, after 10 warm-ups)."""
    return median_ms(lambda: model(image), image.device, runs)


def graphed(model: torch.nn.Module, image: torch.Tensor) -> Callable[[], object]:
    """``model(image)`` captured in a CUDA graph: the returned step replays it (same input buffer)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream, as capture requires: cuDNN picks its kernels here
            model(image)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(image)
    return graph.replay


def compiled(model: torch.nn.Module, image: torch.Tensor, mode: str) -> tuple[Callable[[], object], float]:
    """``torch.compile(model)`` for this input's shape, compiled now; returns the step and the seconds it took."""
    function = torch.compile(model, mode=mode, dynamic=False)
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(3):  # reduce-overhead records its CUDA graph on a later call than the first
            function(image)
    if image.device.type == "cuda":
        torch.cuda.synchronize(image.device)
    return (lambda: function(image)), time.perf_counter() - started


def onnxruntime_step(model: YOLOv5, image: torch.Tensor, folder: Path) -> Callable[[], object] | None:
    """onnxruntime's CUDA provider on the fp32 ONNX file, input and output bound on the GPU; None without it."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return None
    path = export_onnx(model, folder / f"{id(model)}.onnx", imgsz=image.shape[-1])
    session = onnxruntime.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    binding = session.io_binding()
    source = image.float().contiguous()  # NCHW fp32, the file's input; kept alive by the closure below
    binding.bind_input("images", "cuda", 0, numpy.float32, tuple(source.shape), source.data_ptr())
    binding.bind_output(session.get_outputs()[0].name, "cuda")
    return lambda: (source, session.run_with_iobinding(binding))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--roundings", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--runners", nargs="+", choices=("eager", "graph", "compile", "ort"),
                        default=["eager", "graph", "compile", "ort"])
    parser.add_argument("--compile-mode", default="reduce-overhead")
    parser.add_argument("--compile-budget-s", type=float, default=240.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    runners = [runner for runner in args.runners if device.type == "cuda" or runner not in ("graph", "ort")]
    torch.manual_seed(0)
    variants = pruned_variants(args.model, tuple(args.ratios), tuple(args.roundings))
    deployed = [fuse_batchnorm(model).to(device, dtype, memory_format=torch.channels_last)
                for _, _, model in variants]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}: {args.model} {args.imgsz}x{args.imgsz}, {args.dtype}, BatchNorm folded, channels-last; median "
          f"of {args.runs} runs; torch {torch.__version__}; compile mode {args.compile_mode}", flush=True)
    compile_left = args.compile_budget_s
    with tempfile.TemporaryDirectory() as folder:
        for batch in args.batch_sizes:
            image = torch.rand(batch, 3, args.imgsz, args.imgsz, device=device, dtype=dtype
                               ).contiguous(memory_format=torch.channels_last)
            rows, notes = [], []
            for (ratio, round_to, model), network in zip(variants, deployed):
                ms: dict[str, float | None] = {}
                if "eager" in runners:
                    ms["eager"] = median_ms(lambda: network(image), device, args.runs)
                if "graph" in runners:
                    ms["graph"] = median_ms(graphed(network, image), device, args.runs)
                if "compile" in runners and compile_left > 0:
                    step, seconds = compiled(network, image, args.compile_mode)
                    compile_left -= seconds
                    ms["compile"] = median_ms(step, device, args.runs)
                    notes.append(f"{seconds:.0f}")
                if "ort" in runners:
                    step = onnxruntime_step(model, image, Path(folder))
                    ms["ort"] = None if step is None else median_ms(step, device, args.runs)
                rows.append(Row(ratio, round_to, count_parameters(model), count_gflops(model, args.imgsz), ms))
            print(f"\nbatch {batch}" + (f" (compile seconds per row: {', '.join(notes)})" if notes else ""))
            print(latency_table(rows, tuple(runners)), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "ort" in runners and all(row.ms.get("ort") is None for row in rows):
        import onnxruntime

        print(f"ort: no CUDAExecutionProvider in this onnxruntime {onnxruntime.__version__} "
              f"(providers: {', '.join(onnxruntime.get_available_providers())}); onnxruntime-gpu is not installed")


if __name__ == "__main__":
    main()
