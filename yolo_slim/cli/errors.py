"""Errors the user caused, as one line; everything else as the crash it is.

A bad override, a bad data.yaml, a missing, corrupt or unsafe checkpoint, bad prune arguments, data
whose classes do not fit the checkpoint: these are found while a command sets itself up, and each
message already says what is wrong. So the set-up of every command runs inside :func:`users_input`,
which turns those exceptions into :class:`UsageError`; ``main`` prints a UsageError (and Hydra's own
composition errors) as ``yolo_slim <command>: error: <message>`` and exits with status 2. An exception
raised later (during training, say) is a bug or a fault of the machine: it keeps its traceback, exit 1.
``HYDRA_FULL_ERROR=1`` shows the traceback of every error, as with any Hydra application.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)
EXIT_USAGE = 2
# A run stopped by a signal exits as a shell reports a process the signal ended, 128 + its number, so that a
# scheduler or a script sees an unfinished run (Lightning itself ends a fit stopped by SIGTERM with status 0).
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


class UsageError(Exception):
    """A mistake in the command: a setting, a file, the data. Printed as one line; exit status 2."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import OmegaConfBaseException

    # ValueError covers yolo_slim's own checks, CheckpointFormatError and UnsafeCheckpointError.
    return ValueError, FileNotFoundError, NotADirectoryError, OmegaConfBaseException, MisconfigurationException


@contextlib.contextmanager
def users_input() -> Iterator[None]:
    """Run a command's set-up: the errors it raises are the user's (see the module docstring)."""
    try:
        yield
    except UsageError:
        raise
    except _user_error_types() as error:
        raise UsageError(one_line(str(error))) from error


@contextlib.contextmanager
def stopped_by_signal(trainer: Any, continue_hint: Callable[[], str]) -> Iterator[None]:
    """Run a fit; when SIGTERM or Ctrl+C stops it, log one line saying so and how to go on (``continue_hint()``,
    asked then: what was saved by then may tell), then exit 143 or 130.

    Lightning stops a fit on SIGTERM by raising ``SIGTERMException``, a SystemExit without a code (status 0),
    and on Ctrl+C ends its graceful shutdown with ``sys.exit(1)``, the status of a crash; neither says where the
    run stands.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        yield
    except SystemExit as stop:
        if isinstance(stop, SIGTERMException):
            name, status = "SIGTERM", EXIT_SIGTERM
        elif getattr(trainer, "interrupted", False):
            name, status = "Ctrl+C (SIGINT)", EXIT_SIGINT
        else:
            raise
        if trainer.is_global_zero:
            log.error("stopped by %s in epoch %d, before the run ended: %s", name, trainer.current_epoch,
                      continue_hint())
        raise SystemExit(status) from None


def one_line(message: str) -> str:
    """A multi-line message joined into one: its non-empty lines, stripped, separated by '; ' (by a space after
    a line that ends in ':', which introduces the next)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return message
    joined = lines[0]
    for line in lines[1:]:
        joined += (" " if joined.endswith(":") else "; ") + line
    return joined


def describe_hydra_error(error: BaseException, command: str, overrides: Sequence[str]) -> str | None:
    """One line for an error Hydra raised while composing the config, or ``None`` for any other error."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException):
        text = str(error)
        options = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
        head = text.split("\n\n")[0].strip()
        return f"{one_line(head)}; available: {', '.join(options)}" if options else one_line(text)
    if isinstance(error, OverrideParseException):
        return one_line(str(error).split("See https://")[0])
    if isinstance(error, ConfigCompositionException):
        match = re.match(r"Could not override '([^']+)'", str(error))
        if match is None:  # e.g. a value of the wrong type for its schema: the cause says which key and why
            cause = error.__cause__
            return one_line(f"{error}: {cause}" if cause is not None else str(error))
        key = match.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "VALUE")
        return no_such_setting(command, key, value, _composed(command, key, overrides))
    if isinstance(error, ValueError) and str(error).startswith("Config group override must be a string"):
        return _group_set_to_null(overrides) or one_line(str(error))
    return None


def _group_set_to_null(overrides: Sequence[str]) -> str | None:
    """The line for ``model=null``: a config group takes one of its options (Hydra says only "Got NoneType")."""
    from yolo_slim.cli import config_dir

    for override in overrides:
        key, _, value = override.partition("=")
        folder = config_dir() / key.lstrip("+~")
        if value == "null" and folder.is_dir():
            options = sorted(path.stem for path in folder.glob("*.yaml"))
            more = f", ... ({len(options)} in all, in {folder})" if len(options) > 12 else ""
            shown = ", ".join(options[:12]) + more
            return f"{override}: {key.lstrip('+~')} is a config group, which takes one of its options: {shown}"
    return None


# The sections a command hands on to a library that checks their keys itself: there, and only there,
# `+key=value` adds a setting someone reads. Anywhere else Hydra would keep the new key and nothing use it.
OPEN_SECTIONS = {"trainer": "lightning.Trainer", "optim.optimizer": "the optimizer (optim.optimizer._target_)",
                 "optim.scheduler": "the LR schedule (optim.scheduler._target_)"}


def no_such_setting(command: str, key: str, value: str, config: dict | None) -> str:
    """The line for a key the command's ``config`` (composed without it) lacks: the nearest one, or the
    settings there are."""
    section = _open_section(key, config)
    if section is not None:
        message = f"there is no setting {key} (write +{key}={value} to pass a new argument to {OPEN_SECTIONS[section]})"
    else:
        message = f"there is no setting {key} for `{command}`"
    close = difflib.get_close_matches(key, list(_dotted_keys(config)), n=1, cutoff=0.7) if config else []
    if close:
        return f"{message}; did you mean {close[0]}?"
    if section is None and config:
        node, prefix = config, ""  # the settings of the deepest section of `key` that exists
        for part in key.split(".")[:-1]:
            if not isinstance(node.get(part), dict):
                break
            node, prefix = node[part], f"{prefix}{part}."
        names = sorted(f"{prefix}{name}.*" if isinstance(child, dict) else f"{prefix}{name}"
                       for name, child in node.items())
        return f"{message}; {'its settings' if not prefix else 'the settings there'}: {', '.join(names)}"
    return message


def refuse_unread_additions(command: str, overrides: Sequence[str]) -> None:
    """Refuse ``+key=value`` where no part of ``command`` would read the key (``val +data.imgsz2=64`` would run
    as if it had not been written). Group appends (``+prune=sparse``) and Hydra's own keys are left to Hydra.

    Raises:
        UsageError: the first such key, with the nearest existing setting.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from yolo_slim.cli import config_dir

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except OverrideParseException:
        return  # Hydra reports it, with its own message
    # A user's own config groups come in through hydra.searchpath: a dotless key may be one of them.
    searched = any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides)
    for override in parsed:
        key = override.key_or_group
        group = (config_dir() / key.replace(".", "/")).is_dir() or (searched and "." not in key)
        if not override.is_add() or key.split(".")[0] == "hydra" or group:
            continue
        config = _composed(command, key, overrides)
        if _open_section(key, config) is None:
            value = override.input_line.split("=", 1)[1] if override.input_line else "VALUE"
            raise UsageError(no_such_setting(command, key, value, config))


def _open_section(key: str, config: dict | None) -> str | None:
    """The section of :data:`OPEN_SECTIONS` ``key`` lies in, if the command's config has that section."""
    for section in OPEN_SECTIONS:
        node: object = config
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if key.startswith(f"{section}.") and isinstance(node, dict):
            return section
    return None


def _composed(command: str, key: str, overrides: Sequence[str]) -> dict | None:
    """The command's config composed without ``key`` (with the user's other overrides when they compose)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from yolo_slim.cli import config_dir
    from yolo_slim.cli.schemas import register_schemas

    register_schemas()
    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key and not o.startswith(("hydra", "-"))]
    for attempt in (others, []):
        try:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                return OmegaConf.to_container(compose(config_name=command, overrides=list(attempt)), resolve=False)
        except Exception:  # noqa: BLE001 - another bad override: retry with the defaults alone
            continue
    return None


def _dotted_keys(node: object, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{prefix}{name}"
            yield path
            yield from _dotted_keys(value, f"{path}.")


def report(command: str, message: str) -> None:
    """Print the one line on stderr, and into the run's log file when the run has one."""
    line = f"yolo_slim{' ' + command if command else ''}: error: {message}"
    print(line, file=sys.stderr)
    record = logging.LogRecord("yolo_slim", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
