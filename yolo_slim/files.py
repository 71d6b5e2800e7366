"""Files that a crash, or another process writing the same file, cannot leave half-written."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def write_atomically(path: str | os.PathLike, write: Callable[[IO[Any]], None], *, binary: bool = False) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    A reader (another rank, a parallel sweep job, a run resumed after a kill) sees the old file or the new one,
    never part of one. The temporary file lies in the target's folder because ``os.replace`` is a single step
    only within one filesystem (the system temp folder is often tmpfs). Written data is fsynced before the
    rename, so a machine crash cannot leave the new name on empty blocks. Nothing is left behind on failure (an
    exception); what a kill leaves, :func:`remove_abandoned_partials` removes.
    Text is written as UTF-8 with no newline translation (what the csv module needs).
    """
    target = Path(path)
    temporary = _beside(target)
    # Not tempfile.mkstemp: its file is 0600, and a checkpoint or summary should get the umask's usual mode.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        text_options = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(handle, "wb" if binary else "w", **text_options) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """:func:`write_atomically` for a text."""
    write_atomically(path, lambda file: file.write(text))


@contextlib.contextmanager
def written_beside(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside ``path`` for a writer that wants a file name (torch.onnx.export, torch.jit.save):
    renamed onto ``path`` when the block ends, after an fsync; removed if the block raises, so that a failed
    write leaves the old file, not a broken one. The name keeps ``path``'s suffix, which readers may go by.
    """
    target = Path(path)
    temporary = _beside(target, keep_suffix=True)
    try:
        yield temporary
        with temporary.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# The temporary names _beside gives: ".<name>.<pid>.<8 hex>.partial", with the target's suffix after it for
# written_beside's.
_PARTIAL = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.partial(\.[^.]+)?$")


def remove_abandoned_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, a power cut) left in ``folder``; returns
    them.

    An exception removes its own temporary file, a kill cannot. A file is abandoned when the process its name
    records is gone from this machine. Call it where only this process writes (a run folder at the start of its
    run): a writer on another machine of a shared file system could have that process number and be alive.
    """
    removed = []
    for path in Path(folder).glob(".*.partial*"):
        match = _PARTIAL.match(path.name)
        if match is None or not path.is_file() or _alive(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would send CTRL_C_EVENT, not ask
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else; other errors: not ours to judge
        return True
    return True


def _beside(target: Path, keep_suffix: bool = False) -> Path:
    """A hidden name in ``target``'s folder that no other writer picks (pid and random bits)."""
    unique = f"{os.getpid()}.{secrets.token_hex(4)}.partial"
    if keep_suffix:
        return target.with_name(f".{target.stem}.{unique}{target.suffix}")
    return target.with_name(f".{target.name}.{unique}")
