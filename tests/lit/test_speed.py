"""TrainingSpeed: images/s per epoch from the warm-up batch on, in the logger and the log."""

import logging
import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from yolo_slim.lit.speed import METRIC, TrainingSpeed

STEP_SECONDS = 0.02
BATCH = 4


class _SlowModule(L.LightningModule):
    """A step that takes at least STEP_SECONDS, so the rate has a known ceiling."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        time.sleep(STEP_SECONDS)
        return self.layer(batch["images"].flatten(1)[:, :3]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(speed: TrainingSpeed, batches: int, epochs: int = 2) -> L.Trainer:
    samples = [{"images": torch.rand(3, 2, 2)} for _ in range(BATCH * batches)]
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[speed])
    trainer.fit(_SlowModule(), train_dataloaders=DataLoader(samples, batch_size=BATCH))
    return trainer


def test_rate_per_epoch_in_logger_and_log(caplog):
    speed = TrainingSpeed(warmup_batches=2)
    with caplog.at_level(logging.INFO, logger="yolo_slim.lit.speed"):
        trainer = _fit(speed, batches=6)
    assert sorted(speed.rates) == [0, 1]
    ceiling = BATCH / STEP_SECONDS  # 4 timed batches of 4 images, each step at least 20 ms
    for rate in speed.rates.values():
        assert ceiling / 20 < rate <= ceiling
    assert trainer.logged_metrics[METRIC].item() == pytest.approx(speed.rates[1], rel=1e-5)
    lines = [record.getMessage() for record in caplog.records if "training images/s" in record.getMessage()]
    assert lines == [f"epoch {epoch}: {speed.rates[epoch]:.1f} training images/s" for epoch in (0, 1)]


def test_short_epochs_get_no_figure():
    speed = TrainingSpeed(warmup_batches=3)
    trainer = _fit(speed, batches=3, epochs=1)
    assert speed.rates == {}
    assert METRIC not in trainer.logged_metrics


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_warmup(bad):
    with pytest.raises(ValueError, match=f"warmup_batches must be an integer >= 0, found {bad!r}"):
        TrainingSpeed(warmup_batches=bad)
