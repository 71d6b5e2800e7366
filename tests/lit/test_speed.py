"""TrainingSpeed: images/s per epoch from the warm-up batch on, in the logger and the log."""

import logging
import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from yolo_slim.lit.speed import DATA_WAIT_METRIC, METRIC, TrainingSpeed

STEP_SECONDS = 0.02
VALIDATION_SECONDS = 0.1  # per batch: three batches would take the rate far below its floor if timed
BATCH = 4


class _SlowModule(L.LightningModule):
    """A step that takes at least STEP_SECONDS, so the rate has a known ceiling."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        time.sleep(STEP_SECONDS)
        return self.layer(batch["images"].flatten(1)[:, :3]).mean()

    def validation_step(self, batch, batch_idx):
        time.sleep(VALIDATION_SECONDS)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _SlowSamples(torch.utils.data.Dataset):
    """Each sample takes ``seconds`` to load (in the main process: the loader has no workers)."""

    def __init__(self, count: int, seconds: float) -> None:
        self.count, self.seconds = count, seconds

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        time.sleep(self.seconds)
        return {"images": torch.rand(3, 2, 2)}


def _fit(speed: TrainingSpeed, batches: int, epochs: int = 2, sample_seconds: float = 0.0,
         **trainer_args) -> L.Trainer:
    samples = _SlowSamples(BATCH * batches, sample_seconds)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[speed],
                        num_sanity_val_steps=0, **trainer_args)
    loader = DataLoader(samples, batch_size=BATCH)
    validation = DataLoader(_SlowSamples(3 * BATCH, 0.0), BATCH)
    trainer.fit(_SlowModule(), train_dataloaders=loader, val_dataloaders=validation)
    return trainer


def test_rate_per_epoch_in_logger_and_log(caplog):
    speed = TrainingSpeed(warmup_batches=2)
    with caplog.at_level(logging.INFO, logger="yolo_slim.lit.speed"):
        trainer = _fit(speed, batches=6)
    assert sorted(speed.rates) == [0, 1]
    ceiling = BATCH / STEP_SECONDS  # 4 timed batches of 4 images, each step at least 20 ms
    for rate in speed.rates.values():  # with the 0.3 s of validation timed it would be under 16 * 0.08 / 0.38
        assert ceiling / 2 < rate <= ceiling
    assert trainer.logged_metrics[METRIC].item() == pytest.approx(speed.rates[1], rel=1e-5)
    lines = [record.getMessage() for record in caplog.records if "training images/s" in record.getMessage()]
    assert lines == [f"epoch {epoch}: {speed.rates[epoch]:.1f} training images/s, "
                     f"{100 * speed.data_wait_shares[epoch]:.0f}% of it waiting for data" for epoch in (0, 1)]
    assert trainer.logged_metrics[DATA_WAIT_METRIC].item() == pytest.approx(speed.data_wait_shares[1], rel=1e-5)


def test_data_wait_share_is_the_time_between_batches():
    # A batch takes 4 * 5 ms to load and 20 ms to train: about half the timed window is loading.
    slow, fast = TrainingSpeed(warmup_batches=1), TrainingSpeed(warmup_batches=1)
    _fit(slow, batches=8, epochs=1, sample_seconds=STEP_SECONDS / BATCH)
    _fit(fast, batches=8, epochs=1)
    assert 0.3 < slow.data_wait_shares[0] < 0.65
    assert fast.data_wait_shares[0] < 0.2
    assert slow.rates[0] < fast.rates[0]


def test_short_epochs_get_no_figure():
    speed = TrainingSpeed(warmup_batches=3)
    trainer = _fit(speed, batches=3, epochs=1)
    assert speed.rates == {}
    assert METRIC not in trainer.logged_metrics


def test_a_mid_epoch_validation_is_not_timed():
    speed = TrainingSpeed(warmup_batches=1)
    _fit(speed, batches=8, epochs=1, val_check_interval=4)  # validates after batch 4 and after batch 8
    assert BATCH / STEP_SECONDS / 2 < speed.rates[0] <= BATCH / STEP_SECONDS


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_warmup(bad):
    with pytest.raises(ValueError, match=f"warmup_batches must be an integer >= 0, found {bad!r}"):
        TrainingSpeed(warmup_batches=bad)
