"""The command-line dispatcher and the `info` command (a subprocess, as users run it, where the test is about
what they see; in this process where only the command's own output matters)."""

import subprocess
import sys

import pytest

from cli_support import run_cli_in_process
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


def test_info_of_the_v5_layout_and_a_bad_setting(capfd):
    def in_process(*args: str) -> subprocess.CompletedProcess:
        return run_cli_in_process(["info", *args], None, capfd)

    assert "Focus" in in_process("model=yolov5s-v5", "imgsz=64").stdout
    bad = in_process("model=yolov5n", "imgsz=100")
    assert bad.returncode != 0
    assert "imgsz must be a positive multiple of 32, found 100" in bad.stderr
    p6 = _run("info", "model=yolov5n6", "imgsz=96")  # a multiple of 32 but not of the P6 layout's stride 64
    assert p6.returncode == 2 and "Traceback" not in p6.stderr, p6.stderr[-2000:]
    assert "imgsz must be a multiple of 64 for this model (its largest stride), found 96; e.g. 128" in p6.stderr
    missing = in_process("model.cfg=nothing_here.yaml")
    assert "model.cfg='nothing_here.yaml' is neither a model yaml file nor a shipped config" in missing.stderr


def test_info_of_a_checkpoint_shows_its_pruned_widths(tmp_path, capfd):
    from yolo_slim.models import YOLOv5, count_parameters
    from yolo_slim.models.testing import randomize_norms
    from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint
    from yolo_slim.slim import compact, plan_pruning

    dense = randomize_norms(YOLOv5("yolov5n", nc=2))
    pruned = compact(dense, plan_pruning(dense, ratio=0.5))
    path = write_ultralytics_checkpoint(pruned, tmp_path / "pruned.pt", half=False)
    result = _run("info", f"ckpt={path}", "imgsz=64")
    assert result.returncode == 0, result.stderr
    assert f"{count_parameters(pruned):,} parameters" in result.stdout and count_parameters(pruned) < 1_000_000
    both = run_cli_in_process(["info", f"ckpt={path}", f"model.weights={path}"], None, capfd)
    assert both.returncode == 2 and "give ckpt= or model.weights=, not both" in both.stderr, both.stderr
    named = run_cli_in_process(["info", f"ckpt={path}", "model=yolov5s"], None, capfd)  # typed, not the default
    assert named.returncode == 2 and f"give ckpt= or model=, not both (found ckpt='{path}' and model=yolov5s)" in \
        named.stderr, named.stderr
    default = run_cli_in_process(["info", "imgsz=64"], None, capfd)  # no model=: yolov5n (80 classes), as train
    assert "1,872,157 parameters" in default.stdout


@pytest.mark.parametrize(("command", "overrides", "expected"), [
    ("val", ["ckpt=x.ckpt", "+data.imgsz2=64"], "there is no setting data.imgsz2 for `val`; did you mean data.imgsz?"),
    ("info", ["+ckpt2=x.ckpt"], "there is no setting ckpt2 for `info`; did you mean ckpt?"),
    ("info", ["+trainer.devices=2"], "there is no setting trainer.devices for `info`; its settings: ckpt, imgsz, "
                                     "model.*"),  # info runs no Trainer
])
def test_an_added_setting_nothing_reads_is_refused(command, overrides, expected):
    from yolo_slim.cli.errors import refuse_unread_additions

    with pytest.raises(UsageError) as raised:
        refuse_unread_additions(command, overrides)
    assert str(raised.value) == expected


def test_added_settings_that_are_read_pass():
    from yolo_slim.cli.errors import refuse_unread_additions

    # lightning.Trainer's and the optimizer's keywords are handed on (and checked there); a group append; ++.
    refuse_unread_additions("train", ["+trainer.gradient_clip_algorithm=value", "+optim.optimizer.dampening=0.1",
                                      "+prune=sparse", "++resume=x.ckpt", "-m", "data.imgsz=64"])
    refuse_unread_additions("val", ["ckpt=x.ckpt", "+trainer.limit_val_batches=2"])
    # A group of the user's own, found through hydra.searchpath.
    refuse_unread_additions("train", ["hydra.searchpath=[file:///my/configs]", "+experiment=big"])
    with pytest.raises(UsageError, match="no setting experiment for `train`"):
        refuse_unread_additions("train", ["+experiment=big"])


def test_a_missing_setting_lists_the_settings_of_its_section():
    from yolo_slim.cli.errors import _composed, no_such_setting

    line = no_such_setting("val", "data.zzz", "1", _composed("val", "data.zzz", ["ckpt=x.ckpt"]))
    assert line.startswith("there is no setting data.zzz for `val`; the settings there: ")
    assert "data.imgsz" in line and "data.path" in line and "nms." not in line
