"""CPU cost of one augmented training sample: yolo_slim's loader against ultralytics', one thread each.

    python benchmarks/loader_cost.py [--imgsz 640] [--num-train 200] [--batches 6]
    PYTHONPATH=STUBS python benchmarks/loader_cost.py ...   # with yolov5==7.0.14: their row too

On the same generated images (RAM cache, YOLOv5's hyp.scratch-low augmentation: mosaic, zoom and
translate, HSV jitter, left-right flip), the milliseconds of CPU one sample costs a loader worker,
batches of 16 with no worker processes and torch at one thread (what each worker process runs on).
Rows: ours with the HSV jitter in the worker (CPU training), ours with it deferred to the device
(``defer_hsv``, what a GPU run's workers do), theirs (``create_dataloader``, when ``yolov5`` is
importable; STUBS: the folder ``benchmarks/ultralytics_stubs.py`` writes), and where the time of
our in-worker sample goes (cProfile, by function). Loader workers divide these costs: a GPU run
with W workers can be fed at most about W * 1000 / ms images per second.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import torch

from yolo_slim.data import YOLODataModule
from yolo_slim.data.synthetic import SyntheticConfig, ensure_synthetic_dataset

BATCH = 16


def _ms_per_image(batches, count: int) -> float:
    next(batches)  # the first batch pays for the iterator's set-up
    started, images = time.perf_counter(), 0
    for _ in range(count):
        batch = next(batches)
        images += len(batch["images"] if isinstance(batch, dict) else batch[0])  # ours: a dict; theirs: a tuple
    return (time.perf_counter() - started) / images * 1e3


def our_batches(data: Path, imgsz: int, defer_hsv: bool):
    """Endless training batches of our data module, its RAM cache built."""
    datamodule = YOLODataModule(data=data, imgsz=imgsz, batch_size=BATCH, workers=0, cache="ram")
    datamodule.setup("fit")
    datamodule.datasets["train"].defer_hsv = defer_hsv
    return _forever(datamodule.train_dataloader)


def theirs(data: Path, imgsz: int, count: int) -> float | None:
    try:
        import yaml
        import yolov5
        from yolov5.utils.dataloaders import create_dataloader
    except ImportError:
        return None
    hyp = yaml.safe_load((Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    loader, _ = create_dataloader(str(data.parent / "images" / "train"), imgsz, BATCH, 32, False, hyp=hyp,
                                  augment=True, cache="ram", workers=0, shuffle=True)
    return _ms_per_image(_forever(lambda: loader), count)


def _forever(make_loader):
    while True:
        yield from make_loader()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--batches", type=int, default=6, help="timed batches of 16 per row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(ensure_synthetic_dataset(SyntheticConfig(num_train=args.num_train, num_val=8,
                                                             image_size=args.imgsz), Path(folder)))
        rows = [("yolo_slim, HSV jitter in the worker (CPU training)",
                 _ms_per_image(our_batches(data, args.imgsz, False), args.batches)),
                ("yolo_slim, HSV jitter on the device (GPU training)",
                 _ms_per_image(our_batches(data, args.imgsz, True), args.batches)),
                ("ultralytics yolov5 7.0.14 create_dataloader", theirs(data, args.imgsz, args.batches))]
        print(f"CPU ms per augmented training sample, {args.imgsz} px, RAM cache, one thread, "
              f"{args.batches} batches of {BATCH}")
        print("| loader | ms per image |\n|---|---:|")
        for name, ms in rows:
            print(f"| {name} | {'not installed' if ms is None else f'{ms:.2f}'} |")
        batches = our_batches(data, args.imgsz, False)
        profile = cProfile.Profile()
        profile.enable()
        _ms_per_image(batches, args.batches)
        profile.disable()
    print("\nwhere our in-worker sample spends its time (cProfile, top functions by own time):")
    pstats.Stats(profile).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
