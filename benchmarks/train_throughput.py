"""Training throughput (images/s) of YOLOv5Module on the built-in data, data loading included.

    python benchmarks/train_throughput.py --model yolov5n --imgsz 160 --batch-size 16 --workers 2

Times the optimizer steps after a few warm-up batches (the first ones pay for worker start-up and
allocator growth), through a real Lightning fit with the real dataloader and augmentation.
"""

from __future__ import annotations

import argparse

import lightning as L

from yolo_slim.data import YOLODataModule
from yolo_slim.data.synthetic import SyntheticConfig
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.lit.speed import TrainingSpeed
from yolo_slim.models import YOLOv5


def measure(model: str, imgsz: int, batch_size: int, workers: int, steps: int, warmup: int,
            accelerator: str, precision: str) -> float:
    datamodule = YOLODataModule(data=None, imgsz=imgsz, batch_size=batch_size, workers=workers,
                                synthetic=SyntheticConfig(image_size=max(imgsz, 160)))
    module = YOLOv5Module(YOLOv5(model, nc=datamodule.nc, names=datamodule.names), imgsz=imgsz)
    speed = TrainingSpeed(warmup_batches=warmup)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=warmup + steps, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator=accelerator,
                        devices=1, precision=precision, callbacks=[speed])
    trainer.fit(module, datamodule=datamodule)
    return speed.rates[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5n")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()
    rate = measure(args.model, args.imgsz, args.batch_size, args.workers, args.steps, args.warmup,
                   args.accelerator, args.precision)
    print(f"{args.model} imgsz={args.imgsz} batch={args.batch_size} workers={args.workers} "
          f"{args.accelerator}/{args.precision}: {rate:.1f} training images/s", flush=True)


if __name__ == "__main__":
    main()
