"""How the trainer and optim groups become Lightning's settings: `trainer.precision: auto` (the default of train, val
and prune: mixed precision on CUDA, fp32 elsewhere), and the accumulation and weight decay of the nominal batch."""

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from yolo_slim.cli import config_dir
from yolo_slim.cli.schemas import register_schemas
from yolo_slim.cli.settings import optimization, trainer_arguments


def _trainer_node(command: str, overrides: list[str]):
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=command, overrides=[*(["ckpt=x"] if command != "train" else []), *overrides]).trainer


@pytest.mark.parametrize("command", ["train", "val", "prune"])
@pytest.mark.parametrize("cuda,overrides,expected", [
    (True, [], "16-mixed"),
    (False, [], "32-true"),
    (True, ["trainer.accelerator=gpu"], "16-mixed"),
    (True, ["trainer.accelerator=cuda"], "16-mixed"),
    (True, ["trainer.accelerator=cpu"], "32-true"),  # a CPU run on a GPU machine stays in fp32
    (True, ["trainer.precision=32-true"], "32-true"),  # a value given is passed on as it is
    (False, ["trainer.precision=bf16-mixed"], "bf16-mixed"),
])
def test_auto_precision_follows_the_device(monkeypatch, command, cuda, overrides, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    node = _trainer_node(command, overrides)
    if not any(override.startswith("trainer.precision=") for override in overrides):
        assert node.precision == "auto"  # the shipped default of every command
    arguments = trainer_arguments(node)
    assert arguments.pop("precision") == expected
    given = {key: value for key, value in OmegaConf.to_container(node).items() if key != "precision"}
    assert arguments == given and "accelerator" in arguments  # nothing but the precision is touched


def test_lightning_takes_the_resolved_default_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test: Lightning sets it
    arguments = trainer_arguments(_trainer_node("train", ["trainer.accelerator=cpu"]))
    trainer = L.Trainer(**arguments, logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    assert trainer.precision == "32-true"
    assert torch.backends.cudnn.benchmark is True  # the shipped default, set by Lightning from trainer.benchmark


@pytest.mark.parametrize("batch_size,processes,accumulate", [(16, 1, 4), (16, 2, 2), (16, 4, 1), (8, 2, 4)])
def test_the_nominal_batch_counts_the_images_of_every_process(batch_size, processes, accumulate):
    # YOLOv5's --batch-size is the total over its DDP ranks; ours (data.batch_size) is per process.
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        optim = compose(config_name="train").optim
    settings = optimization(optim, batch_size, None, processes=processes)
    assert settings.accumulate == accumulate
    # Weight decay scales with the images per optimizer step, all processes counted: 64 of them here.
    assert settings.weight_decay == pytest.approx(optim.weight_decay)
    assert optimization(optim, batch_size, 1, processes=processes).weight_decay == pytest.approx(
        optim.weight_decay * batch_size * processes / optim.nominal_batch_size)


def test_a_trainer_made_here_says_nothing_of_lightnings_cloud(caplog):
    from yolo_slim.cli.settings import make_trainer

    with caplog.at_level("INFO"):
        make_trainer({"accelerator": "cpu", "enable_progress_bar": False}, logger=False, enable_checkpointing=False)
        L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)  # also after: the filter stays
    lightning_lines = [r.getMessage() for r in caplog.records if r.name.startswith("lightning")]
    assert lightning_lines and not any(line.startswith("💡 Tip") for line in lightning_lines)  # GPU available: ...
