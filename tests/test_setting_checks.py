"""Settings that used to fail only inside the fit (or not at all) are refused while the job is built,
with the setting's name: the CLI prints that line and exits 2 (tests/test_errors_cli.py)."""

import importlib.util

import pytest
import torch
from cli_support import TINY_TRAIN
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from yolo_slim.cli import config_dir
from yolo_slim.cli.resume import RESUMABLE
from yolo_slim.cli.schemas import register_schemas
from yolo_slim.cli.settings import require_bool, require_number, require_stride_multiple
from yolo_slim.cli.train import build_job
from yolo_slim.models import YOLOv5


def _train_config(overrides: list[str]):
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=[*TINY_TRAIN, *overrides])


@pytest.mark.parametrize("overrides,message", [
    # P6 layouts halve the map five times and then once more: 160 px cannot be split into 64-pixel cells
    (["model=yolov5n6", "data.imgsz=160"], "data.imgsz must be a multiple of 64 for this model"),
    (["model=yolov5-p7", "data.imgsz=192"], "data.imgsz must be a multiple of 128 for this model"),
    (["+prune=sparse", "prune.epoch=2"], "prune.epoch must be < trainer.max_epochs=2"),
    (["+prune=sparse", "prune.epochs=[1,3]", "prune.ratio=[0.2,0.4]"], "prune.epochs must be < trainer.max_epochs=2"),
    (["+prune=sparse", "prune.ratio=1.5"], "prune.ratio must be in [0, 1), found 1.5"),  # named as the user wrote it
    (["+prune=sparse", "prune.ratio=abc"], "prune.ratio must be a number in [0, 1) or a list of them (one per "
                                           "prune epoch), found 'abc'"),
    (["+prune=sparse", "prune.ratio=null"], "prune.ratio must be a number in [0, 1) or a list of them"),
    (["+prune=sparse", "prune.ratio={a:1}"], "prune.ratio must be a number in [0, 1) or a list of them"),
    (["+prune=sparse", "prune.method=L1"], "prune.method must be one of ('l1', 'targeted', 'polarize'), found 'L1'"),
    (["model.nc=3"], "model.nc=3, but the data has 4 classes: train takes the count from the data"),
    (["model.nc=many"], "model.nc must be an int >= 1, found 'many'"),
    (["optim.optimizer.lr=fast"], "optim.optimizer.lr must be a number, found 'fast'"),
    (["optim.optimizer.nesterov=maybe"], "optim.optimizer.nesterov must be true or false, found 'maybe'"),
    (["optim.scheduler.warmup_epochs=x"], "optim.scheduler.warmup_epochs must be a number, found 'x'"),
    (["optim.weight_decay=abc"], "optim.weight_decay must be a number >= 0, found 'abc'"),
    (["optim.ema_decay=1"], "optim.ema_decay must be in [0, 1)"),
    (["optim.ema_ramp=0"], "optim.ema_ramp must be a number >= 1"),
    (["+optim.optimizer.betas=[0.9,0.99]"], "optim.optimizer.betas is not an argument of torch.optim.SGD; its "
                                            "arguments: lr, momentum, dampening, weight_decay, nesterov"),
    (["optim.optimizer._target_=torch.optim.Nope"], "optim.optimizer could not be made"),
    (["optim.scheduler.shape=cosin"], "optim.scheduler does not accept its settings"),
    (["optim.scheduler.final_lr_ratio=0"], "final_lr_ratio must be in (0, 1]"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs must be an int >= 0, found -1"),  # Lightning's "no end"
    (["trainer.max_epochs=null"], "trainer.max_epochs must be an int >= 0, found None"),  # Lightning's 1000
    (["trainer.max_epochs=1.5"], "trainer.max_epochs must be an int >= 0, found 1.5"),
    (["data.augment.mosaic=2"], "data.augment.mosaic must be a probability in [0, 1]; found 2.0"),
    (["data.synthetic.num_train=0"], "data.synthetic.num_train must be an integer in"),
    (["trainer.gradient_clip_val=abc"], "lightning.Trainer refused the trainer.* settings: `gradient_clip_val`"),
    (["trainer.benchmark=maybe"], "lightning.Trainer refused the trainer.* settings: set_benchmark_cudnn"),
    (["trainer.devices=abc"], "lightning.Trainer refused the trainer.* settings: `devices`"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not an argument of lightning.Trainer; did you mean "
                               "trainer.max_epochs?"),
    pytest.param(["trainer.accelerator=tpu"], "the trainer.* settings need a package this environment lacks: "
                 "Requirement 'torch_xla", marks=pytest.mark.skipif(importlib.util.find_spec("torch_xla") is not None,
                                                                    reason="torch_xla is installed")),
    (["trainer.log_every_n_steps=abc"], "trainer.log_every_n_steps must be an int >= 1, found 'abc'"),
    (["trainer.num_nodes=0"], "trainer.num_nodes must be an int >= 1, found 0"),
    (["model.autoanchor=no"], "model.autoanchor must be true or false, found 'no'"),
    (["model=yolov5-p6", "data.imgsz=128", "model.autoanchor=false"],  # its yaml says `anchors: 3`
     "model.autoanchor=false, but the model yaml gives a count of anchors, not their sizes"),
    (["data.batch_size=0"], "data.batch_size must be an int >= 1, found 0"),
    (["seed=abc"], "seed must be an int in [0, 4294967295], found 'abc'"),
    (["seed=-1"], "seed must be an int in [0, 4294967295], found -1"),
])
def test_a_bad_setting_is_refused_before_the_fit(tmp_path, monkeypatch, synthetic_cache, overrides, message):
    monkeypatch.setenv("YOLO_SLIM_CACHE", synthetic_cache)
    with pytest.raises(ValueError) as raised:
        build_job(_train_config(overrides), tmp_path)
    assert message in str(raised.value)


def test_the_settings_that_pass_build_a_job(tmp_path, monkeypatch, synthetic_cache):
    monkeypatch.setenv("YOLO_SLIM_CACHE", synthetic_cache)
    job = build_job(_train_config(["model=yolov5n6", "data.imgsz=128", "+prune=sparse", "prune.epoch=1",
                                   "optim.optimizer.lr=0.02", "optim.ema_decay=0", "model.nc=4"]), tmp_path)
    assert job.imgsz == 128 and job.module.ema is None
    optimizer = job.module.optimizer_factory([{"params": list(job.module.model.parameters())}])
    assert optimizer.defaults["lr"] == 0.02


@pytest.mark.parametrize("value,expected", [(0.25, 0.25), (1, 1.0), ("0.5", 0.5)])
def test_numbers_in_range_pass(value, expected):
    assert require_number(value, "conf", minimum=0, maximum=1) == expected


@pytest.mark.parametrize("value", [1.5, -0.1, "abc", None, True, float("nan"), float("inf")])
def test_other_values_name_the_setting_and_its_range(value):
    with pytest.raises(ValueError, match=r"conf must be a number in \[0, 1\], found"):
        require_number(value, "conf", minimum=0, maximum=1)


@pytest.mark.parametrize("value", ["no", "false", 0, None])
def test_only_true_and_false_are_booleans(value):
    with pytest.raises(ValueError, match="save_images must be true or false"):
        require_bool(value, "save_images")
    assert require_bool(False, "save_images") is False


def test_val_and_prune_check_the_checkpoints_stride_too():
    model = YOLOv5("yolov5n6", nc=2)
    assert require_stride_multiple(256, model, "data.imgsz") == 256
    with pytest.raises(ValueError, match="data.imgsz must be a multiple of 64 for this model .*found 96; e.g. 128"):
        require_stride_multiple(96, model, "data.imgsz")


def test_every_setting_a_resume_may_change_can_be_given_without_a_plus():
    config = _train_config([])
    missing = object()
    assert [key for key in RESUMABLE if OmegaConf.select(config, key, default=missing) is missing] == []


@pytest.mark.parametrize("setting,message", [("model.weights", "model.weights=.*gone.pt' does not exist"),
                                             ("model.cfg", "model.cfg=.*gone.yaml' is neither a model yaml file")])
def test_a_resume_needs_no_starting_model_file(tmp_path, monkeypatch, synthetic_cache, setting, message):
    # The checkpoint being resumed holds the network: the weights or yaml it started from having gone since is
    # no reason to stop.
    monkeypatch.setenv("YOLO_SLIM_CACHE", synthetic_cache)
    saved = YOLOv5("yolov5n-v5", nc=4, names=["a", "b", "c", "d"])
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"yolo_slim": {"spec": saved.spec.to_dict(), "names": saved.names},
                "state_dict": {"model." + key: value for key, value in saved.state_dict().items()}}, checkpoint)
    gone = tmp_path / ("gone.pt" if setting == "model.weights" else "gone.yaml")
    config = _train_config([f"{setting}={gone}"])
    with pytest.raises(ValueError, match=message):
        build_job(config, tmp_path)  # a fresh run does need it
    job = build_job(config, tmp_path, resume=str(checkpoint))
    assert job.module.model.spec == saved.spec


def test_the_checkpoint_records_the_data_as_an_absolute_path(tmp_path, monkeypatch, synthetic_cache):
    # `prune ckpt=...` and `val ckpt=...` read it back, from whatever folder they are run in.
    monkeypatch.setenv("YOLO_SLIM_CACHE", synthetic_cache)
    data_yaml = build_job(_train_config([]), tmp_path).datamodule.data_yaml  # the synthetic set's data.yaml
    monkeypatch.chdir(data_yaml.parent.parent)
    relative = f"{data_yaml.parent.name}/{data_yaml.name}"
    job = build_job(_train_config([f"data.path={relative}"]), tmp_path)
    assert job.module.hparams.data == str(data_yaml.resolve())
