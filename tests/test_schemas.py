"""Each default written once: the yaml files pull the dataclasses in as Hydra structured configs."""

import dataclasses
import inspect
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from yolo_slim.cli import config_dir
from yolo_slim.cli import schemas
from yolo_slim.cli.schemas import register_schemas, slim_settings
from yolo_slim.cli.source_fields import SourceFieldError, dataclass_fields, function_parameters, package_source
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


def test_a_new_slimcallback_argument_needs_no_cli_change(monkeypatch, tmp_path):
    original = SlimCallback.__init__
    source = package_source(schemas.SLIM_CALLBACK[0]).read_text(encoding="utf-8")
    signature_end = "write_artifacts: bool = True) -> None:"
    assert source.count(signature_end) == 1
    edited = tmp_path / "slim_callback.py"  # the callback's module with one argument added to its signature
    edited.write_text(source.replace(signature_end, "write_artifacts: bool = True, verbose_prune: bool = False) "
                                                    "-> None:"), encoding="utf-8")
    monkeypatch.setattr(schemas, "package_source", lambda module: edited)

    def with_extra(self, *args, verbose_prune: bool = False, **kwargs):  # what that edited module would build
        self.verbose_prune = verbose_prune
        original(self, *args, **kwargs)

    monkeypatch.setattr(SlimCallback, "__init__", with_extra)
    schema = slim_settings()
    assert "verbose_prune" in {f.name for f in dataclasses.fields(schema)}  # +prune=sparse gains the setting
    config = OmegaConf.merge(OmegaConf.structured(schema), {"verbose_prune": True, "epoch": 3, "ratio": 0.4})
    callback = build_slim_callback(config, imgsz=64)  # and the CLI passes it on, unchanged
    assert callback.verbose_prune is True and callback.prune_epochs == [3] and callback.ratios == [0.4]


@pytest.mark.parametrize("target", [*schemas.DATACLASSES.values(), schemas.SLIM_CALLBACK, schemas.PLAN_PRUNING,
                                    schemas.COMPACT], ids=lambda target: target[1])
def test_the_fields_read_from_source_are_the_imported_ones(target):
    """The static reading (no torch at start-up) gives the names, types and defaults that importing gives."""
    found = pkgutil.resolve_name(f"{target[0]}:{target[1]}")  # the imported class or function
    path, hints = package_source(target[0]), typing.get_type_hints(found)
    if dataclasses.is_dataclass(found):
        expected = [(f.name, hints[f.name], f.default) for f in dataclasses.fields(found)]
        read = dataclass_fields(path, target[1])
    else:
        expected = [(name, hints.get(name, typing.Any), p.default if p.default is not p.empty else dataclasses.MISSING)
                    for name, p in inspect.signature(found).parameters.items()]
        read = function_parameters(path, target[1])
        expected = [(name, schemas._config_type(kind), default) for name, kind, default in expected]
        read = [dataclasses.replace(item, annotation=schemas._config_type(item.annotation)) for item in read]
    assert [(f.name, f.annotation, f.default) for f in read] == expected
    assert len(expected) >= 3


def test_a_default_the_source_cannot_give_is_an_error_naming_it(tmp_path):
    module = tmp_path / "settings.py"
    module.write_text("import math\nfrom dataclasses import dataclass, field\n\nLIMIT = 3\n\n\n@dataclass\n"
                      "class Settings:\n    limit: int = LIMIT\n    scale: float = math.pi\n", encoding="utf-8")
    with pytest.raises(SourceFieldError, match=r"Settings\.scale: the default 'math\.pi' is not a literal"):
        dataclass_fields(module, "Settings")
    module.write_text("def plan(model, *, ratio: float | None = None, limit: int = LIMIT2):\n    pass\n",
                      encoding="utf-8")
    with pytest.raises(SourceFieldError, match=r"plan\(limit\): the default 'LIMIT2'"):
        function_parameters(module, "plan")
    with pytest.raises(SourceFieldError, match="defines no Missing"):
        function_parameters(module, "Missing.__init__")
    module.write_text("from typing import ClassVar\n\n\nclass Settings:\n    registry: ClassVar[dict] = {}\n"
                      "    names: 'ClassVar[list]' = []\n    limit: int = 3\n    odd: frozenset = {[1]}\n",
                      encoding="utf-8")
    with pytest.raises(SourceFieldError, match=r"Settings\.odd: the default"):  # a set of lists: TypeError
        dataclass_fields(module, "Settings")
    module.write_text("class Settings:\n    registry: 'ClassVar[dict]' = {}\n    limit: int = 3\n", encoding="utf-8")
    assert [(f.name, f.annotation, f.default) for f in dataclass_fields(module, "Settings")] == [("limit", int, 3)]
    with pytest.raises(SourceFieldError, match="gone.py is missing: .*reinstall the package"):
        dataclass_fields(tmp_path / "gone.py", "Settings")


def test_a_bad_setting_is_reported_before_torch_loads():
    """The promise of yolo_slim/__init__.py: composing a command's config imports neither torch nor Lightning."""
    script = ("import sys\nfrom yolo_slim.cli import main\ntry:\n    main(['train', 'data.augment.fliplr=abc'])\n"
              "except SystemExit as stop:\n    print('exit', stop.code)\n"
              "print('loaded', sorted({'torch', 'lightning', 'torchvision'} & set(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.split("\n")[:2] == ["exit 2", "loaded []"], done.stdout + done.stderr
    assert "full_key: data.augment.fliplr" in done.stderr
