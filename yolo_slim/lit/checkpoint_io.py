"""Checkpoints that a crash cannot leave half-written, and whose record survives a moved run folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from yolo_slim.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside its target, then rename it into place.

    A process killed while saving (out of memory, preempted, SIGKILL) leaves the previous ``last.ckpt``
    readable, so the run can be resumed from it. Lightning's own save goes through an fsspec transaction
    whose temporary file lies in the system temp folder: moving it onto another filesystem (``/tmp`` is
    often tmpfs) is a copy, which a crash can cut short. ``os.replace`` within one folder cannot be.
    Remote paths (``s3://`` ...) keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda file: torch.save(checkpoint, file), binary=True)


class RunFolderCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose record follows its run folder when the folder is moved or copied.

    Lightning saves the callback's state with absolute paths. On resume it compares the saved ``dirpath``
    with its own, and when they differ it keeps only ``best_model_path`` (the old folder's) and forgets
    ``best_model_score``, so the next validation would overwrite ``best.ckpt`` whatever its score. A run
    folder holds its checkpoints, so a changed ``dirpath`` is the same folder elsewhere: each saved path
    inside the old ``dirpath`` is read as the file of that name in this one, and the record is restored whole.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved is not None and self.dirpath is not None and Path(saved) != Path(self.dirpath):
            state_dict = _moved(state_dict, Path(saved), Path(self.dirpath))
        super().load_state_dict(state_dict)


def _moved(state_dict: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """``state_dict`` (ModelCheckpoint's) with its paths inside ``old`` moved to ``new``."""
    def here(path: object) -> object:
        if not isinstance(path, str) or not path or Path(path).parent != old:
            return path
        return str(new / Path(path).name)

    moved = {key: here(value) for key, value in state_dict.items()}
    moved["best_k_models"] = {here(path): score for path, score in state_dict.get("best_k_models", {}).items()}
    moved["dirpath"] = str(new)
    return moved
