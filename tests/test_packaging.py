"""A non-editable install carries the Hydra configs and the model yamls, and the CLI finds them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_runs_info(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheel_dir)], check=True, timeout=300)
    wheel = next(wheel_dir.glob("yolo_slim-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    environment = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", "import yolo_slim, sys; print(yolo_slim.__file__); "
         "from yolo_slim.cli import main; main(['info', 'model=yolov5n-v5', 'imgsz=64'])"],
        capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(target))
    assert "1,882,525 parameters" in result.stdout


def test_importing_the_package_pulls_in_neither_lightning_hydra_nor_matplotlib():
    code = ("import sys, yolo_slim, yolo_slim.models, yolo_slim.slim; "
            "print(sorted(m for m in ('lightning', 'hydra', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
