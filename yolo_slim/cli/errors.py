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
from collections.abc import Iterator, Sequence

EXIT_USAGE = 2


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


def one_line(message: str) -> str:
    """A multi-line message joined into one: its non-empty lines, stripped, separated by '; '."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines) if lines else message


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
        parent, _, leaf = key.rpartition(".")
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "VALUE")
        message = f"there is no setting {key} (write +{key}={value} to add a new one)"
        suggestion = _closest_key(command, key, overrides)
        return f"{message}; did you mean {suggestion}?" if suggestion else message
    return None


def _closest_key(command: str, key: str, overrides: Sequence[str]) -> str | None:
    """The nearest existing setting to a mistyped one, from the command's config composed without it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from yolo_slim.cli import config_dir
    from yolo_slim.cli.schemas import register_schemas

    register_schemas()

    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key and not o.startswith("hydra")]
    for attempt in (others, []):
        try:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                config = OmegaConf.to_container(compose(config_name=command, overrides=list(attempt)), resolve=False)
            break
        except Exception:  # noqa: BLE001 - another bad override: retry with the defaults alone
            config = None
    if config is None:
        return None
    keys = list(_dotted_keys(config))
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.7)
    return close[0] if close else None


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
