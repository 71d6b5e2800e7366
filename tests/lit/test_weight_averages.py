"""Weight averages of the pruned network: a module's own torch AveragedModel, and Lightning's
EMAWeightAveraging and StochasticWeightAveraging callbacks (averages of the whole module), are pruned
with it and resume with it."""

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, StochasticWeightAveraging
from slim_support import UsersModule, ZeroLossModule, tiny_datamodule
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from yolo_slim.lit import SlimCallback, YOLOv5Module, find_network, restore_pruned_network
from yolo_slim.lit.slim_callback import _install_compacted
from yolo_slim.models import YOLOv5, count_parameters
from yolo_slim.slim import compact, plan_pruning, sparsity_target
from yolo_slim.slim.graph import trace_channels
from yolo_slim.slim.plan import PruningPlan
from yolo_slim.slim.targeted import removal_masks, removed_channels


class _UsersModuleWithEMA(UsersModule):
    """A user's module that keeps its own EMA of the detector with torch's AveragedModel."""

    def __init__(self) -> None:
        super().__init__()
        self.ema = AveragedModel(self.detector, multi_avg_fn=get_ema_multi_avg_fn(0.9))


def _perturbed_averages(module: _UsersModuleWithEMA, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        with torch.no_grad():
            for parameter in module.detector.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
        module.ema.update_parameters(module.detector)


def test_a_modules_own_average_is_compacted_with_the_network_and_keeps_its_count():
    module = _UsersModuleWithEMA()
    _perturbed_averages(module)
    plan = plan_pruning(module.detector, ratio=0.5)
    expected = compact(copy.deepcopy(module.ema.module), plan)
    _install_compacted(module, "detector", plan)

    assert module.ema.module.spec == module.detector.spec == expected.spec
    assert count_parameters(module.detector) < 0.7 * count_parameters(UsersModule().detector)
    assert int(module.ema.n_averaged) == 3  # its three updates
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(module.ema.module.state_dict()[name], value, rtol=0, atol=0, msg=name)
    module.ema.update_parameters(module.detector)  # the shapes agree: before the fix this raised


def test_restoring_a_pruned_checkpoint_rebuilds_the_modules_own_average():
    pruned = _UsersModuleWithEMA()
    _perturbed_averages(pruned)
    _install_compacted(pruned, "detector", plan_pruning(pruned.detector, ratio=0.5))
    checkpoint = {"state_dict": pruned.state_dict(),
                  "yolo_slim": {"spec": pruned.detector.spec.to_dict(), "names": list(pruned.detector.names),
                                "plans": [dict(p) for p in pruned.detector.pruning_history]}}
    resumed = _UsersModuleWithEMA()
    restore_pruned_network(resumed, checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"])  # strict: every shape, the average's included, matches
    assert resumed.ema.module.spec == pruned.ema.module.spec
    assert int(resumed.ema.n_averaged) == 3


def _fit(module, callbacks, folder, max_epochs, ckpt_path=None, limit_val_batches=0, cache=None):
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=folder, logger=False,
                        limit_val_batches=limit_val_batches, callbacks=callbacks)
    trainer.fit(module, datamodule=tiny_datamodule(cache), ckpt_path=ckpt_path)
    return trainer


class _AverageAtStart(L.Callback):
    """The WeightAveraging average's update count and weights when the (resumed) training starts."""

    def on_train_start(self, trainer, pl_module):
        averaging = next(c for c in trainer.callbacks if isinstance(c, EMAWeightAveraging))
        self.updates = int(averaging._average_model.n_averaged)
        self.weights = {k: v.clone() for k, v in averaging._average_model.module.state_dict().items()}


@pytest.mark.parametrize("kind", ["users_module", "yolov5_module"])
def test_lightnings_ema_callback_is_pruned_with_the_network_and_resumes(tmp_path, synthetic_cache, kind):
    def make():
        return UsersModule() if kind == "users_module" else YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)

    def slim():
        return SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, imgsz=64)

    # YOLOv5Module validates: WeightAveraging swaps its average in and out around each validation.
    validation = 0 if kind == "users_module" else 1
    module, averaging = make(), EMAWeightAveraging(decay=0.9)
    trainer = _fit(module, [averaging, slim()], tmp_path, 2, limit_val_batches=validation, cache=synthetic_cache)
    path, network = find_network(module)
    averaged = averaging._average_model.module.get_submodule(path)
    assert averaged.spec == network.spec
    assert count_parameters(network) < 0.7 * count_parameters(find_network(make())[1])
    assert int(averaging._average_model.n_averaged) == trainer.global_step  # it went on updating after the prune
    checkpoint = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)

    probe, resumed = _AverageAtStart(), make()
    trainer = _fit(resumed, [EMAWeightAveraging(decay=0.9), slim(), probe], tmp_path, 3, ckpt_path=checkpoint,
                   limit_val_batches=validation, cache=synthetic_cache)
    assert trainer.current_epoch == 3
    assert probe.updates == int(saved["averaging_state"]["n_averaged"])
    for name, value in saved["state_dict"].items():  # WeightAveraging saves its average as the state_dict
        torch.testing.assert_close(probe.weights[name], value, rtol=0, atol=0, msg=name)


def test_targeted_shrinks_the_chosen_channels_of_lightnings_average_too(tmp_path, synthetic_cache):
    # The average is what validation (and the prune's "after" figure) sees: its chosen channels must be
    # as small as the network's when the prune removes them, not an EMA's lag behind.
    module, averaging = ZeroLossModule(), EMAWeightAveraging(decay=0.99)
    start = [w.detach().clone() for w in sparsity_target(module.model).weights]
    callback = SlimCallback(method="targeted", sparsity=100.0, warmup=0.0, hold=0.5, prune_epochs=[], ratio=0.5,
                            write_artifacts=False)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp_path, logger=False, limit_val_batches=0,
                        limit_train_batches=3, callbacks=[averaging, callback])
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    averaged = sparsity_target(averaging._average_model.module.model)
    network = averaging._average_model.module.model
    choice = removed_channels(trace_channels(network.spec), PruningPlan.from_dict(callback.method.choice))
    masks = removal_masks(averaged, choice)
    shrunk = torch.cat([w.detach()[m.bool()] / s[m.bool()] for w, s, m in zip(averaged.weights, start, masks)])
    assert shrunk.abs().max() < 0.1


def _swa(start: int | float) -> StochasticWeightAveraging:
    return StochasticWeightAveraging(swa_lrs=0.005, swa_epoch_start=start, annealing_epochs=1)


def _slim_at_epoch_one() -> SlimCallback:
    return SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, imgsz=64, write_artifacts=False)


def _assert_swa_averaged_the_pruned_network(module: UsersModule, averaging: StochasticWeightAveraging) -> None:
    assert averaging._average_model.detector.spec == module.detector.spec
    assert count_parameters(module.detector) < 0.7 * count_parameters(UsersModule().detector)
    assert int(averaging.n_averaged) == 2  # it averaged the pruned network at the starts of epochs 2 and 3


def test_lightnings_swa_averages_the_pruned_network_and_resumes(tmp_path, synthetic_cache):
    # Pruned at epoch 1; SWA averages epochs 2 and 3 (swa_epoch_start=3 counts from 1), then updates the BN.
    module, averaging = UsersModule(), _swa(3)
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "epochs", save_top_k=-1, every_n_epochs=1)
    _fit(module, [averaging, _slim_at_epoch_one(), every_epoch], tmp_path, 4, cache=synthetic_cache)
    _assert_swa_averaged_the_pruned_network(module, averaging)  # before: its first update met the old shapes

    # Resumed after the prune, before SWA starts: SWA copies the dense module at setup, then loads the pruned
    # average into that copy (before: a size mismatch), unless the copy is rebuilt first.
    after_prune = next((tmp_path / "epochs").glob("epoch=1-*.ckpt"))
    resumed, averaging = UsersModule(), _swa(3)
    _fit(resumed, [averaging, _slim_at_epoch_one()], tmp_path, 4, ckpt_path=after_prune, cache=synthetic_cache)
    _assert_swa_averaged_the_pruned_network(resumed, averaging)


@pytest.mark.parametrize("swa_start,slim,max_epochs,message", [
    (2, {}, 4, r"averages from epoch 1 on, .* last prune \(epoch 1\); set its swa_epoch_start to 3 or later"),
    (0.5, {}, 4, r"averages from epoch 1 on, .* last prune \(epoch 1\)"),  # a share of max_epochs: int(2.0) - 1
    (2, {"prune_epochs": 3}, 4, r"last prune \(epoch 3\), and no epoch of max_epochs=4 is left after it"),
    (3, {"method": "targeted", "prune_epochs": [], "sparsity": None}, 4, "targeted's sparse-only run"),
    (6, {"prune_epochs": [], "method": "l1"}, 4, "starts at epoch 5, after the last of max_epochs=4: it would never"),
])
def test_swa_that_cannot_average_the_pruned_or_shrunk_network_is_refused_at_fit_start(
        tmp_path, synthetic_cache, swa_start, slim, max_epochs, message):
    arguments = {"method": "l1", "sparsity": 1e-3, "prune_epochs": 1, "ratio": 0.5, "imgsz": 64,
                 "write_artifacts": False, **slim}
    module = UsersModule()
    before = {name: value.clone() for name, value in module.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        _fit(module, [_swa(swa_start), SlimCallback(**arguments)], tmp_path, max_epochs, cache=synthetic_cache)
    assert all(torch.equal(before[name], value) for name, value in module.state_dict().items())  # before training


def test_swas_extra_epoch_is_not_counted_as_the_users(tmp_path, synthetic_cache):
    # SWA listed first has added its BatchNorm-update epoch to the fit loop when SlimCallback's checks run.
    with pytest.raises(ValueError, match=r"prune_epochs \[4\] must be < trainer.max_epochs=4"):
        _fit(UsersModule(), [_swa(3), SlimCallback(method="l1", prune_epochs=4)], tmp_path, 4, cache=synthetic_cache)


def test_a_reused_swa_callback_does_not_lend_its_last_fits_epochs(tmp_path, synthetic_cache):
    # SWA keeps the max_epochs of its last fit until its next on_fit_start, which here runs after SlimCallback's.
    averaging = _swa(3)
    _fit(UsersModule(), [averaging], tmp_path, 1, cache=synthetic_cache)  # it keeps max_epochs=1
    slim = _slim_at_epoch_one()
    _fit(UsersModule(), [slim, averaging], tmp_path / "again", 4, cache=synthetic_cache)
    assert slim.completed_prunes == 1 and slim._max_epochs(None) == 4

