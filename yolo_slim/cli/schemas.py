"""The dataclasses that own the defaults, registered as Hydra structured configs.

Each default is written once, in the library: ``AugmentConfig``, ``SyntheticConfig``, ``LossConfig``,
``NMSConfig``, and the signatures of ``SlimCallback`` and of ``plan_pruning``/``compact``. The yaml
files pull them in through their defaults lists (``- /schema/nms@nms``) and only state what the command
changes, so a value in an override is checked against the field's type when the config is composed
(``data.augment.fliplr=abc`` fails at start-up, naming the key), an unknown key is refused, and a new
``SlimCallback`` argument reaches ``+prune=sparse`` without touching the CLI. The fields are read from the
modules' source (:mod:`yolo_slim.cli.source_fields`), so that a bad setting is reported before torch loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Optional

from yolo_slim.cli.source_fields import SourceField, dataclass_fields, function_parameters, package_source

SCHEMA_GROUP = "schema"

# The `+prune=sparse` settings that are the CLI's, not the callback's: `epoch` (one prune, the CLI's
# default epoch 20) or `epochs` (a list) become SlimCallback's `prune_epochs`; `imgsz` comes from the data.
PRUNE_EPOCH = 20
_NOT_SETTINGS = ("prune_epochs", "imgsz", "model_attr", "write_artifacts")

# Where each schema's fields are defined: (module, dataclass or function).
DATACLASSES = {"augment": ("yolo_slim.data.augment", "AugmentConfig"),
               "synthetic": ("yolo_slim.data.synthetic", "SyntheticConfig"),
               "loss": ("yolo_slim.models.loss", "LossConfig"),
               "nms": ("yolo_slim.models.postprocess", "NMSConfig")}
SLIM_CALLBACK = ("yolo_slim.lit.slim_callback", "SlimCallback.__init__")
PLAN_PRUNING = ("yolo_slim.slim.plan", "plan_pruning")
COMPACT = ("yolo_slim.slim.compact", "compact")


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent; called before any composition)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, (module, class_name) in DATACLASSES.items():
        store.store(group=SCHEMA_GROUP, name=name, node=dataclass_schema(class_name, module))
    store.store(group=SCHEMA_GROUP, name="slim", node=slim_settings())
    store.store(group=SCHEMA_GROUP, name="plan", node=plan_settings())


def dataclass_schema(class_name: str, module: str) -> type:
    """The library dataclass's fields, types and defaults in a plain dataclass of the same name: OmegaConf
    makes a frozen one read-only, which would refuse every override. (The library's frozen class still checks
    the values it is built with.)"""
    fields = [(item.name, item.annotation, dataclasses.field(default=item.default))
              for item in dataclass_fields(package_source(module), class_name)]
    return dataclasses.make_dataclass(class_name, fields)


def slim_settings() -> type:
    """A dataclass of SlimCallback's settings, read off its signature (names, types, defaults)."""
    fields: list[tuple[str, Any, dataclasses.Field]] = [
        ("epoch", int, dataclasses.field(default=PRUNE_EPOCH)),
        ("epochs", Optional[Any], dataclasses.field(default=None)),
        *_settings(function_parameters(package_source(SLIM_CALLBACK[0]), SLIM_CALLBACK[1]),
                   skip=("self", *_NOT_SETTINGS)),
    ]
    return dataclasses.make_dataclass("SlimSettings", fields)


def plan_settings() -> type:
    """A dataclass of the `prune` command's settings: plan_pruning's keywords and compact's
    ``fold_removed``, read off their signatures, and the command's own ``finetune_epochs``."""
    planner = function_parameters(package_source(PLAN_PRUNING[0]), PLAN_PRUNING[1])
    compactor = function_parameters(package_source(COMPACT[0]), COMPACT[1])
    fields = [*_settings(planner, skip=("model", "imgsz")),  # imgsz: the checkpoint's
              *_settings(compactor, skip=("model", "plan")),
              ("finetune_epochs", int, dataclasses.field(default=0))]
    return dataclasses.make_dataclass("PlanSettings", fields)


def _settings(parameters: list[SourceField], skip: tuple[str, ...]) -> list[tuple[str, Any, dataclasses.Field]]:
    """``(name, type, default)`` of each parameter but ``skip``, typed as OmegaConf can check them."""
    return [(item.name, _config_type(item.annotation), dataclasses.field(default=item.default))
            for item in parameters if item.name not in skip]


def _config_type(annotation: Any) -> Any:
    """The annotation as OmegaConf can check it: plain types and Optional ones; Any for unions of others
    (``float | Sequence[float]``), which SlimCallback's constructor checks itself."""
    plain = (int, float, str, bool)
    if annotation in plain:
        return annotation
    arguments = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        others = [a for a in arguments if a is not type(None)]
        if len(others) == 1 and others[0] in plain and len(arguments) == 2:
            return Optional[others[0]]
    return Any
