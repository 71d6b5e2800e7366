"""Helpers for tests that run the CLI as a subprocess (importable because pytest puts tests/ on sys.path)."""

import subprocess
import sys


TINY_TRAIN = ["model=yolov5n", "data.synthetic.num_train=24", "data.synthetic.num_val=8",
              "data.synthetic.image_size=96", "data.imgsz=96", "data.batch_size=8", "data.workers=0",
              "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.log_every_n_steps=1"]


def run_cli(arguments: list[str], environment: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolo_slim", *arguments], capture_output=True, text=True,
                          env=environment, timeout=timeout)
