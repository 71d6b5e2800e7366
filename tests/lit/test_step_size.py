"""The optimizer step's size as YOLOv5 makes it: gradients summed over every image of a step, on every process,
and a resumed run's schedule kept at its place in epochs when an epoch now takes other steps."""

from types import SimpleNamespace

import pytest
import torch

from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.lit.optim import parameter_groups
from yolo_slim.lit.schedule import WarmupDecayLR
from yolo_slim.models import YOLOv5


def _module(monkeypatch, **trainer):
    module = YOLOv5Module(YOLOv5("yolov5n", nc=2), imgsz=64)
    monkeypatch.setattr(module, "log_dict", lambda *args, **kwargs: None)  # no real Trainer to log into
    module.trainer = SimpleNamespace(**trainer)
    return module


@pytest.mark.parametrize("accumulate,processes", [(1, 1), (4, 1), (2, 2), (1, 4)])
def test_the_loss_is_scaled_by_the_batches_and_processes_of_a_step(monkeypatch, accumulate, processes):
    # Lightning divides by the accumulation and DDP averages over processes: undoing both sums the images' gradients.
    module = _module(monkeypatch, accumulate_grad_batches=accumulate, world_size=processes)
    torch.manual_seed(0)
    batch = {"images": torch.rand(2, 3, 64, 64), "targets": torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4]])}
    expected, _ = module.criterion(module.model(batch["images"]), batch["targets"])
    returned = module.training_step(batch, 0)
    assert returned.item() == pytest.approx(expected.item() * accumulate * processes, rel=1e-5)


def _scheduler(steps_per_epoch: int, epochs: int = 10) -> WarmupDecayLR:
    optimizer = torch.optim.SGD(parameter_groups(YOLOv5("yolov5n", nc=2), 5e-4), lr=0.01, momentum=0.937)
    return WarmupDecayLR(optimizer, total_steps=steps_per_epoch * epochs, steps_per_epoch=steps_per_epoch,
                         warmup_epochs=1, min_warmup_batches=0)


def _rates(scheduler: WarmupDecayLR) -> list[float]:
    return [group["lr"] for group in scheduler.optimizer.param_groups]


def _advance(scheduler: WarmupDecayLR, steps: int) -> None:
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()


def test_a_schedule_resumed_with_half_the_steps_per_epoch_stays_at_its_epoch():
    reference, resumed = _scheduler(40), _scheduler(20)
    _advance(reference, 100)  # two and a half epochs of 40 steps
    resumed.load_state_dict(_scheduler(40).state_dict() | {"last_epoch": 100})  # the old run's counts restored
    resumed.rescale(20)
    assert (resumed.last_epoch, resumed.total_steps, resumed.warmup_steps) == (50, 200, 20)
    assert _rates(resumed) == pytest.approx(_rates(reference))
    _advance(reference, 200)
    _advance(resumed, 100)  # both at the end of epoch 7 of 10
    assert _rates(resumed) == pytest.approx(_rates(reference))
    resumed.rescale(20)  # the same count: nothing changes
    assert resumed.last_epoch == 150


def test_rescale_refuses_an_empty_epoch():
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1, found 0"):
        _scheduler(10).rescale(0)


def test_the_module_rescales_the_restored_schedule_when_training_starts(monkeypatch):
    restored = _scheduler(40)
    _advance(restored, 80)
    config = SimpleNamespace(scheduler=restored)
    # Resumed on two processes: each sees half the 160 batches of an epoch, four per optimizer step.
    module = _module(monkeypatch, lr_scheduler_configs=[config], num_training_batches=80, accumulate_grad_batches=4,
                     optimizers=[restored.optimizer], max_epochs=10, max_steps=-1, current_epoch=2, global_step=80)
    module.on_train_start()
    assert (restored.steps_per_epoch, restored.last_epoch, restored.total_steps) == (20, 40, 200)


def test_the_module_sets_its_own_weight_decay_on_a_restored_optimizer(monkeypatch):
    # A run started on one device (16 x 4 images a step) resumed on three (48 a step): its weight decay is
    # scaled for 48 images, and the optimizer state restored from the checkpoint must not bring back the old.
    module = YOLOv5Module(YOLOv5("yolov5n", nc=2), imgsz=64, weight_decay=5e-4 * 48 / 64)
    first_run = torch.optim.SGD(parameter_groups(module.model, 5e-4), lr=0.01, momentum=0.937)
    restored = torch.optim.SGD(parameter_groups(module.model, module.hparams.weight_decay), lr=0.01, momentum=0.937)
    restored.load_state_dict(first_run.state_dict())
    assert restored.param_groups[1]["weight_decay"] == 5e-4  # what torch's restore does
    module.trainer = SimpleNamespace(optimizers=[restored], lr_scheduler_configs=[], max_epochs=10, max_steps=-1,
                                     current_epoch=0, global_step=0, num_training_batches=10, accumulate_grad_batches=1)
    module.on_train_start()
    assert [group["weight_decay"] for group in restored.param_groups] == [0.0, pytest.approx(3.75e-4), 0.0]


def test_a_fit_without_an_end_is_refused_with_the_trainer_settings_named():
    # Lightning's max_epochs=-1 with no max_steps trains forever: there is no length to lay the schedule over.
    module = YOLOv5Module(YOLOv5("yolov5n", nc=2), imgsz=64)
    module.trainer = SimpleNamespace(estimated_stepping_batches=float("inf"), max_epochs=-1, max_steps=-1)
    with pytest.raises(ValueError, match="give the Trainer max_epochs >= 0 or max_steps >= 0, found max_epochs=-1"):
        module.configure_optimizers()


def _configured(estimated: float, **trainer) -> WarmupDecayLR:
    """The schedule YOLOv5Module lays out and then adjusts at on_train_start, as in a fit with these counts."""
    module = YOLOv5Module(YOLOv5("yolov5n", nc=2), imgsz=64)
    module.trainer = SimpleNamespace(estimated_stepping_batches=estimated, **trainer)
    configured = module.configure_optimizers()
    scheduler = configured["lr_scheduler"]["scheduler"]
    module.trainer.lr_scheduler_configs = [SimpleNamespace(scheduler=scheduler)]
    module.trainer.optimizers = [configured["optimizer"]]
    module.on_train_start()
    return scheduler


@pytest.mark.parametrize("max_epochs,estimated", [(30, 100), (-1, 100)])  # the CLI's default epochs; Lightning's -1
def test_a_fit_that_max_steps_ends_decays_over_those_steps(max_epochs, estimated):
    # 50 batches an epoch, 4 per step: 13 steps an epoch, and the fit ends at step 100.
    scheduler = _configured(estimated, max_epochs=max_epochs, max_steps=100, current_epoch=0, global_step=0,
                            num_training_batches=50, accumulate_grad_batches=4)
    assert (scheduler.total_steps, scheduler.steps_per_epoch, scheduler.warmup_steps) == (100, 13, 39)
    assert scheduler.decay_factor(100) == pytest.approx(scheduler.final_lr_ratio)  # fully decayed at the end


def test_a_schedule_restarted_after_a_resume_on_other_devices_spans_the_epochs_left():
    # First run: 10 epochs of 10 steps on one device; resumed on two (5 steps an epoch); a prune at epoch 20 of 30
    # restarts the schedule. global_step (150) counts the first run's longer epochs: the fit has 10 x 5 steps left.
    scheduler = _configured(150, max_epochs=30, max_steps=-1, current_epoch=20, global_step=150,
                            num_training_batches=5, accumulate_grad_batches=1)
    assert (scheduler.total_steps, scheduler.steps_per_epoch) == (50, 5)


def test_an_epoch_shorter_than_the_accumulation_still_warms_up_for_100_batches():
    # 2 batches an epoch with 4 to accumulate: Lightning steps at every epoch's end, one step per 2 batches.
    scheduler = _configured(300, max_epochs=300, max_steps=-1, current_epoch=0, global_step=0,
                            num_training_batches=2, accumulate_grad_batches=4)
    assert (scheduler.total_steps, scheduler.warmup_steps) == (300, 50)  # 100 batches, not 25 steps of 4
