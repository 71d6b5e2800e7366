"""The three sparsity methods inside real (tiny) fits: what each moves, resume, AMP and accumulation, bad arguments."""

import lightning as L
import pytest
import torch
from slim_support import tiny_datamodule

from yolo_slim.lit import SlimCallback, YOLOv5Module
from yolo_slim.lit.slim_callback import targeted_choice_in
from yolo_slim.lit.sparsity_methods import MethodSettings, make_method
from yolo_slim.models import YOLOv5, count_parameters
from yolo_slim.slim import PruningPlan, plan_pruning, sparsity_target, trace_channels
from yolo_slim.slim.targeted import removal_masks, removed_channels


def _trainer(max_epochs, callbacks, tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("limit_val_batches", 0)
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                     callbacks=callbacks, **kwargs)


class _Zero(L.LightningModule):
    """Zero task gradient: only the method moves the BatchNorms. γ start spread in [0.3, 1.0]."""

    def __init__(self, lr: float = 1.0) -> None:
        super().__init__()
        self.model = YOLOv5("yolov5n", nc=4)
        self.lr = lr
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for weight in sparsity_target(self.model).weights:
                weight.copy_(torch.rand(weight.shape, generator=generator) * 0.7 + 0.3)

    def training_step(self, batch, batch_idx):
        return sum(level.sum() for level in self.model(batch["images"].float() / 255)) * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=self.lr)


def _masks(network, choice):
    plan = PruningPlan.from_dict(choice)
    target = sparsity_target(network)
    return target, removal_masks(target, removed_channels(trace_channels(network.spec), plan))


@pytest.mark.parametrize("arguments,message", [
    ({"method": "l2"}, r"method must be one of \('l1', 'targeted', 'polarize'\), found 'l2'"),
    ({"method": "l1", "polarization_t": 1.3}, "polarization_t applies to method polarize, not to method='l1'"),
    ({"method": "targeted", "bias_sparsity": 1e-3}, "bias_sparsity applies to method l1 and polarize"),
    ({"method": "targeted", "schedule": "cosine"}, "schedule applies to method l1 and polarize"),
    ({"method": "targeted", "floor": 0.5}, "floor applies to method l1 and polarize"),
    ({"method": "polarize", "warmup": 0.1}, "warmup applies to method targeted, not to method='polarize'"),
    ({"method": "polarize", "polarization_t": 0.9}, r"polarization_t must be > 1 .*found 0.9"),
    ({"method": "targeted", "warmup": 0.7, "hold": 0.4}, "warmup and hold must be fractions .* with warmup \\+ hold < 1"),
    ({"method": "targeted", "warmup_sparsity": -1.0}, "warmup_sparsity must be >= 0, found -1.0"),
    ({"method": "targeted", "sparsity_after_prune": True}, "sparsity_after_prune applies to method l1 and polarize"),
    ({"prune_epochs": [], "ratio": []}, r"with prune_epochs=\[\] .* ratio must be one float"),
])
def test_bad_method_arguments_fail_in_the_constructor(arguments, message):
    with pytest.raises(ValueError, match=message):
        SlimCallback(**arguments)


def test_a_value_equal_to_the_default_is_not_a_foreign_argument():
    # What a run's saved config spelled out before schedule and floor defaulted to None: its resume must build.
    callback = SlimCallback(method="targeted", schedule="constant", floor=0.1, bias_sparsity=0.0, polarization_t=1.2)
    assert "schedule" not in callback.describe() and callback.describe()["warmup_sparsity"] == 0.02


def test_targeted_moves_only_the_chosen_channels_toward_zero(tmp_path, synthetic_cache):
    module = _Zero()
    start = [w.detach().clone() for w in sparsity_target(module.model).weights]
    callback = SlimCallback(method="targeted", sparsity=100.0, warmup=0.0, hold=0.5, prune_epochs=[], ratio=0.5)
    trainer = _trainer(2, [callback], tmp_path, limit_train_batches=3)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    target, masks = _masks(module.model, callback.method.choice)
    chosen = [(w.detach()[m.bool()], s[m.bool()]) for w, s, m in zip(target.weights, start, masks)]
    kept = [(w.detach()[~m.bool()], s[~m.bool()]) for w, s, m in zip(target.weights, start, masks)]
    assert all(torch.equal(now, before) for now, before in kept)  # the kept channels: unpenalised
    shrunk = torch.cat([now / before for now, before in chosen])
    assert shrunk.max() < 0.1  # every chosen channel driven far down
    # The choice is the prune's own: the lowest |γ| first (spread starts make it non-trivial).
    chosen_start = torch.cat([before for _, before in chosen])
    kept_start = torch.cat([before for _, before in kept])
    assert chosen_start.mean() < kept_start.mean()


class _ZeroInItsDtype(_Zero):
    def training_step(self, batch, batch_idx):
        return sum(level.sum() for level in self.model(batch["images"].to(self.dtype) / 255)) * 0.0


def test_targeted_shrinks_bfloat16_weights_too(tmp_path, synthetic_cache):
    # Each step's factor (1 - rate, rate < 2e-3 here) is finer than bfloat16 can tell from 1: multiplied
    # in place step by step, no γ would ever move. The gathered factor is applied once it can.
    module = _ZeroInItsDtype()
    callback = SlimCallback(method="targeted", sparsity=0.02, warmup=0.0, hold=0.5, prune_epochs=[], ratio=0.5)
    trainer = _trainer(2, [callback], tmp_path, limit_train_batches=6, precision="bf16-true")
    start = [w.detach().to(torch.bfloat16).clone() for w in sparsity_target(module.model).weights]
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    target, masks = _masks(module.model, callback.method.choice)
    assert target.weights[0].dtype == torch.bfloat16
    assert max(callback.method.rate(p / 12, 12) for p in range(12)) < 2e-3
    chosen = torch.cat([(w.detach() / s)[m.bool()].float() for w, s, m in zip(target.weights, start, masks)])
    kept = torch.cat([(w.detach() / s)[~m.bool()].float() for w, s, m in zip(target.weights, start, masks)])
    assert (kept == 1).all() and chosen.max() < 0.995  # about exp(-0.014), to bfloat16's precision


def test_a_resume_keeps_the_16bit_shrink_not_yet_applied():
    # Steps whose gathered factor is still finer than bfloat16's epsilon apply nothing; a checkpoint taken
    # then must carry that factor, or the resumed run applies a different shrink from the uninterrupted one.
    def bound():
        module = _Zero().to(torch.bfloat16)
        callback = SlimCallback(method="targeted", warmup=0.0, hold=0.5, prune_epochs=[], ratio=0.5)
        callback._bind(None, module)
        return callback

    running = bound()
    assert [running.method._applied_rate(1e-3) for _ in range(7)] == [0.0] * 7  # 1 - 0.999^7 < 2^-7
    resumed = bound()
    resumed.load_state_dict(running.state_dict())
    applied = [callback.method._applied_rate(1e-3) for callback in (running, resumed)]
    assert applied[0] == applied[1] == pytest.approx(1 - (1 - 1e-3) ** 8)  # 8 steps' shrink, at once


def test_targeted_prune_is_free_and_reported(tmp_path, synthetic_cache):
    module = _Zero()
    callback = SlimCallback(method="targeted", sparsity=200.0, warmup=0.0, hold=0.5, prune_epochs=2, ratio=0.5,
                            imgsz=64, write_artifacts=False)
    trainer = _trainer(3, [callback], tmp_path, limit_train_batches=3)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    pruned = callback.stages["pruned"]
    assert pruned["removed_output_mass"] < 1e-6 and pruned["removed_gamma_mean"] < 1e-6
    assert pruned["kept_gamma_mean"] > 0.5 and pruned["gamma_below_0_01"] > 0.3
    assert count_parameters(module.model) < 0.7 * count_parameters(YOLOv5("yolov5n", nc=4))


def test_resume_keeps_the_targeted_choice(tmp_path, synthetic_cache):
    first = SlimCallback(method="targeted", sparsity=20.0, warmup=0.0, hold=0.5, prune_epochs=[], ratio=0.5)
    module = _Zero()
    trainer = _trainer(1, [first], tmp_path, limit_train_batches=2)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    checkpoint = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(checkpoint)
    content = torch.load(checkpoint, weights_only=True)  # plain data, choice included
    # `prune` reuses the stored choice when asked for the same ratio and rules, and only then.
    stored = targeted_choice_in(content, 0.5, "grouped", 8, 8)
    assert stored is not None and stored.to_dict() == first.method.choice
    assert targeted_choice_in(content, 0.4, "grouped", 8, 8) is None
    assert targeted_choice_in(content, 0.5, "grouped", 16, 8) is None
    assert targeted_choice_in(content, 0.5, "grouped", 8, 8, aggregate="mean") is None  # chosen by the max
    # Resumed into a 2-epoch fit: epoch 1 starts at half the sparse phase, in the hold: no new choice.
    second = SlimCallback(method="targeted", sparsity=20.0, warmup=0.0, hold=0.5, prune_epochs=[], ratio=0.5)
    resumed = _Zero()
    seen = {}

    class _Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):  # restored, before any batch could choose anew
            seen["choice"], seen["plan"] = second.method.choice, second.method.chosen_plan()

    trainer = _trainer(2, [second, _Probe()], tmp_path, limit_train_batches=2)
    trainer.fit(resumed, datamodule=tiny_datamodule(synthetic_cache), ckpt_path=checkpoint)
    assert seen["choice"] == first.method.choice and seen["plan"] is not None  # masks installed from the state
    assert second.method.choice == first.method.choice  # and no new choice in the hold
    target, masks = _masks(resumed.model, second.method.choice)
    stored = torch.load(checkpoint, weights_only=True)["state_dict"]
    for producer, weight, mask in zip(target.producers, target.weights, masks):
        before = stored[f"model.model.{producer}.bn.weight"]
        assert torch.equal(weight.detach()[~mask.bool()], before[~mask.bool()])
        assert (weight.detach()[mask.bool()].abs() <= before[mask.bool()].abs()).all()


def test_a_short_sparse_phase_still_gets_its_choice_and_prunes_it(tmp_path, synthetic_cache):
    """Default warm-up (0.6) over a 2-epoch phase: the choice comes mid-epoch, and the prune removes it."""
    module = _Zero()
    callback = SlimCallback(method="targeted", prune_epochs=2, ratio=0.5, imgsz=64, write_artifacts=False)
    chosen = {}

    class _Probe(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                chosen["plan"] = callback.method.chosen_plan()

    trainer = _trainer(3, [callback, _Probe()], tmp_path, limit_train_batches=5)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert chosen["plan"] is not None
    assert module.model.pruning_history[0]["keep"] == chosen["plan"].to_dict()["keep"]


def test_polarize_keeps_gammas_in_range_and_splits_them(tmp_path, synthetic_cache):
    module = _Zero(lr=0.5)
    callback = SlimCallback(method="polarize", sparsity=0.05, prune_epochs=[], ratio=0.5, write_artifacts=False)
    trainer = _trainer(4, [callback], tmp_path, limit_train_batches=3)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    gammas = torch.cat([w.detach() for w in sparsity_target(module.model).weights])
    assert gammas.min() >= 0 and gammas.max() <= 1
    # Without a task loss the γ below the mean fall at (t + 1)·λ, those above at (t - 1)·λ: two populations.
    assert 0.2 < (gammas == 0).float().mean() < 0.8 and gammas[gammas > 0].min() > 0.1


@pytest.mark.parametrize("method", ["l1", "targeted", "polarize"])
def test_each_method_through_bf16_autocast_accumulation_and_the_prune(method, tmp_path, synthetic_cache):
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    # polarize clamps while its penalty is on: keep it on through the fine-tune to check the clamp there too.
    arguments = {"targeted": {"warmup": 0.0, "hold": 0.3}, "polarize": {"sparsity_after_prune": True}}.get(method, {})
    callback = SlimCallback(method=method, prune_epochs=2, ratio=0.5, write_artifacts=False, **arguments)
    trainer = _trainer(3, [callback], tmp_path, precision="bf16-mixed", limit_val_batches=1,
                       accumulate_grad_batches=2)
    after_steps = []
    after_step = callback.method.after_step
    callback.method.after_step = lambda: after_steps.append(trainer.global_step) or after_step()
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert callback.completed_prunes == 1
    # Once per optimizer step of the sparse phase (3 batches an epoch, 2 a step: 2 steps an epoch), not once per
    # batch: 2 epochs before the prune, and polarize's fine-tune epoch.
    assert trainer.global_step == 6 and len(after_steps) == (6 if method == "polarize" else 4)
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
    assert count_parameters(module.model) < 0.7 * count_parameters(YOLOv5("yolov5n", nc=4))
    if method == "polarize":
        assert all(0 <= float(w.detach().min()) and float(w.detach().max()) <= 1
                   for w in sparsity_target(module.model).weights)


def test_iterative_prunes_keep_one_stage_entry_each(tmp_path, synthetic_cache):
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    callback = SlimCallback(method="l1", sparsity=1e-3, prune_epochs=[1, 2], ratio=[0.3, 0.5], write_artifacts=False)
    trainer = _trainer(3, [callback], tmp_path, limit_val_batches=1)
    trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    assert {"train", "pruned", "train_2", "pruned_2"} <= set(callback.stages)
    assert callback.stages["pruned_2"]["params"] < callback.stages["pruned"]["params"] < callback.stages["train"]["params"]
    assert len(module.pruning_plans) == 2  # the network's history holds both plans


@pytest.mark.parametrize("spread,given,expected", [
    (False, {}, ("fresh", 0.6, 0.15)),  # every γ still 1: the l1 warm-up must form a ranking first
    (True, {}, ("trained", 0.0, 0.5)),  # trained γ already rank: choose at once
    (True, {"warmup": 0.2}, ("trained", 0.2, 0.5)),  # a given value is kept, the other one defaults
])
def test_targeted_phases_default_by_where_the_sparse_phase_starts(spread, given, expected):
    module = _Zero() if spread else YOLOv5Module(model=YOLOv5("yolov5n", nc=4))
    callback = SlimCallback(method="targeted", prune_epochs=[], ratio=0.5, **given)
    callback._bind(None, module)
    method = callback.method
    assert (method.start, method.settings.warmup, method.settings.hold) == expected
    assert callback.describe()["start"] == expected[0] and callback.describe()["warmup"] == expected[1]
    resumed = SlimCallback(method="targeted", prune_epochs=[], ratio=0.5, **given)
    resumed.load_state_dict(callback.state_dict())
    resumed._bind(None, YOLOv5Module(model=YOLOv5("yolov5n", nc=4)))  # a fresh network, but the run's start is kept
    assert (resumed.method.start, resumed.method.settings.warmup) == expected[:2]


def test_the_settings_in_force_name_what_the_method_uses_and_the_fine_tune():
    l1 = SlimCallback(method="l1", schedule="cosine", sparsity_after_prune=True, finetune_schedule="restart")
    assert {k: l1.describe()[k] for k in ("schedule", "floor", "sparsity_after_prune", "finetune_schedule")} == {
        "schedule": "cosine", "floor": 0.1, "sparsity_after_prune": True, "finetune_schedule": "restart"}
    targeted = SlimCallback(method="targeted").describe()
    assert "schedule" not in targeted and "floor" not in targeted and targeted["finetune_schedule"] == "continue"


def test_a_given_warmup_that_leaves_no_shrink_time_with_the_trained_hold_is_refused():
    callback = SlimCallback(method="targeted", warmup=0.6, prune_epochs=[], ratio=0.5)
    with pytest.raises(ValueError, match=r"warmup \+ hold < 1, found warmup=0.6 and hold=0.5 \(with the trained"):
        callback._bind(None, _Zero())


def test_targeted_shrinks_a_weight_average_on_another_device():
    # EMAWeightAveraging(device="cpu") keeps its copy off the training device: the copy's masks must be
    # built on the copy's device ("meta" stands in for the second device here), not on the network's.
    network = _Zero().model
    average = YOLOv5("yolov5n", nc=4)
    for module in average.modules():  # its BatchNorms, the parameters the method touches (spec needs the rest)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.to("meta")
    method = make_method(MethodSettings(method="targeted", warmup=0.0, hold=0.5), "grouped")
    method.bind(network, [average])
    method.set_choice(plan_pruning(network, ratio=0.5), network)
    start = [w.detach().clone() for w in sparsity_target(network).weights]
    method.step(0.25, 10)
    target, masks = _masks(network, method.choice)
    shrunk = torch.cat([(w.detach() / s)[m.bool()] for w, s, m in zip(target.weights, start, masks)])
    assert shrunk.max() < 1  # the trained network moved; the meta copy took its step without a device error
    assert all(w.device.type == "meta" for w in sparsity_target(average).weights)
    # CPU kernels accept a CPU mask on a meta tensor, so the devices are checked where a CUDA run would fail.
    assert [mask.device.type for mask in method._masks[1]] == ["meta"] * len(method._masks[1])


def test_targeted_shrinks_a_bfloat16_weight_average_of_a_float32_network():
    # Each step's factor is finer than bfloat16 can tell from 1: the copy's shrink must be gathered too,
    # although the trained network (whose dtype alone used to decide) is float32.
    network = _Zero().model
    average = YOLOv5("yolov5n", nc=4).to(torch.bfloat16)
    method = make_method(MethodSettings(method="targeted", warmup=0.0, hold=0.5), "grouped")
    method.bind(network, [average])
    method.set_choice(plan_pruning(network, ratio=0.5), network)
    for _ in range(50):  # rate about 2.5e-4 a step: 0.99975 rounds to 1 in bfloat16; gathered, ~32 steps
        method.step(0.25, 10_000)
    target, masks = _masks(average, method.choice)
    chosen = torch.cat([w.detach().float()[m.bool()] for w, m in zip(target.weights, masks)])
    assert chosen.max() < 1  # without gathering, every bfloat16 γ rounds back to exactly 1
