"""`prune` through the CLI on the checkpoint of a tiny training run."""

import json
from pathlib import Path

import pytest
import torch
from cli_support import run_cli, run_cli_in_process

from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.models import count_parameters


@pytest.mark.slow
def test_prune_writes_a_loadable_smaller_checkpoint(trained_run, tmp_path, cli_environment):
    best = trained_run / "checkpoints" / "best.ckpt"
    run_dir = tmp_path / "pruned"
    # Pruned on another data.yaml (the same images here) at another size than the run trained at (96): the pruned
    # checkpoint records both, so that val (below) defaults to them.
    other_data = tmp_path / "other.yaml"
    other_data.write_text(Path(json.loads((trained_run / "summary.json").read_text())["data"]).read_text())
    result = run_cli(["prune", f"ckpt={best}", "prune.ratio=0.5", "data.workers=0", "trainer.accelerator=cpu",
                      f"data.path={other_data}", "data.imgsz=64", f"hydra.run.dir={run_dir}"], cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    before, after = summary["stages"]["train"], summary["stages"]["pruned"]
    assert after["params"] < 0.8 * before["params"] and after["gflops"] < before["gflops"]
    assert 0.0 <= after["map"] <= 1.0
    # The folder says which prune it holds, and what it cut, as a `train +prune=sparse` run's summary does.
    assert summary["prune"] == {"ratio": 0.5, "policy": "grouped", "aggregate": "max", "round_to": 8,
                                "min_channels": 8, "fold_removed": True, "finetune_epochs": 0, "plan": "plan_pruning"}
    assert 0 < after["removed_channels"] < after["total_channels"] and 0 <= after["removed_output_mass"] <= 1
    pruned = run_dir / "checkpoints" / "pruned.ckpt"
    assert summary["checkpoint"] == str(pruned)
    stored = torch.load(pruned, weights_only=True)
    assert stored["yolo_slim"]["plans"][0]["policy"] == "grouped"
    module = YOLOv5Module.load_from_checkpoint(pruned, map_location="cpu")
    assert count_parameters(module.inference_model) == after["params"]
    assert f"parameters {before['params']:,} -> {after['params']:,}" in (run_dir / "layers.txt").read_text()
    assert (run_dir / "predictions.png").stat().st_size > 1000  # dense | pruned on validation images
    validated = run_cli(["val", f"ckpt={pruned}", "data.workers=0", "trainer.accelerator=cpu"], cli_environment)
    assert validated.returncode == 0, validated.stderr[-3000:]
    scores = json.loads(validated.stdout[validated.stdout.index("{"):])
    assert (scores["data"], scores["imgsz"]) == (str(other_data.resolve()), 64)
    assert scores["map"] == pytest.approx(after["map"], abs=1e-6)


@pytest.mark.slow
def test_prune_needs_exactly_one_target(trained_run, tmp_path, cli_environment, capfd):
    best = trained_run / "checkpoints" / "best.ckpt"
    result = run_cli_in_process(["prune", f"ckpt={best}", f"hydra.run.dir={tmp_path}"], cli_environment, capfd)
    assert result.returncode != 0
    assert "give exactly one of prune.ratio, prune.threshold, prune.flops_target; found none" in result.stderr
    result = run_cli_in_process(["prune", f"ckpt={best}", "prune.ratio=1.5", f"hydra.run.dir={tmp_path}"],
                                cli_environment, capfd)
    assert "error: prune.ratio must be in [0, 1), found 1.5" in result.stderr
    # A target no plan can reach is a usage error too, found before the dense model is evaluated.
    result = run_cli(["prune", f"ckpt={best}", "prune.flops_target=0.001", f"hydra.run.dir={tmp_path}"],
                     cli_environment, 120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: prune.flops_target=0.001 cannot be met: with min_channels=" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_prune_and_fine_tune_on_two_processes(trained_run, tmp_path, cli_environment):
    # Each DDP child must run prune (not the default train), and one rank writes the summary and prints.
    # The fine-tune takes train's recipe: the optim group, 64 images per optimizer step, the loss at its size.
    run_dir = tmp_path / "pruned"
    result = run_cli(["prune", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", "prune.ratio=0.3",
                      "prune.finetune_epochs=1", "data.workers=0", "trainer.accelerator=cpu", "trainer.devices=2",
                      "optim.weight_decay=0.001", "data.imgsz=64", f"hydra.run.dir={run_dir}"], cli_environment, 300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("channels: params") == 1 and "error" not in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["train", "pruned", "finetuned"]
    assert all("latency_ms" in stage for stage in summary["stages"].values())
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "finetuned.ckpt")
    finetuned = torch.load(run_dir / "checkpoints" / "finetuned.ckpt", weights_only=True)
    # 24 images, batches of 8 over 2 ranks: 2 batches each, summed into one step (8 batches of 8 make 64)
    assert finetuned["global_step"] == 1
    assert finetuned["hyper_parameters"]["weight_decay"] == pytest.approx(0.001 * 8 * 8 / 64)
    assert finetuned["hyper_parameters"]["imgsz"] == 64
