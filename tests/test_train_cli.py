"""`train` and `val` through the CLI, as subprocesses on a tiny generated set."""

import json
import subprocess
import sys

import pytest
import torch

TINY = ["model=yolov5n", "data.synthetic.num_train=24", "data.synthetic.num_val=8", "data.synthetic.image_size=96",
        "data.imgsz=96", "data.batch_size=8", "data.workers=0", "trainer.max_epochs=2", "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1"]


def _run(arguments, environment, timeout=600):
    return subprocess.run([sys.executable, "-m", "yolo_slim", *arguments], capture_output=True, text=True,
                          env=environment, timeout=timeout)


@pytest.mark.slow
def test_train_then_val(tmp_path, cli_environment):
    run_dir = tmp_path / "run"
    result = _run(["train", *TINY, f"hydra.run.dir={run_dir}"], cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.is_file()
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "yolov5n" and summary["imgsz"] == 96
    assert summary["checkpoint"] == str(best)
    train = summary["stages"]["train"]
    assert 0.0 <= train["map50"] <= 1.0 and 0.0 <= train["map"] <= train["map50"]
    assert train["params"] == 1_769_329  # yolov5n with a 4-class head
    assert train["gflops"] == pytest.approx(4.14 * (96 / 640) ** 2, rel=0.02)
    # The checkpoint is plain data.
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["yolo_slim"]["names"] == ["circle", "rectangle", "triangle", "cross"]

    validated = _run(["val", f"ckpt={best}", "data.workers=0", "trainer.accelerator=cpu"], cli_environment)
    assert validated.returncode == 0, validated.stderr[-3000:]
    metrics = json.loads(validated.stdout[validated.stdout.index("{"):])
    assert metrics["map"] == pytest.approx(train["map"], abs=1e-6)


@pytest.mark.slow
def test_bad_settings_fail_at_start_up(tmp_path, cli_environment):
    result = _run(["train", *TINY, "data.batch_size=0", f"hydra.run.dir={tmp_path}"], cli_environment, timeout=120)
    assert result.returncode != 0
    assert "data.batch_size must be an int >= 1, found 0" in result.stderr
    result = _run(["train", *TINY, f"data.path={tmp_path / 'nothing.yaml'}", f"hydra.run.dir={tmp_path}"],
                  cli_environment, timeout=120)
    assert result.returncode != 0 and "nothing.yaml" in result.stderr
    missing = _run(["val", f"ckpt={tmp_path / 'none.ckpt'}"], cli_environment, timeout=120)
    assert "does not exist; give a checkpoint written by `train`" in missing.stderr
