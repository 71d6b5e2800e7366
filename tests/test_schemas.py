"""Each default written once: the yaml files pull the dataclasses in as Hydra structured configs."""

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from yolo_slim.cli import config_dir
from yolo_slim.cli.schemas import register_schemas, slim_settings
from yolo_slim.cli.train import build_slim_callback
from yolo_slim.data.augment import AugmentConfig
from yolo_slim.lit.slim_callback import SlimCallback
from yolo_slim.models.loss import LossConfig
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.slim import compact, plan_pruning


def _compose(command: str, overrides: list[str]):
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=command, overrides=overrides)


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_the_composed_defaults_are_the_dataclasses_own():
    config = _compose("train", ["+prune=sparse"])
    assert OmegaConf.to_container(config.data.augment) == _defaults(AugmentConfig)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in OmegaConf.to_container(config.loss).items()} == \
        _defaults(LossConfig)
    for command in ("train", "val", "prune"):
        assert OmegaConf.to_container(_compose(command, ["ckpt=x"] if command != "train" else []).nms) == \
            _defaults(NMSConfig)
    prune = OmegaConf.to_container(config.prune)
    assert prune.pop("epoch") == 20 and prune.pop("epochs") is None
    signature = inspect.signature(SlimCallback.__init__).parameters
    assert prune == {name: signature[name].default for name in prune}  # the callback's own defaults
    one_shot = OmegaConf.to_container(_compose("prune", ["ckpt=x"]).prune)
    assert one_shot.pop("finetune_epochs") == 0
    assert one_shot.pop("fold_removed") is inspect.signature(compact).parameters["fold_removed"].default
    planner = inspect.signature(plan_pruning).parameters
    assert one_shot == {name: planner[name].default for name in one_shot}  # plan_pruning's own defaults
    assert set(one_shot) == set(planner) - {"model", "imgsz"}


def test_the_yaml_files_no_longer_restate_them():
    conf = Path(config_dir())
    assert yaml.safe_load((conf / "loss" / "yolov5.yaml").read_text()) == {"defaults": ["/schema/loss@_here_",
                                                                                        "_self_"]}
    assert set(yaml.safe_load((conf / "prune" / "sparse.yaml").read_text())) == {"defaults"}
    assert "prune" not in yaml.safe_load((conf / "prune.yaml").read_text())
    assert "augment" not in yaml.safe_load((conf / "data" / "default.yaml").read_text())
    for command in ("train", "val", "prune"):
        assert "nms" not in yaml.safe_load((conf / f"{command}.yaml").read_text())


@pytest.mark.parametrize("override,key", [("data.augment.fliplr=abc", "data.augment.fliplr"),
                                          ("loss.box=strong", "loss.box"), ("+prune=sparse prune.round_to=eight",
                                                                            "prune.round_to"),
                                          ("prune prune.round_to=eight", "prune.round_to"),
                                          ("prune prune.fold_removed=sometimes", "prune.fold_removed")])
def test_a_wrong_type_is_refused_at_composition_naming_the_key(override, key):
    command, *overrides = ["prune", "ckpt=x", *override.split()[1:]] if override.startswith("prune ") else \
        ["train", *override.split()]
    with pytest.raises(ConfigCompositionException) as error:
        _compose(command, overrides)
    assert f"full_key: {key}" in str(error.value.__cause__)


def test_a_new_slimcallback_argument_needs_no_cli_change(monkeypatch):
    original = SlimCallback.__init__

    def with_extra(self, *args, verbose_prune: bool = False, **kwargs):  # an argument added to the callback
        self.verbose_prune = verbose_prune
        original(self, *args, **kwargs)

    signature = inspect.signature(original)
    extra = inspect.Parameter("verbose_prune", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool)
    with_extra.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
    monkeypatch.setattr(SlimCallback, "__init__", with_extra)
    schema = slim_settings()
    assert "verbose_prune" in {f.name for f in dataclasses.fields(schema)}  # +prune=sparse gains the setting
    config = OmegaConf.merge(OmegaConf.structured(schema), {"verbose_prune": True, "epoch": 3, "ratio": 0.4})
    callback = build_slim_callback(config, imgsz=64)  # and the CLI passes it on, unchanged
    assert callback.verbose_prune is True and callback.prune_epochs == [3] and callback.ratios == [0.4]
