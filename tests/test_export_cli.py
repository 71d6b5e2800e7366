"""`export` through the CLI, on a checkpoint the test writes in yolo_slim's layout: a subprocess, as users run it,
and in this process for the errors that need no fresh interpreter."""

import re
from pathlib import Path
import subprocess
import sys

import onnx
import pytest
import torch
from hydra import compose, initialize_config_dir

from cli_support import run_cli_in_process
from yolo_slim.cli import config_dir, export
from yolo_slim.cli.errors import UsageError
from yolo_slim.models import YOLOv5
from yolo_slim.models.export import max_opset


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
def test_export_next_to_the_checkpoint_and_to_an_output(checkpoint, tmp_path, cli_environment, capfd):
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

    # The export a deployment may be running (this and the last call in this process: two fewer interpreters).
    again = run_cli_in_process(["export", f"ckpt={checkpoint}", "imgsz=128"], cli_environment, capfd)
    assert again.returncode != 0 and f"output='{written}' already exists; give overwrite=true" in again.stderr

    folder = tmp_path / "elsewhere"  # an existing folder: the file goes in it, named after the checkpoint
    folder.mkdir()
    result = _run([f"ckpt={checkpoint}", "imgsz=[64,96]", "opset=13", f"output={folder}"], cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {folder / 'best.onnx'} (" in result.stdout and "64x96, opset 13" in result.stdout
    saved = onnx.load(str(folder / "best.onnx"))
    assert saved.opset_import[0].version == 13
    assert [d.dim_value for d in saved.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 64, 96]
    replaced = run_cli_in_process(["export", f"ckpt={checkpoint}", "imgsz=64", f"output={folder}", "overwrite=true"],
                                  cli_environment, capfd)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    saved = onnx.load(str(folder / "best.onnx"))
    assert [d.dim_value for d in saved.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 64, 64]


@pytest.mark.slow
def test_bad_settings_name_the_setting(checkpoint, tmp_path, cli_environment, capfd):
    def in_process(arguments: list[str]) -> subprocess.CompletedProcess:  # the one-line stderr: the p6 case below
        return run_cli_in_process(["export", *arguments], cli_environment, capfd)

    missing = in_process([f"ckpt={tmp_path / 'nothing.ckpt'}"])
    assert missing.returncode != 0
    assert f"ckpt='{tmp_path / 'nothing.ckpt'}' does not exist" in missing.stderr
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    unreadable = in_process([f"ckpt={garbage}"])
    assert f"ckpt='{garbage}' is not a YOLOv5 checkpoint yolo_slim can read" in unreadable.stderr
    assert "imgsz must be a positive multiple of 32, found 100" in in_process([f"ckpt={checkpoint}",
                                                                                "imgsz=100"]).stderr
    p6 = tmp_path / "p6.ckpt"
    _write_checkpoint(YOLOv5("yolov5n6", nc=2, names=["cat", "dog"]), p6)
    result = _run([f"ckpt={p6}", "imgsz=96"], cli_environment)  # 96 = 1.5 of the P6 layout's 64-pixel cells
    assert "imgsz must be a multiple of 64 for this model (its largest stride), found 96" in result.stderr
    assert "Traceback" not in result.stderr


def _export(overrides: list[str]) -> None:
    """The export command's run on its composed config, in this process (no subprocess: these fail at set-up)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        export.run(compose(config_name="export", overrides=overrides))


@pytest.mark.parametrize("setting,found", [
    ("opset=9", f"opset must be an int from 11 to {max_opset()}, found 9"),
    ("opset=25", f"opset must be an int from 11 to {max_opset()}, found 25"),  # TorchScript exporter: 20 in torch 2.14
    ("output=OTHER/m.pt", "output='OTHER/m.pt' must end in .onnx, the suffix format=onnx writes"),
    ("imgsz=[64,96,32]", "imgsz must be one size or [height, width], found [64, 96, 32]"),
    ("imgsz=[64,90]", "imgsz width must be a positive multiple of 32, found 90"),
    ("overwrite=yes", "overwrite must be true or false, found 'yes'"),
    ("output=OTHER/a_file/m.onnx",
     "output='OTHER/a_file/m.onnx' cannot be written: OTHER/a_file is a file, not a folder"),
    pytest.param("output=/proc/m.onnx", "output='/proc/m.onnx' cannot be written:",  # a folder no file goes in
                 marks=pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc here")),
])
def test_settings_are_checked_before_the_checkpoint_is_read(checkpoint, tmp_path, setting, found):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UsageError, match=re.escape(found.replace("OTHER", str(tmp_path)))):
        _export([f"ckpt={checkpoint}", setting.replace("OTHER", str(tmp_path))])


def test_an_export_given_as_ckpt_is_named(tmp_path):
    exported = tmp_path / "m.onnx"
    exported.write_bytes(b"")
    with pytest.raises(UsageError, match=re.escape(f"ckpt='{exported}' is already an export; export reads the "
                                                   f"checkpoint it came from")):
        _export([f"ckpt={exported}"])


def test_a_failed_export_leaves_the_old_file_and_nothing_else(checkpoint, monkeypatch):
    previous = checkpoint.with_suffix(".onnx")
    previous.write_bytes(b"the export a deployment runs")

    def parity_fails(*arguments, **options):
        raise ValueError("onnxruntime returned another shape")

    monkeypatch.setattr(export, "check_onnx", parity_fails)
    with pytest.raises(ValueError, match="onnxruntime returned another shape"):  # after set-up: no UsageError
        _export([f"ckpt={checkpoint}", "imgsz=64", "overwrite=true"])
    assert previous.read_bytes() == b"the export a deployment runs"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.ckpt", "best.onnx"]
    for difference, shown in ((3.0, "up to 3 away"), (float("nan"), "up to nan away")):  # numbers, not a shape
        monkeypatch.setattr(export, "check_onnx", lambda *arguments, **options: difference)
        with pytest.raises(RuntimeError, match=f"onnxruntime gives outputs {shown} from torch's on the same images "
                                               f"\\(more than 0.05\\): {re.escape(str(previous))} was not written"):
            _export([f"ckpt={checkpoint}", "imgsz=64", "overwrite=true"])
        assert previous.read_bytes() == b"the export a deployment runs"
        assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.ckpt", "best.onnx"]


def test_an_output_ending_in_a_slash_is_a_folder_to_make(tmp_path):
    checkpoint = tmp_path / "run" / "best.ckpt"
    made = export._output(f"{tmp_path / 'exports' / 'new'}/", checkpoint, "torchscript", overwrite=False)
    assert made == tmp_path / "exports" / "new" / "best.torchscript"
    assert not (tmp_path / "exports").exists()  # made once the checkpoint has loaded


def test_a_checkpoint_that_does_not_load_leaves_no_output_folder(tmp_path):
    foreign = tmp_path / "notes.pt"
    foreign.write_text("not a checkpoint")
    with pytest.raises(UsageError, match="is not a"):
        _export([f"ckpt={foreign}", f"output={tmp_path / 'exports' / 'new'}/"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt"]
