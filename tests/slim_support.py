"""Tiny modules and data for the SlimCallback tests (also run as a DDP script)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import lightning as L
import torch

from yolo_slim.data import YOLODataModule
from yolo_slim.data.synthetic import SyntheticConfig
from yolo_slim.lit import SlimCallback, restore_pruned_network
from yolo_slim.models import YOLOv5
from yolo_slim.models.loss import LossConfig, YOLOv5Loss
from yolo_slim.slim import plan_pruning

TINY = SyntheticConfig(num_train=24, num_val=8, image_size=64, seed=5, min_object_size_fraction=0.1)


def tiny_datamodule(cache_dir: str | Path) -> YOLODataModule:
    return YOLODataModule(data=None, imgsz=64, batch_size=8, workers=0, synthetic=TINY, cache_dir=Path(cache_dir))


class UsersModule(L.LightningModule):
    """What a user might write: their own module holding a yolo_slim YOLOv5, their own optimizer."""

    def __init__(self, nc: int = 4) -> None:
        super().__init__()
        self.detector = YOLOv5("yolov5n", nc=nc)
        self.loss = YOLOv5Loss(self.detector.detect.anchors, nc, LossConfig().scaled(3, nc, 64))

    def training_step(self, batch, batch_idx):
        loss, _ = self.loss(self.detector(batch["images"].float() / 255), batch["targets"])
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.detector.parameters(), lr=0.01, momentum=0.9)

    def on_load_checkpoint(self, checkpoint):
        restore_pruned_network(self, checkpoint)  # the one line needed to resume a pruned run


class ZeroLossModule(L.LightningModule):
    """Loss with zero gradient everywhere: only the sparsity term moves γ."""

    def __init__(self) -> None:
        super().__init__()
        self.model = YOLOv5("yolov5n", nc=4)

    def training_step(self, batch, batch_idx):
        return sum(level.sum() for level in self.model(batch["images"].float() / 255)) * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=1.0)


def weights_digest(module: torch.nn.Module) -> str:
    """Hash of the parameters (not BN running stats: each rank updates those from its own last batch)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


class _RecordRank(L.Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.choice = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:  # the targeted choice before the prune, as this rank holds it
            slim = next(c for c in trainer.callbacks if isinstance(c, SlimCallback))
            self.choice = slim.method.state_dict().get("choice")

    def on_fit_end(self, trainer, pl_module) -> None:
        network = pl_module.detector
        disagree = next(c for c in trainer.callbacks if isinstance(c, _DisagreeOnRankOne))
        has_sync = any(isinstance(m, torch.nn.SyncBatchNorm) for m in network.modules())
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(
            {"spec": network.spec.to_dict(), "digest": weights_digest(network), "sync_bn": has_sync,
             "params": sum(p.numel() for p in network.parameters()), "choice": self.choice,
             "local_choice": disagree.local_choice}))


class _DisagreeOnRankOne(L.Callback):
    """Gives rank 1 other γ for the first targeted choice, so that a choice made on each rank from its own
    γ would differ: the recorded ``local_choice`` shows it would, and the test checks that rank 1 shrinks
    rank 0's choice all the same. The true γ are put back right after the choice (this callback's
    ``on_train_batch_start`` runs after SlimCallback's), so the ranks train the same weights from there on."""

    def __init__(self) -> None:
        self.local_choice = None
        self._saved: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        slim = next(c for c in trainer.callbacks if isinstance(c, SlimCallback))
        norms = [m for m in pl_module.detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        if trainer.global_rank == 1:
            generator = torch.Generator().manual_seed(123)
            with torch.no_grad():
                for norm in norms:
                    self._saved.append(norm.weight.detach().clone())
                    norm.weight.copy_(0.1 + torch.rand(norm.weight.shape, generator=generator))
        self.local_choice = plan_pruning(pl_module.detector, ratio=slim.target_ratio, policy=slim.policy,
                                         round_to=slim.round_to, min_channels=slim.min_channels).to_dict()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._saved:
            norms = [m for m in pl_module.detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            with torch.no_grad():
                for norm, weight in zip(norms, self._saved):
                    norm.weight.copy_(weight)
            self._saved = []


def run_ddp(folder: Path, cache_dir: Path) -> None:
    """Two CPU processes (gloo): targeted sparse training, prune at epoch 1, fine-tune; each rank records its
    network and the channels it had chosen to shrink."""
    L.seed_everything(0, workers=True)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[SlimCallback(method="targeted", warmup=0.0, hold=0.5, prune_epochs=1, ratio=0.5,
                                                write_artifacts=False),
                                   _DisagreeOnRankOne(), _RecordRank(folder)])
    trainer.fit(UsersModule(), datamodule=tiny_datamodule(cache_dir))


if __name__ == "__main__":
    run_ddp(Path(sys.argv[1]), Path(sys.argv[2]))
