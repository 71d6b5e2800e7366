"""Checkpoints that a crash cannot leave half-written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
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
