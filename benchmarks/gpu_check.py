"""The GPU checks in one short run (a few minutes on one H100): the `+prune=sparse` flow on CUDA
with 16-mixed, the loss finite through the prune, training images/s before and after pruning,
and the latency of the dense and pruned model at batch 1 and 32.

    python benchmarks/gpu_check.py [--model yolov5s] [--imgsz 320] [--epochs 10] [--prune-epoch 6]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time

import lightning as L
import torch

from gpu_latency import cuda_latency_ms

from yolo_slim.data import YOLODataModule
from yolo_slim.data.synthetic import SyntheticConfig
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.lit.slim_callback import SlimCallback
from yolo_slim.lit.speed import TrainingSpeed
from yolo_slim.models import YOLOv5, count_parameters


class _Watch(L.Callback):
    """Counts the optimizer steps and the non-finite losses among them."""

    def __init__(self) -> None:
        self.non_finite: torch.Tensor | int = 0  # summed on the device: no synchronisation per step
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        self.non_finite = self.non_finite + (~torch.isfinite(outputs["loss"].detach())).int()


def _latency_ms(model: torch.nn.Module, batch: int, imgsz: int, device: str, runs: int = 50) -> float:
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = model.to(device, dtype).eval()
    return cuda_latency_ms(model, torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=dtype), runs)


def _mean(rates: list[float]) -> str:
    return f"{sum(rates) / len(rates):.0f}" if rates else "n/a (no epoch had more than 2 batches)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--prune-epoch", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--latency-imgsz", type=int, default=640)
    parser.add_argument("--num-train", type=int, default=800, help="images of the built-in set (its default)")
    parser.add_argument("--cli-override", action="append", default=[], help="extra override of the CLI run")
    args = parser.parse_args()
    # Without CUDA it runs the same code on the CPU in float32 (a dry run of the script, tiny sizes).
    cuda = torch.cuda.is_available()
    device, accelerator, precision = ("cuda", "gpu", "16-mixed") if cuda else ("cpu", "cpu", "32-true")
    print(torch.cuda.get_device_name() if cuda else "CPU (dry run)", "torch", torch.__version__,
          "lightning", L.__version__, flush=True)
    L.seed_everything(0, workers=True)
    datamodule = YOLODataModule(data=None, imgsz=args.imgsz, batch_size=args.batch_size, workers=args.workers,
                                synthetic=SyntheticConfig(num_train=args.num_train, image_size=args.imgsz))
    module = YOLOv5Module(YOLOv5(args.model, nc=datamodule.nc, names=datamodule.names), imgsz=args.imgsz)
    slim = SlimCallback(prune_epochs=args.prune_epoch, ratio=0.5, imgsz=args.imgsz,  # the default method
                        write_artifacts=False)
    watch, speed = _Watch(), TrainingSpeed()  # speed: the clock of `train`, skipping 2 batches per epoch
    trainer = L.Trainer(max_epochs=args.epochs, accelerator=accelerator, devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[slim, watch, speed],
                        gradient_clip_val=10.0)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    non_finite = int(watch.non_finite)
    print(f"fit: {time.perf_counter() - started:.1f} s, {watch.steps} steps, non-finite losses: {non_finite}")
    print("stages:", json.dumps(slim.stages))
    before = [r for e, r in speed.rates.items() if 0 < e < args.prune_epoch]
    after = [r for e, r in speed.rates.items() if e > args.prune_epoch]
    print(f"training images/s ({args.model}, {args.imgsz}px, batch {args.batch_size}, {precision}): "
          f"dense {_mean(before)}, pruned {_mean(after)}")
    pruned = module.inference_model
    dense = YOLOv5(args.model, nc=datamodule.nc)
    for batch in (1, 32):
        dense_ms, pruned_ms = (_latency_ms(model, batch, args.latency_imgsz, device) for model in (dense, pruned))
        print(f"latency {'fp16' if cuda else 'fp32'} {args.latency_imgsz}px batch {batch}: dense {dense_ms:.2f} ms "
              f"({count_parameters(dense):,} params), pruned {pruned_ms:.2f} ms ({count_parameters(pruned):,} params), "
              f"ratio {pruned_ms / dense_ms:.2f}")
    ok = non_finite == 0 and math.isfinite(float(trainer.callback_metrics.get("val/map", float("nan"))))
    # The CLI path too: `train +prune=sparse` on CUDA, briefly (on the built-in 160 px set), with the default
    # trainer.precision=auto, which must have turned into 16-mixed there.
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "yolo_slim", "train", "+prune=sparse", "model=yolov5n", "prune.epoch=2",
                   "trainer.max_epochs=4", f"trainer.accelerator={accelerator}",
                   f"data.workers={min(args.workers, 8)}",
                   "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}", *args.cli_override]
        result = subprocess.run(command, capture_output=True, text=True)
        print(f"CLI train +prune=sparse on {device}:", "ok" if result.returncode == 0 else result.stderr[-2000:])
        if result.returncode == 0:
            print(open(f"{folder}/summary.json").read())
        resolved = re.search(r"trainer.precision=auto: (\S+)", result.stderr + result.stdout)
        print("CLI trainer.precision=auto became:", resolved.group(1) if resolved else "(not logged)")
        ok = ok and result.returncode == 0 and resolved is not None and resolved.group(1) == precision
    print("GPU CHECK", "PASSED" if ok else "FAILED")


if __name__ == "__main__":
    main()
