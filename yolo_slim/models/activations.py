"""The activation a model yaml's ``activation:`` key names, read without ``eval``.

ultralytics evaluates the string (``Conv.default_act = eval(act)``), which runs whatever a yaml
says. Here the text must be one call from a short allow-list, with literal numeric arguments:
``nn.SiLU()``, ``nn.LeakyReLU(0.1)``, ``nn.ReLU()``, ``nn.Hardswish()`` ... Every Conv unit built
with ``act=True`` then uses it, as in ultralytics. The canonical text (``nn.LeakyReLU(0.1)``) is what
a spec stores, so checkpoints carry the activation with the widths.
"""

from __future__ import annotations

import re

from torch import nn

DEFAULT_ACTIVATION = "nn.SiLU()"
"""What a Conv unit applies when the yaml names no activation (YOLOv5 v6.0 and later)."""

# name -> (class, number of numeric positional arguments it accepts). Elementwise functions only:
# compaction folds a removed channel's constant output act(β) into its consumers, which needs the
# activation to act on each channel alone.
_ALLOWED: dict[str, tuple[type[nn.Module], int]] = {
    "SiLU": (nn.SiLU, 0),
    "ReLU": (nn.ReLU, 0),
    "ReLU6": (nn.ReLU6, 0),
    "LeakyReLU": (nn.LeakyReLU, 1),
    "Hardswish": (nn.Hardswish, 0),
    "Mish": (nn.Mish, 0),
    "GELU": (nn.GELU, 0),
    "ELU": (nn.ELU, 1),
    "Sigmoid": (nn.Sigmoid, 0),
}
_CALL = re.compile(r"^\s*(?:torch\.)?(?:nn\.)?(?P<name>[A-Za-z0-9_]+)\s*\((?P<args>[^()]*)\)\s*$")


def canonical_activation(text: object) -> str:
    """``"nn.LeakyReLU(0.1)"`` for ``"nn.LeakyReLU(0.1)"``, ``"LeakyReLU(negative_slope=0.1)"``, ``"SiLU"`` ...

    Raises:
        ValueError: not a call of an allowed activation with numeric arguments; the message lists them.
    """
    allowed = ", ".join(f"nn.{name}()" for name in _ALLOWED)
    if not isinstance(text, str):
        raise ValueError(f"activation must be a string such as 'nn.SiLU()', found {text!r}; allowed: {allowed}")
    match = _CALL.match(text if "(" in text else f"{text}()")
    if match is None or match["name"] not in _ALLOWED:
        raise ValueError(f"activation {text!r} is not supported; allowed: {allowed} "
                         f"(numeric arguments only, e.g. nn.LeakyReLU(0.1))")
    name, accepted = match["name"], _ALLOWED[match["name"]][1]
    values = []
    for piece in filter(None, (p.strip() for p in match["args"].split(","))):
        piece = piece.split("=", 1)[1].strip() if "=" in piece else piece  # keyword form of the one argument
        if piece in ("True", "False"):  # inplace=..., irrelevant to the result
            continue
        try:
            values.append(float(piece))
        except ValueError:
            raise ValueError(f"activation {text!r}: argument {piece!r} is not a number") from None
    if len(values) > accepted:
        raise ValueError(f"activation {text!r}: nn.{name} takes at most {accepted} numeric argument(s)")
    return f"nn.{name}({', '.join(repr(v) for v in values)})"


def make_activation(text: str) -> nn.Module:
    """A new module for an activation text (canonical or not)."""
    match = _CALL.match(canonical_activation(text))
    assert match is not None  # canonical_activation only returns texts of this form
    cls = _ALLOWED[match["name"]][0]
    values = [float(v) for v in filter(None, (p.strip() for p in match["args"].split(",")))]
    return cls(*values)
