"""Errors the user caused print one line `yolo_slim <command>: error: ...` on stderr and exit with status 2;
a bug keeps its traceback (a few of each kind as subprocesses, as users meet them; the rest in this process)."""

import json

import pytest
import torch
import yaml
from cli_support import TINY_TRAIN, run_cli, run_cli_in_process
from model_support import RunsCommand

from yolo_slim.cli.errors import UsageError, describe_hydra_error, one_line, users_input


def _assert_one_line(result, command: str, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"yolo_slim {command}: error: "), lines[0]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_settings_and_overrides(tmp_path, cli_environment, capfd):
    run = [f"hydra.run.dir={tmp_path / 'run'}"]
    _assert_one_line(run_cli_in_process(["train", *TINY_TRAIN, "trainer.max_epoch=3", *run], cli_environment, capfd),
                     "train", "no setting trainer.max_epoch", "+trainer.max_epoch=3",
                     "did you mean trainer.max_epochs?")
    _assert_one_line(run_cli(["train", "model=yolov9", *run], cli_environment, 120), "train",
                     "Could not find 'model/yolov9'", "yolov5s-ghost")
    # Hydra's own message here is "Got NoneType"
    _assert_one_line(run_cli_in_process(["train", "model=null", *run], cli_environment, capfd), "train",
                     "model=null: model is a config group, which takes one of its options: yolov3, yolov3-spp, ")
    _assert_one_line(run_cli_in_process(["train", "trainer.max_epochs", *run], cli_environment, capfd), "train",
                     "Error parsing override 'trainer.max_epochs'")
    _assert_one_line(run_cli_in_process(["train", *TINY_TRAIN, "+prune=sparse", "prune.ratio=2", *run],
                                        cli_environment, capfd), "train", "ratio must be in [0, 1), found 2")
    _assert_one_line(run_cli_in_process(["train", *TINY_TRAIN, "+prune=sparse", "prune.epoch=1", "prune.epochs=[1]",
                                         *run], cli_environment, capfd), "train",
                     "give prune.epoch (one prune) or prune.epochs (a list of them), not both (found prune.epoch=1 "
                     "and prune.epochs=[1])")
    line = _assert_one_line(run_cli(["train", *TINY_TRAIN, f"data.path={tmp_path / 'none.yaml'}", *run],
                                    cli_environment, 120), "train", "none.yaml")
    assert line in (tmp_path / "run" / "train.log").read_text()  # and in the run's log
    (tmp_path / "a_file").write_text("")
    _assert_one_line(run_cli(["info", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"], cli_environment, 120), "info",
                     "cannot write the run folder: Not a directory", "give hydra.run.dir=")


@pytest.mark.slow
def test_checkpoints_missing_corrupt_hostile_and_mismatched(tmp_path, trained_run, cli_environment, capfd):
    _assert_one_line(run_cli_in_process(["val", f"ckpt={tmp_path / 'none.ckpt'}"], cli_environment, capfd), "val",
                     "does not exist; give a checkpoint written by `train`")
    _assert_one_line(run_cli_in_process(["val", f"ckpt={trained_run}"], cli_environment, capfd), "val",
                     f"ckpt='{trained_run}' is a folder (did you mean '{trained_run / 'checkpoints' / 'best.ckpt'}'?)")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("garbage\n")
    _assert_one_line(run_cli_in_process(["val", f"ckpt={garbage}"], cli_environment, capfd), "val",
                     f"{garbage} is a text file, not a checkpoint")
    _assert_one_line(run_cli(["train", *TINY_TRAIN, f"model.weights={garbage}", f"hydra.run.dir={tmp_path / 'w'}"],
                             cli_environment, 120), "train", f"{garbage} is a text file, not a checkpoint")
    whole = (trained_run / "checkpoints" / "best.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole[: len(whole) // 3])
    _assert_one_line(run_cli_in_process(["prune", f"ckpt={truncated}", "prune.ratio=0.5"], cli_environment, capfd),
                     "prune", f"{truncated} is a zip archive torch cannot read")
    hostile = tmp_path / "hostile.pt"
    torch.save({"model": RunsCommand(f"touch {tmp_path / 'pwned'}")}, hostile)
    _assert_one_line(run_cli(["export", f"ckpt={hostile}"], cli_environment, 120), "export",
                     "refers to", "system, which yolo_slim does not load")
    assert not (tmp_path / "pwned").exists()
    data = yaml.safe_load(open(_trained_data(trained_run)))
    data["names"] = ["a", "b"]  # 2 classes against the checkpoint's 4
    data.pop("nc", None)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(data))
    best = trained_run / "checkpoints" / "best.ckpt"
    _assert_one_line(run_cli_in_process(["val", f"ckpt={best}", f"data.path={tmp_path / 'two.yaml'}"],
                                        cli_environment, capfd),
                     "val", "has 2 classes but the checkpoint's model has 4")


def _trained_data(run) -> str:
    return json.loads((run / "summary.json").read_text())["data"]


def test_only_set_up_errors_become_usage_errors():
    with pytest.raises(UsageError, match="data.batch_size must be"):
        with users_input():
            raise ValueError("data.batch_size must be an int >= 1, found 0")
    with pytest.raises(RuntimeError, match="a bug"):  # anything else keeps its type (and so its traceback)
        with users_input():
            raise RuntimeError("a bug")
    assert describe_hydra_error(RuntimeError("a bug"), "train", []) is None


def test_a_message_of_several_lines_reads_as_one():
    assert one_line("val split of d.yaml is refused (the label files are empty):\n  train: 3 images\n\n  2 problems") \
        == "val split of d.yaml is refused (the label files are empty): train: 3 images; 2 problems"
    assert one_line("   ") == "   "


@pytest.mark.slow
def test_data_faults_found_inside_the_fit_are_one_line_too(tmp_path, cli_environment):
    # The splits are scanned in the datamodule's setup, after the command's own set-up has passed.
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (64, 64)).save(tmp_path / "images" / split / f"{index}.jpg")
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    result = run_cli(["train", f"data.path={tmp_path / 'data.yaml'}", "data.imgsz=64", "data.workers=0",
                      "trainer.max_epochs=1", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'run'}"],
                     cli_environment, 120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("yolo_slim train: error: data.yaml") and "no image of split 'train' has a label" in last
