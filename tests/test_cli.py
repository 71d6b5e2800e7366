"""The command-line dispatcher and the `info` command (run as a subprocess, as users run it)."""

import subprocess
import sys

import pytest

from yolo_slim.cli import split_command
from yolo_slim.cli.errors import UsageError


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolo_slim", *args], capture_output=True, text=True, timeout=300)


def test_a_ddp_child_runs_its_parents_command(monkeypatch):
    # Lightning's launcher re-runs argv without the command word, marking the child with hydra.job.name.
    child = ["ckpt=best.ckpt", "hydra.run.dir=\"/runs/val\"", "hydra.job.name=train_ddp_process_1"]
    monkeypatch.setenv("YOLO_SLIM_COMMAND", "val")
    assert split_command(child) == ("val", child)
    assert split_command(["trainer.max_epochs=1"]) == ("train", ["trainer.max_epochs=1"])  # not a DDP child
    assert split_command(["prune", *child]) == ("prune", child)  # a command word always wins
    monkeypatch.delenv("YOLO_SLIM_COMMAND")
    assert split_command(child) == ("train", child)


def test_split_command():
    assert split_command(["info", "model=yolov5n"]) == ("info", ["model=yolov5n"])
    # No command word: train (Lightning's DDP children re-run argv without it).
    assert split_command(["trainer.max_epochs=1"]) == ("train", ["trainer.max_epochs=1"])
    assert split_command([]) == ("train", [])
    with pytest.raises(UsageError, match="unknown command 'bogus'"):
        split_command(["bogus"])


def test_info_prints_table_and_totals():
    result = _run("info", "model=yolov5n", "imgsz=320")
    assert result.returncode == 0, result.stderr
    assert "1,872,157 parameters" in result.stdout
    assert "1.12 GFLOPs at 320x320" in result.stdout
    assert result.stdout.count("C3") == 8


def test_info_of_the_v5_layout_and_a_bad_setting():
    assert "Focus" in _run("info", "model=yolov5s-v5", "imgsz=64").stdout
    bad = _run("info", "model=yolov5n", "imgsz=100")
    assert bad.returncode != 0
    assert "imgsz must be a positive multiple of 32, found 100" in bad.stderr
    p6 = _run("info", "model=yolov5n6", "imgsz=96")  # a multiple of 32 but not of the P6 layout's stride 64
    assert p6.returncode == 2 and "Traceback" not in p6.stderr, p6.stderr[-2000:]
    assert "imgsz must be a multiple of 64 for this model (its largest stride), found 96; e.g. 128" in p6.stderr
    missing = _run("info", "model.cfg=nothing_here.yaml")
    assert "model.cfg='nothing_here.yaml' is neither a model yaml file nor a shipped config" in missing.stderr
