"""Training speed of `python -m yolo_slim train` against ultralytics' `train.py`, same data, same machine, one run.

    python benchmarks/train_vs_ultralytics.py [--model yolov5s] [--imgsz 640] [--batch-size 64] [--epochs 4]
        [--workers 12] [--cache ram] [--num-train 1024] [--theirs-python PYTHON]

Both train the same model from scratch on the built-in synthetic set (written once, in YOLO layout,
at ``--imgsz``), with the same batch, data workers, image cache and mixed precision on CUDA (both
defaults: our ``trainer.precision=auto``, their AMP), and validate every epoch (their ``--noval`` crashes in
7.0.14 after the first epoch: ``map50s`` unbound). Each prints ``epoch N: R training images/s`` from
the same clock (``yolo_slim.lit.speed.TrainingSpeed`` in ours, ``benchmarks/ultralytics_train.py``
in theirs: from the start of the third batch of an epoch to the end of its last batch); the table
takes the epochs after ``--skip-epochs`` (the first pays for cuDNN's autotuning and the allocator)
and gives total images over total time for each, with the share of each epoch the loop spent waiting
for its next batch (the same window, no extra synchronisation): high means the data loader bounds
the speed, low means the steps do. ``--theirs-python`` must have ``yolov5==7.0.14``
(the scratch venv of ``benchmarks/ultralytics_check.py``); the offline stubs are written here.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ultralytics_stubs import write_stubs

from yolo_slim.data.synthetic import SyntheticConfig, ensure_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"epoch (\d+): ([\d.]+) training images/s")
WAIT = re.compile(r"epoch (\d+): [\d.]+ training images/s, (\d+)% of it waiting for data")


def _their_models(python: str) -> Path:
    """The model yamls of the yolov5 package ``python`` has (found without importing it: that needs the stubs)."""
    where = subprocess.run([python, "-c", "import importlib.util; print(importlib.util.find_spec('yolov5').origin)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return Path(where).parent / "models"


def _rates(text: str, skip_epochs: int, pattern: re.Pattern[str] = RATE) -> dict[int, float]:
    return {int(epoch): float(rate) for epoch, rate in pattern.findall(text) if int(epoch) >= skip_epochs}


def _run(name: str, command: list[str], environment: dict[str, str] | None, log: Path) -> tuple[str, float]:
    print(f"{name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
                            cwd=log.parent)
    seconds = time.perf_counter() - started
    log.write_text(result.stdout)
    if result.returncode != 0:
        print(f"{name} failed ({result.returncode}); the end of its log:\n{result.stdout[-3000:]}", flush=True)
    return result.stdout, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov5s")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--skip-epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--cache", choices=("ram", "none"), default="ram")
    parser.add_argument("--num-train", type=int, default=1024)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when there is one")
    parser.add_argument("--theirs-python", default=sys.executable)
    parser.add_argument("--logs", type=Path, default=None, help="keep both logs in this folder")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        logs = (args.logs or folder).resolve()
        logs.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        data = ensure_synthetic_dataset(SyntheticConfig(num_train=args.num_train, num_val=args.num_val,
                                                        image_size=args.imgsz), folder / "data")
        print(f"data: {data} ({args.num_train} + {args.num_val} images of {args.imgsz} px, "
              f"{time.perf_counter() - started:.0f} s to write)", flush=True)
        ours_command = [
            sys.executable, "-m", "yolo_slim", "train", f"model={args.model}", f"data.path={data}",
            f"data.imgsz={args.imgsz}", f"data.batch_size={args.batch_size}", f"data.workers={args.workers}",
            f"data.cache={args.cache}", f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", f"hydra.run.dir={folder / 'ours'}"]
        ours_text, ours_seconds = _run("ours", ours_command, None, logs / "ours.log")
        their_command = [
            args.theirs_python, str(ROOT / "benchmarks" / "ultralytics_train.py"), "--",
            "--data", str(data), "--cfg", str(_their_models(args.theirs_python) / f"{args.model}.yaml"),
            "--weights", "", "--img", str(args.imgsz), "--batch-size", str(args.batch_size),
            "--epochs", str(args.epochs), "--workers", str(args.workers), "--noplots", "--exist-ok",
            "--project", str(folder / "theirs"), "--name", "exp", "--device", "0" if device == "cuda" else "cpu"]
        if args.cache == "ram":
            their_command += ["--cache", "ram"]
        environment = {**os.environ, "PYTHONPATH": str(write_stubs(folder / "stubs"))}
        their_text, their_seconds = _run("theirs", their_command, environment, logs / "theirs.log")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"\n{name}: {args.model} {args.imgsz}px batch {args.batch_size}, {args.workers} workers, cache "
          f"{args.cache}, {'AMP' if device == 'cuda' else 'fp32'}, {args.num_train} images per epoch, "
          f"epochs {args.skip_epochs} to {args.epochs - 1} timed")
    print("| trainer | images/s per timed epoch | images/s (harmonic mean) | waiting for data, per epoch "
          "| process wall time |")
    print("|---|---|---:|---|---:|")
    means = {}
    for label, text, seconds in (("`python -m yolo_slim train`", ours_text, ours_seconds),
                                 ("ultralytics `train.py` 7.0.14", their_text, their_seconds)):
        rates = _rates(text, args.skip_epochs)
        waits = _rates(text, args.skip_epochs, WAIT)
        means[label] = statistics.harmonic_mean(list(rates.values())) if rates else float("nan")
        cells = ", ".join(f"{rate:.0f}" for rate in rates.values()) or "none"
        wait_cells = ", ".join(f"{wait:.0f}%" for wait in waits.values()) or "none"
        print(f"| {label} | {cells} | {means[label]:.1f} | {wait_cells} | {seconds:.0f} s |")
    ours_mean, their_mean = means.values()
    print(f"ours / theirs: {ours_mean / their_mean:.2f}x", flush=True)


if __name__ == "__main__":
    main()
