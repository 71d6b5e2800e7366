"""`export` through the CLI, as a subprocess, on a checkpoint the test writes in yolo_slim's layout."""

import subprocess
import sys

import onnx
import pytest
import torch

from yolo_slim.models import YOLOv5


def _run(arguments: list[str], environment: dict[str, str], folder=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolo_slim", "export", *arguments], capture_output=True, text=True,
                          env=environment, timeout=300, cwd=folder)


def _write_checkpoint(model: YOLOv5, path) -> None:
    """What `train` writes, reduced to what load_yolov5 reads: the spec, class names and ``model.`` weights."""
    torch.save({"yolo_slim": {"spec": model.spec.to_dict(), "names": model.names},
                "state_dict": {"model." + key: value for key, value in model.state_dict().items()}}, path)


@pytest.fixture()
def checkpoint(tmp_path):
    path = tmp_path / "run" / "best.ckpt"
    path.parent.mkdir()
    _write_checkpoint(YOLOv5("yolov5n", nc=2, names=["cat", "dog"]), path)
    return path


@pytest.mark.slow
def test_export_next_to_the_checkpoint_and_to_an_output(checkpoint, tmp_path, cli_environment):
    working = tmp_path / "working"
    working.mkdir()
    result = _run([f"ckpt={checkpoint}", "imgsz=128"], cli_environment, folder=working)
    assert result.returncode == 0, result.stderr[-3000:]
    written = checkpoint.with_suffix(".onnx")
    assert written.is_file()
    assert f"wrote {written} (" in result.stdout and "1,766,623 parameters, 128x128, opset 17" in result.stdout
    difference = float(result.stdout.split("max abs difference ")[1].split()[0])
    assert difference < 1e-3
    assert not any(working.iterdir())  # no Hydra run folder, no log file
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.ckpt", "best.onnx"]

    output = tmp_path / "elsewhere" / "model.onnx"
    result = _run([f"ckpt={checkpoint}", "imgsz=64", "opset=13", f"output={output}"], cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = onnx.load(str(output))
    assert saved.opset_import[0].version == 13
    assert [d.dim_value for d in saved.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 64, 64]


@pytest.mark.slow
def test_bad_settings_name_the_setting(checkpoint, tmp_path, cli_environment):
    missing = _run([f"ckpt={tmp_path / 'nothing.ckpt'}"], cli_environment)
    assert missing.returncode != 0
    assert f"ckpt='{tmp_path / 'nothing.ckpt'}' does not exist" in missing.stderr
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    unreadable = _run([f"ckpt={garbage}"], cli_environment)
    assert f"ckpt='{garbage}' is not a YOLOv5 checkpoint yolo_slim can read" in unreadable.stderr
    assert "imgsz must be a positive multiple of 32, found 100" in _run([f"ckpt={checkpoint}", "imgsz=100"],
                                                                         cli_environment).stderr
    assert "opset must be an int >= 11, found 9" in _run([f"ckpt={checkpoint}", "opset=9"], cli_environment).stderr
    p6 = tmp_path / "p6.ckpt"
    _write_checkpoint(YOLOv5("yolov5n6", nc=2, names=["cat", "dog"]), p6)
    result = _run([f"ckpt={p6}", "imgsz=96"], cli_environment)  # 96 = 1.5 of the P6 layout's 64-pixel cells
    assert "imgsz must be a multiple of 64 for this model (its largest stride), found 96" in result.stderr
    assert "Traceback" not in result.stderr
