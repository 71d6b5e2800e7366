"""SlimCallback inside real (tiny) fits: sparsity, pruning mid-fit, resume, a user's module, DDP."""

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from slim_support import UsersModule, ZeroLossModule, tiny_datamodule
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from yolo_slim.lit import SlimCallback, YOLOv5Module
from yolo_slim.models import YOLOv5, count_parameters
from yolo_slim.models.testing import randomize_norms


def _trainer(max_epochs, callbacks, tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                     callbacks=callbacks, **kwargs)


@pytest.mark.parametrize("arguments,message", [
    ({"sparsity": -1.0}, "sparsity and bias_sparsity must be >= 0, found -1.0"),
    ({"sparsity": float("nan")}, "sparsity=nan: must be a finite number"),
    ({"method": "polarize", "polarization_t": float("inf")}, "polarization_t=inf: must be a finite number"),
    ({"method": "l1", "schedule": "step"}, r"schedule must be one of \('constant', 'linear', 'cosine'\), found 'step'"),
    ({"prune_epochs": [3, 2]}, r"prune_epochs must be strictly increasing, found \[3, 2\]"),
    ({"prune_epochs": -1}, "prune_epochs must be an int >= 0"),
    ({"prune_epochs": [1, 2], "ratio": [0.3]}, r"ratio needs one value per prune epoch \(2\), found 1"),
    ({"prune_epochs": [1, 2], "ratio": [0.5, 0.3]}, "cumulative and must not decrease"),
    ({"ratio": 1.0}, r"ratio must be in \[0, 1\), found 1.0"),
    ({"policy": "all"}, "policy must be one of"),
    ({"round_to": 0}, "round_to must be an int >= 1"),
    ({"imgsz": 0}, "imgsz must be a positive multiple of 32 \\(None: the module's\\), found 0"),
    ({"imgsz": 320.5}, "imgsz must be a positive multiple of 32 \\(None: the module's\\), found 320.5"),
    ({"imgsz": 63}, "imgsz must be a positive multiple of 32"),
    # Kinds before values: a string is no list of characters, None no ratio.
    ({"ratio": "0.5"}, r"ratio must be a number in \[0, 1\) or a list of them \(one per prune epoch\), found '0.5'"),
    ({"ratio": None}, r"ratio must be a number in \[0, 1\) or a list of them .*, found None"),
    ({"ratio": {"a": 1}}, r"ratio must be a number .*, found \{'a': 1\}"),
    ({"prune_epochs": 1.5}, r"prune_epochs must be an int >= 0 or a list of them \(\[\] for sparse training only\), "
                            r"found 1.5"),
    ({"prune_epochs": [1, True]}, r"prune_epochs must be an int >= 0 or a list of them"),
    ({"finetune_schedule": "reset"}, r"finetune_schedule must be one of \('continue', 'restart'\)"),
])
def test_constructor_validates_every_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        SlimCallback(**arguments)


def test_prune_epoch_beyond_the_run_fails_before_training(tmp_path, synthetic_cache):
    module = UsersModule()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = _trainer(2, [SlimCallback(prune_epochs=2)], tmp_path)
    with pytest.raises(ValueError, match=r"prune_epochs \[2\] must be < trainer.max_epochs=2"):
        trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


_Zero = ZeroLossModule


def test_sparsity_applies_once_per_optimizer_step_after_accumulation(tmp_path, synthetic_cache):
    module = _Zero()
    with torch.no_grad():
        module.model.model[3].bn.weight.fill_(0.5)
    callback = SlimCallback(method="l1", sparsity=0.01, prune_epochs=1, ratio=0.3)
    trainer = _trainer(1, [callback], tmp_path, limit_train_batches=2, accumulate_grad_batches=2,
                       limit_val_batches=0)
    # prune_epochs=1 equals max_epochs=1: allowed here only because we stop before; check it fails loudly
    with pytest.raises(ValueError, match="must be < trainer.max_epochs=1"):
        trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    trainer = _trainer(2, [SlimCallback(method="l1", sparsity=0.01, prune_epochs=1, ratio=0.3)], tmp_path,
                       limit_train_batches=2, accumulate_grad_batches=2, limit_val_batches=0, max_steps=1)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    # Two micro-batches, one optimizer step: γ moved by lr * s once, not twice.
    torch.testing.assert_close(module.model.model[3].bn.weight.detach(), torch.full((64,), 0.49))


def test_sparse_training_only_penalises_every_step_and_never_prunes(tmp_path, synthetic_cache):
    module = _Zero()
    with torch.no_grad():
        module.model.model[3].bn.weight.fill_(0.5)
    dense_params = count_parameters(module.model)
    callback = SlimCallback(method="l1", sparsity=0.01, prune_epochs=[], ratio=0.5)
    trainer = _trainer(2, [callback], tmp_path, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert callback.completed_prunes == 0 and count_parameters(module.model) == dense_params
    # Four optimizer steps over both epochs (no prune ends the penalty): γ moved by lr * s four times.
    torch.testing.assert_close(module.model.model[3].bn.weight.detach(), torch.full((64,), 0.46))
    assert (tmp_path / "gamma_histogram.png").stat().st_size > 100  # "after sparse training", drawn at fit end
    with pytest.raises(ValueError, match=r"with prune_epochs=\[\] .* ratio must be one float"):
        SlimCallback(prune_epochs=[], ratio=[0.5])

def test_a_prune_before_any_training_warns_unless_the_weights_are_trained(tmp_path, synthetic_cache, caplog):
    warning = "SlimCallback prunes at epoch 0, before any training: every BatchNorm γ is still 1"
    for trained in (False, True):
        module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
        if trained:  # one-shot pruning of trained weights, then fine-tuning: what prune_epochs=0 is for
            randomize_norms(module.model)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolo_slim.lit.slim_callback"):
            _trainer(1, [SlimCallback(prune_epochs=0, ratio=0.5, imgsz=64)], tmp_path, limit_train_batches=1,
                     limit_val_batches=0).fit(module, datamodule=tiny_datamodule(synthetic_cache))
        assert (warning in caplog.text) is not trained, caplog.text


def test_a_module_made_for_another_image_size_than_its_data_is_named(tmp_path, synthetic_cache, caplog):
    for imgsz in (640, 64):  # tiny_datamodule gives 64-pixel images
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolo_slim.lit.module"):
            _trainer(1, [], tmp_path, limit_train_batches=1, limit_val_batches=0).fit(
                YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=imgsz), datamodule=tiny_datamodule(synthetic_cache))
        named = "YOLOv5Module was made for imgsz=640 (its loss gains; SlimCallback's GFLOPs and latency), but its " \
                "datamodule gives 64-pixel images: make it with imgsz=64"
        assert (named in caplog.text) is (imgsz == 640), caplog.text


def test_prune_mid_fit_swaps_network_optimizer_and_continues(tmp_path, synthetic_cache):
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    dense_params = count_parameters(module.model)
    callback = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5)
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version="")
    trainer = _trainer(3, [callback], tmp_path, limit_val_batches=1, logger=logger)
    snapshots = {}

    class _Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                snapshots["momenta_before"] = [group["momentum"] for group in trainer.optimizers[0].param_groups]

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:  # runs after SlimCallback's hook: the network is already pruned
                snapshots["momenta_after"] = [group["momentum"] for group in trainer.optimizers[0].param_groups]
                snapshots["after_prune"] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
                optimizer_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
                snapshots["optimizer_has_new_params"] = all(id(p) in optimizer_params
                                                            for p in pl_module.model.parameters())

    trainer.callbacks.append(_Snapshot())
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert callback.completed_prunes == 1
    assert count_parameters(module.model) < 0.6 * dense_params
    assert count_parameters(module.inference_model) == count_parameters(module.model)  # EMA compacted too
    assert snapshots["optimizer_has_new_params"]
    # The warm-up's momentum goes on through the prune (a fresh schedule would start it at 0.8 again).
    assert snapshots["momenta_after"] == snapshots["momenta_before"] and min(snapshots["momenta_before"]) > 0.8
    changed = [k for k, v in module.model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, snapshots["after_prune"][k])]
    assert any(k.endswith("conv.weight") for k in changed)  # fine-tuning trains the new parameters
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
    assert callback.stages["pruned"]["params"] == count_parameters(module.model)
    assert callback.stages["train"]["params"] == dense_params
    assert callback.stages["pruned"]["removed_channels"] > 0 and "removed_output_mass" in callback.stages["pruned"]
    # The checkpoint written after the in-fit prune holds its plan (the module and the callback both
    # write the entry, merged, not one replacing the other).
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    stored = torch.load(tmp_path / "after.ckpt", weights_only=True)["yolo_slim"]
    assert len(stored["plans"]) == 1 and stored["plans"][0]["keep"] and stored["model_attr"] == "model"
    assert (tmp_path / "separation.csv").read_text().count("\n") == 4  # a header and one row per epoch
    for artifact in ("layers.txt", "gamma_histogram.png", "gamma_histogram_start.png", "channels.png"):
        assert (tmp_path / artifact).stat().st_size > 100, artifact
    # predictions.png: the first validation images, dense | final, one row each, side by side.
    with Image.open(tmp_path / "predictions.png") as sheet:
        assert sheet.size == (2 * 64 + 4, 4 * (64 + 18))
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"slim/gamma_histogram_start", "slim/gamma_histogram", "slim/channels",
                                            "slim/predictions"}
    channels = events.Images("slim/channels")[0]
    assert channels.width > 300 and channels.height > 200  # the PNG itself, not a placeholder
    assert "slim/gamma" in events.Tags()["histograms"]


def test_a_restarted_schedule_spans_the_fine_tune(tmp_path, synthetic_cache):
    # finetune_schedule="restart": a fresh warm-up and decay over the steps left, ending at the final rate.
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    callback = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, finetune_schedule="restart")
    seen = {}

    class _AtThePrune(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):  # after SlimCallback's: the new schedule is in
            if trainer.current_epoch == 1:
                seen["steps_done"] = trainer.global_step
                seen["scheduler"] = trainer.lr_scheduler_configs[0].scheduler

    trainer = _trainer(3, [callback, _AtThePrune()], tmp_path, limit_val_batches=1)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    scheduler = seen["scheduler"]
    assert scheduler is trainer.lr_scheduler_configs[0].scheduler
    assert seen["steps_done"] > 0 and scheduler.total_steps == trainer.global_step - seen["steps_done"]
    assert scheduler.last_epoch == scheduler.total_steps  # the decay ran to its end, not part of the way


def test_early_stopping_patience_starts_over_at_the_prune(tmp_path, synthetic_cache):
    # The validations before and after the prune are not epochs without progress. (An EarlyStopping
    # checks at each validation's end when told to, or when validation is not once per epoch.)
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    stopper = EarlyStopping(monitor="val/map", mode="max", patience=1, check_on_train_epoch_end=False)
    slim = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5)
    trainer = _trainer(2, [slim, stopper], tmp_path, limit_val_batches=1, limit_train_batches=3)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert trainer.global_step == 2 * 3  # the fine-tune ran (it stopped at the prune, after 3 steps)
    assert stopper.best_score == trainer.callback_metrics["val/map"]  # its best is the pruned network's


class _FallingScore(YOLOv5Module):
    """Validation also logs a score that falls every epoch: the dense epoch 0 scores best of all."""

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        self.log("score", 100.0 - self.current_epoch)


def test_a_monitored_checkpoint_keeps_the_best_pruned_network_not_the_dense_one(tmp_path, synthetic_cache):
    best = ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="best", monitor="score", mode="max")
    slim = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5)
    trainer = _trainer(3, [slim, best], tmp_path, limit_val_batches=1, limit_train_batches=2)
    dense_spec = YOLOv5("yolov5n", nc=4).spec.to_dict()
    trainer.fit(_FallingScore(YOLOv5("yolov5n", nc=4), imgsz=64), datamodule=tiny_datamodule(synthetic_cache))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt"]  # replaced, no best-v1
    assert best.best_model_score == 99.0  # epoch 1's, the pruned network's first; epoch 0 scored 100
    stored = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert stored["epoch"] == 1 and stored["yolo_slim"]["spec"] != dense_spec


def test_resume_after_the_prune_does_not_prune_twice(tmp_path, synthetic_cache):
    first = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5)
    trainer = _trainer(2, [first], tmp_path, limit_val_batches=1)
    trainer.fit(YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64), datamodule=tiny_datamodule(synthetic_cache))
    checkpoint = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(checkpoint)
    pruned_params = first.stages["pruned"]["params"]
    stored = torch.load(checkpoint, weights_only=True)  # plain data
    assert stored["yolo_slim"]["spec"] != YOLOv5("yolov5n", nc=4).spec.to_dict()

    start_histogram = (tmp_path / "gamma_histogram_start.png").read_bytes()
    # As if killed after epoch 2 wrote its separation row but before its checkpoint: epoch 2 runs again.
    separation = tmp_path / "separation.csv"
    killed_row = "2,-1.0," + separation.read_text().splitlines()[-1].split(",", 2)[2]  # gamma_mean -1: told apart
    separation.write_text(separation.read_text() + killed_row + "\n")
    second = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5)
    resumed = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)  # dense until the checkpoint rebuilds it
    trainer = _trainer(4, [second], tmp_path, limit_val_batches=1)
    trainer.fit(resumed, datamodule=tiny_datamodule(synthetic_cache), ckpt_path=checkpoint)
    assert second.completed_prunes == 1 and len(resumed.pruning_plans) == 1
    assert (tmp_path / "gamma_histogram_start.png").read_bytes() == start_histogram  # not redrawn on resume
    assert count_parameters(resumed.model) == pruned_params
    assert trainer.current_epoch == 4
    assert count_parameters(YOLOv5Module.load_from_checkpoint(checkpoint).model) == pruned_params
    rows = separation.read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0", "1", "2", "3"] and killed_row not in rows  # each epoch once


def test_a_users_own_module_prunes_and_resumes_and_one_without_the_rebuild_is_told_why_not(
        tmp_path, synthetic_cache, caplog):
    callback = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, imgsz=64)
    trainer = _trainer(2, [callback], tmp_path, limit_val_batches=0)
    module = UsersModule()
    dense = count_parameters(module.detector)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert count_parameters(module.detector) < 0.6 * dense
    checkpoint = tmp_path / "users.ckpt"
    trainer.save_checkpoint(checkpoint)
    resumed = UsersModule()
    trainer = _trainer(3, [SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, imgsz=64)], tmp_path,
                       limit_val_batches=0)
    trainer.fit(resumed, datamodule=tiny_datamodule(synthetic_cache), ckpt_path=checkpoint)
    assert count_parameters(resumed.detector) == count_parameters(module.detector)


    class WithoutTheRebuild(UsersModule):
        on_load_checkpoint = L.LightningModule.on_load_checkpoint  # the one line left out

    trainer = _trainer(3, [SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, imgsz=64)], tmp_path,
                       limit_val_batches=0)
    with pytest.raises(RuntimeError, match="size mismatch") as refused:
        trainer.fit(WithoutTheRebuild(), datamodule=tiny_datamodule(synthetic_cache), ckpt_path=checkpoint)
    hint = "".join(getattr(refused.value, "__notes__", [])) or caplog.text
    assert f"{checkpoint} holds a network pruned 1 time(s), which WithoutTheRebuild loads into the dense one" in hint
    assert "restore_pruned_network(self, checkpoint) in its on_load_checkpoint" in hint


def test_a_prune_epoch_already_behind_a_resumed_fit_is_refused(tmp_path, synthetic_cache):
    trainer = _trainer(2, [], tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(UsersModule(), datamodule=tiny_datamodule(synthetic_cache))
    trainer.save_checkpoint(tmp_path / "dense.ckpt")  # no SlimCallback progress in it
    callback = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, imgsz=64)
    with pytest.raises(ValueError, match=r"prune_epochs \[1\] include epochs before the current epoch 2"):
        _trainer(4, [callback], tmp_path, limit_train_batches=1, limit_val_batches=0).fit(
            UsersModule(), datamodule=tiny_datamodule(synthetic_cache), ckpt_path=tmp_path / "dense.ckpt")
    assert callback.completed_prunes == 0


def test_a_plain_copy_of_the_network_is_left_dense_and_named(tmp_path, synthetic_cache, caplog):
    module = UsersModule()
    module.teacher = copy.deepcopy(module.detector)  # a teacher, or an EMA kept by hand: not an AveragedModel
    dense = count_parameters(module.teacher)
    callback = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=1, ratio=0.5, imgsz=64, model_attr="detector")
    with caplog.at_level(logging.WARNING, logger="yolo_slim.lit.slim_callback"):
        _trainer(2, [callback], tmp_path, limit_train_batches=1, limit_val_batches=0).fit(
            module, datamodule=tiny_datamodule(synthetic_cache))
    assert count_parameters(module.detector) < 0.6 * dense and count_parameters(module.teacher) == dense
    assert "SlimCallback prunes detector only; teacher hold(s) a copy of its architecture" in caplog.text


@pytest.mark.slow
def test_ddp_two_cpu_processes_prune_identically(tmp_path, synthetic_cache):
    script = Path(__file__).parents[1] / "slim_support.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path), synthetic_cache], capture_output=True,
                            text=True, timeout=600, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": "",
                                                         "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["spec"] == ranks[1]["spec"]  # the same architecture on both ranks
    assert ranks[0]["digest"] == ranks[1]["digest"]  # and the same weights after fine-tuning
    assert ranks[0]["choice"] is not None and ranks[0]["choice"] == ranks[1]["choice"]  # one targeted choice
    # Rank 1 held other γ at the choice: its own choice would have been another one, it took rank 0's.
    assert ranks[1]["local_choice"] != ranks[0]["local_choice"]
    assert ranks[0]["choice"] == ranks[0]["local_choice"]
    # (SyncBatchNorm needs CUDA under DDP; that compaction keeps it is tested in tests/slim/test_compact.py.)
    assert ranks[0]["params"] < 0.6 * count_parameters(YOLOv5("yolov5n", nc=4))
    # A script with no logging set-up still shows the prune's line (on the console), once: rank 0 says it.
    assert result.stderr.count("pruned at epoch 1: ") == 1, result.stderr[-3000:]


def test_mixed_precision_through_the_prune(tmp_path, synthetic_cache):
    """Autocast paths of the loss and the callback (bf16 on CPU; 16-mixed needs CUDA: benchmarks/gpu_check.py)."""

    class _Losses(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.values.append(float(outputs["loss"]))

    losses = _Losses()
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    trainer = _trainer(3, [SlimCallback(prune_epochs=1, ratio=0.5, write_artifacts=False), losses],  # targeted
                       tmp_path, precision="bf16-mixed", limit_val_batches=1)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert len(losses.values) == 9 and all(torch.isfinite(torch.tensor(losses.values)))
    assert count_parameters(module.model) < 0.6 * count_parameters(YOLOv5("yolov5n", nc=4))


@pytest.mark.parametrize("epochs,trainer_state,expected", [
    ([4], {"current_epoch": 2, "max_epochs": 10, "max_steps": -1, "global_step": 0}, 0.5),
    ([], {"current_epoch": 5, "max_epochs": 10, "max_steps": -1, "global_step": 0}, 0.5),
    ([], {"current_epoch": 0, "max_epochs": -1, "max_steps": 200, "global_step": 50}, 0.25),  # bounded by steps
    ([], {"current_epoch": 3, "max_epochs": -1, "max_steps": -1, "global_step": 90}, 0.0),  # unbounded
])
def test_schedule_progress_over_the_sparse_phase(epochs, trainer_state, expected):
    from types import SimpleNamespace

    callback = SlimCallback(prune_epochs=epochs)
    assert callback._progress(SimpleNamespace(callbacks=[], **trainer_state)) == pytest.approx(expected)
