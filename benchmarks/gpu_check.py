"""The GPU checks in one short run (a few minutes on one H100): the `+prune=sparse` flow on CUDA
with 16-mixed, the loss finite through the prune, training images/s before and after pruning,
and the latency of the dense and pruned model at batch 1 and 32.

    python benchmarks/gpu_check.py [--model yolov5s] [--imgsz 320] [--epochs 10] [--prune-epoch 6]
"""

from __future__ import annotations

import argparse
import json
import math
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
from yolo_slim.models import YOLOv5, count_parameters


class _Watch(L.Callback):
    """Non-finite losses and training images/s per epoch (timed from the first to the last batch)."""

    def __init__(self) -> None:
        self.non_finite = 0
        self.steps = 0
        self.rates: dict[int, float] = {}
        self._start = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._images = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 2:  # skip the first batches: worker start-up, cudnn autotuning after a prune
            torch.cuda.synchronize()
            self._start = time.perf_counter()
        if batch_idx >= 2:
            self._images += len(batch["images"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        self.non_finite += int(not torch.isfinite(outputs["loss"]).item())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        self.rates[trainer.current_epoch] = self._images / max(time.perf_counter() - self._start, 1e-9)


def _latency_ms(model: torch.nn.Module, batch: int, imgsz: int, runs: int = 50) -> float:
    model = model.to("cuda", torch.float16).eval()
    return cuda_latency_ms(model, torch.rand(batch, 3, imgsz, imgsz, device="cuda", dtype=torch.float16), runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--prune-epoch", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=12)
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "lightning", L.__version__, flush=True)
    L.seed_everything(0, workers=True)
    datamodule = YOLODataModule(data=None, imgsz=args.imgsz, batch_size=args.batch_size, workers=args.workers,
                                synthetic=SyntheticConfig(image_size=args.imgsz))
    module = YOLOv5Module(YOLOv5(args.model, nc=datamodule.nc, names=datamodule.names), imgsz=args.imgsz)
    slim = SlimCallback(prune_epochs=args.prune_epoch, ratio=0.5, imgsz=args.imgsz,  # the default method
                        write_artifacts=False)
    watch = _Watch()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="gpu", devices=1, precision="16-mixed", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[slim, watch],
                        gradient_clip_val=10.0)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    print(f"fit: {time.perf_counter() - started:.1f} s, {watch.steps} steps, non-finite losses: {watch.non_finite}")
    print("stages:", json.dumps(slim.stages))
    before = [r for e, r in watch.rates.items() if 0 < e < args.prune_epoch]
    after = [r for e, r in watch.rates.items() if e > args.prune_epoch]
    print(f"training images/s ({args.model}, {args.imgsz}px, batch {args.batch_size}, 16-mixed): "
          f"dense {sum(before) / len(before):.0f}, pruned {sum(after) / len(after):.0f}")
    pruned = module.inference_model
    dense = YOLOv5(args.model, nc=datamodule.nc)
    for batch in (1, 32):
        dense_ms, pruned_ms = _latency_ms(dense, batch, 640), _latency_ms(pruned, batch, 640)
        print(f"latency fp16 640px batch {batch}: dense {dense_ms:.2f} ms ({count_parameters(dense):,} params), "
              f"pruned {pruned_ms:.2f} ms ({count_parameters(pruned):,} params), ratio {pruned_ms / dense_ms:.2f}")
    ok = watch.non_finite == 0 and math.isfinite(float(trainer.callback_metrics.get("val/map", float("nan"))))
    # The CLI path too: `train +prune=sparse` on CUDA with 16-mixed, briefly.
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "yolo_slim", "train", "+prune=sparse", "model=yolov5n", "prune.epoch=2",
                   "trainer.max_epochs=4", "trainer.accelerator=gpu", "trainer.precision=16-mixed",
                   "data.workers=8", "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}"]
        result = subprocess.run(command, capture_output=True, text=True)
        print("CLI train +prune=sparse on GPU:", "ok" if result.returncode == 0 else result.stderr[-2000:])
        if result.returncode == 0:
            print(open(f"{folder}/summary.json").read())
        ok = ok and result.returncode == 0
    print("GPU CHECK", "PASSED" if ok else "FAILED")


if __name__ == "__main__":
    main()
