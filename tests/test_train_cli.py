"""`train` and `val` through the CLI, as subprocesses on a tiny generated set."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from cli_support import run_cli


@pytest.mark.slow
def test_train_leaves_checkpoints_logs_and_summary(trained_run):
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    best = trained_run / "checkpoints" / "best.ckpt"
    assert best.is_file()
    assert any((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    log = (trained_run / "train.log").read_text()
    assert "train split" in log and "Average Precision" not in log  # faster_coco_eval's tables stay out
    assert "AutoAnchor: best possible recall" in log  # on by default (the built-in data's anchors fit: kept)
    assert re.search(r"epoch 1: \d+\.\d training images/s", log)  # TrainingSpeed, every epoch past its warm-up
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["model"] == "yolov5n" and summary["imgsz"] == 96
    assert summary["checkpoint"] == str(best)
    train = summary["stages"]["train"]
    assert 0.0 <= train["map50"] <= 1.0 and 0.0 <= train["map"] <= train["map50"]
    assert train["params"] == 1_769_329  # yolov5n with a 4-class head
    assert train["gflops"] == pytest.approx(4.14 * (96 / 640) ** 2, rel=0.02)
    checkpoint = torch.load(best, weights_only=True)  # plain data only
    assert checkpoint["yolo_slim"]["names"] == ["circle", "rectangle", "triangle", "cross"]


@pytest.mark.slow
def test_val_of_the_best_checkpoint_reproduces_its_map(trained_run, cli_environment):
    best = trained_run / "checkpoints" / "best.ckpt"
    validated = run_cli(["val", f"ckpt={best}", "data.workers=0", "trainer.accelerator=cpu"], cli_environment)
    assert validated.returncode == 0, validated.stderr[-3000:]
    metrics = json.loads(validated.stdout[validated.stdout.index("{"):])
    train = json.loads((trained_run / "summary.json").read_text())["stages"]["train"]
    assert metrics["map"] == pytest.approx(train["map"], abs=1e-6)


@pytest.mark.slow
def test_val_on_two_processes(trained_run, tmp_path, cli_environment):
    # Lightning's DDP launcher re-runs the arguments without the command word: each child must run val too.
    # On 7 images, its sampler gives each process 4: the repeat is blanked (equal-length lists for
    # torchmetrics' gather). This 2-epoch model scores about 0, so the double count itself is caught by
    # tests/lit/test_evaluation.py; here: the run works and agrees with one process.
    best = trained_run / "checkpoints" / "best.ckpt"
    data = yaml.safe_load(open(json.loads((trained_run / "summary.json").read_text())["data"]))
    root = Path(data["path"])
    (tmp_path / "val.txt").write_text("".join(f"{p}\n" for p in sorted((root / data["val"]).iterdir())[:7]))
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({**data, "val": str(tmp_path / "val.txt")}))
    results = []
    for devices in (1, 2):
        validated = run_cli(["val", f"ckpt={best}", f"data.path={tmp_path / 'data.yaml'}", "data.workers=0",
                             "data.batch_size=2", "trainer.accelerator=cpu", f"trainer.devices={devices}",
                             f"hydra.run.dir={tmp_path}"], cli_environment, 300)
        assert validated.returncode == 0, validated.stderr[-3000:]  # the child ran `train` before: killed, 137
        assert "error" not in validated.stderr
        results.append(json.loads(validated.stdout[validated.stdout.index("{"):]))
    assert results[1]["checkpoint"] == str(best)
    assert (results[1]["map50"], results[1]["map"]) == (results[0]["map50"], results[0]["map"])


def _user_dataset(root, source_yaml):
    """A user-style dataset built from generated images: names as a list, train from a .txt list, val a folder."""
    import shutil

    import yaml

    source = yaml.safe_load(source_yaml.read_text())
    base = source_yaml.parent
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            shutil.copytree(base / kind / split, root / kind / split)
    images = sorted((root / "images" / "train").iterdir())
    (root / "train.txt").write_text("".join(f"./images/train/{p.name}\n" for p in images))
    names = [source["names"][i] for i in sorted(source["names"])]
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "train.txt", "val": "images/val",
                                                    "names": names}))
    return root / "data.yaml"


@pytest.mark.slow
def test_train_on_a_users_data_yaml(tmp_path, cli_environment, synthetic_cache):
    from yolo_slim.data.synthetic import SyntheticConfig, ensure_synthetic_dataset

    generated = ensure_synthetic_dataset(SyntheticConfig(num_train=16, num_val=8, image_size=64, seed=3,
                                                         min_object_size_fraction=0.1),
                                         cache_dir=tmp_path / "cache")
    data_yaml = _user_dataset(tmp_path / "mydata", generated)
    run_dir = tmp_path / "run"
    result = run_cli(["train", "model=yolov5n", f"data.path={data_yaml}", "data.imgsz=64", "data.batch_size=8",
                      "data.workers=0", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                      f"hydra.run.dir={run_dir}"], cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"] == str(data_yaml) and summary["imgsz"] == 64
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["yolo_slim"]["names"] == [
        "circle", "rectangle", "triangle", "cross"]
