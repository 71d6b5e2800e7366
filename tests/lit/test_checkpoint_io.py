"""Checkpoints are replaced atomically: a save that dies half-way leaves the previous file readable."""

import pytest
import torch

from yolo_slim.lit import checkpoint_io
from yolo_slim.lit.checkpoint_io import AtomicCheckpointIO


def test_a_save_that_dies_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 3, "weights": torch.arange(1000.0)}, path)
    real_save = torch.save

    def dies_half_way(obj, file):  # the process is killed after half of the bytes reached the disk
        real_save(obj, file)
        file.truncate(file.tell() // 2)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(checkpoint_io.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 4, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 3  # still the whole previous file
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind
    io.save_checkpoint({"epoch": 5}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 5}
