"""The dataclasses that own the defaults, registered as Hydra structured configs.

Each default is written once, in the library: ``AugmentConfig``, ``SyntheticConfig``, ``LossConfig``,
``NMSConfig``, and the signatures of ``SlimCallback`` and of ``plan_pruning``/``compact``. The yaml
files pull them in through their defaults lists (``- /schema/nms@nms``) and only state what the command
changes, so a value in an override is checked against the field's type when the config is composed
(``data.augment.fliplr=abc`` fails at start-up, naming the key), an unknown key is refused, and a new
``SlimCallback`` argument reaches ``+prune=sparse`` without touching the CLI.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Optional

SCHEMA_GROUP = "schema"

# The `+prune=sparse` settings that are the CLI's, not the callback's: `epoch` (one prune, the CLI's
# default epoch 20) or `epochs` (a list) become SlimCallback's `prune_epochs`; `imgsz` comes from the data.
PRUNE_EPOCH = 20
_NOT_SETTINGS = ("prune_epochs", "imgsz", "model_attr", "write_artifacts")


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent; called before any composition)."""
    from hydra.core.config_store import ConfigStore

    from yolo_slim.data.augment import AugmentConfig
    from yolo_slim.data.synthetic import SyntheticConfig
    from yolo_slim.models.loss import LossConfig
    from yolo_slim.models.postprocess import NMSConfig

    store = ConfigStore.instance()
    for name, node in (("augment", AugmentConfig), ("synthetic", SyntheticConfig), ("loss", LossConfig),
                       ("nms", NMSConfig)):
        store.store(group=SCHEMA_GROUP, name=name, node=_editable(node))
    store.store(group=SCHEMA_GROUP, name="slim", node=slim_settings())
    store.store(group=SCHEMA_GROUP, name="plan", node=plan_settings())


def _editable(frozen: type) -> type:
    """The same fields, types and defaults in a plain dataclass: OmegaConf makes a frozen one read-only,
    which would refuse every override. (The library's frozen class still checks the values it is built with.)"""
    hints = typing.get_type_hints(frozen)
    fields = []
    for item in dataclasses.fields(frozen):
        if item.default_factory is not dataclasses.MISSING:
            default = dataclasses.field(default_factory=item.default_factory)
        else:
            default = dataclasses.field(default=item.default)
        fields.append((item.name, hints[item.name], default))
    return dataclasses.make_dataclass(frozen.__name__, fields)


def slim_settings() -> type:
    """A dataclass of SlimCallback's settings, read off its signature (names, types, defaults)."""
    from yolo_slim.lit.slim_callback import SlimCallback

    fields: list[tuple[str, Any, dataclasses.Field]] = [
        ("epoch", int, dataclasses.field(default=PRUNE_EPOCH)),
        ("epochs", Optional[Any], dataclasses.field(default=None)),
        *_signature_fields(SlimCallback.__init__, skip=_NOT_SETTINGS),
    ]
    return dataclasses.make_dataclass("SlimSettings", fields)


def plan_settings() -> type:
    """A dataclass of the `prune` command's settings: plan_pruning's keywords and compact's
    ``fold_removed``, read off their signatures, and the command's own ``finetune_epochs``."""
    from yolo_slim.slim import compact, plan_pruning

    fields = [*_signature_fields(plan_pruning, skip=("model", "imgsz")),  # imgsz: the checkpoint's
              *_signature_fields(compact, skip=("model", "plan")),
              ("finetune_epochs", int, dataclasses.field(default=0))]
    return dataclasses.make_dataclass("PlanSettings", fields)


def _signature_fields(function: Any, skip: tuple[str, ...]) -> list[tuple[str, Any, dataclasses.Field]]:
    """``(name, type, default)`` of each parameter of ``function`` but ``self`` and ``skip``."""
    hints = typing.get_type_hints(function)
    fields = []
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or name in skip:
            continue
        annotation = hints.get(name, parameter.annotation)
        if annotation is inspect.Parameter.empty or isinstance(annotation, str):
            annotation = Any  # unannotated (or unresolvable): the function checks the value
        fields.append((name, _config_type(annotation), dataclasses.field(default=parameter.default)))
    return fields


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
