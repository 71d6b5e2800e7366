"""Checkpoints are replaced atomically: a save that dies half-way leaves the previous file readable; a run
folder moved between two fits keeps its record of the best checkpoint."""

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from yolo_slim.lit import checkpoint_io
from yolo_slim.lit.checkpoint_io import AtomicCheckpointIO, RunFolderCheckpoint


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


class _Scored(BoringModel):
    """Its validation score falls every epoch: the best checkpoint is epoch 0's, whatever comes after."""

    def validation_step(self, batch, batch_idx):
        self.log("score", 1.0 / (self.current_epoch + 1))
        return super().validation_step(batch, batch_idx)


def _fit(run: Path, epochs: int, checkpoint_type: type[ModelCheckpoint], resume: Path | None = None) -> None:
    best = checkpoint_type(dirpath=run / "checkpoints", filename="best", monitor="score", mode="max")
    last = checkpoint_type(dirpath=run / "checkpoints", filename="last", monitor=None, every_n_epochs=1,
                           enable_version_counter=False)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[best, last], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_train_batches=2, limit_val_batches=1,
                        default_root_dir=run, plugins=[AtomicCheckpointIO()])
    trainer.fit(_Scored(), ckpt_path=resume)


@pytest.mark.parametrize("checkpoint_type", [RunFolderCheckpoint, ModelCheckpoint])
def test_a_moved_run_folder_keeps_its_best_checkpoint(tmp_path, checkpoint_type):
    _fit(tmp_path / "old", 2, checkpoint_type)
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")  # moved
    new = tmp_path / "new" / "checkpoints"
    _fit(tmp_path / "new", 3, checkpoint_type, resume=new / "last.ckpt")
    best_epoch = torch.load(new / "best.ckpt", weights_only=False)["epoch"]
    if checkpoint_type is RunFolderCheckpoint:
        assert best_epoch == 0  # epoch 2's lower score did not replace it
        assert sorted(p.name for p in new.iterdir()) == ["best.ckpt", "last.ckpt"]
    else:  # Lightning's own forgets the score when its folder changed: the next epoch is saved as a best too
        assert sorted(p.name for p in new.iterdir()) == ["best-v1.ckpt", "best.ckpt", "last.ckpt"]
        assert torch.load(new / "best-v1.ckpt", weights_only=False)["epoch"] == 2
