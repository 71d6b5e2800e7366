"""The weight EMA: ramped decay, buffers averaged, integer counters copied."""

import math
import warnings

import lightning as L
import pytest
import torch
from slim_support import tiny_datamodule
from torch import nn
from torch.overrides import TorchFunctionMode

from yolo_slim.lit import YOLOv5Module
from yolo_slim.lit.ema import make_ema, update_ema
from yolo_slim.models import YOLOv5


def test_ramped_decay_and_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = make_ema(model, decay=0.9, ramp_updates=1.0)
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema.update_parameters(model)  # first update copies
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update_parameters(model)
    decay = 0.9 * (1 - math.exp(-1.0))
    assert ema.module[0].weight[0, 0].item() == pytest.approx(decay * 1.0 + (1 - decay) * 2.0)
    assert ema.module[1].running_mean[0].item() == pytest.approx((1 - decay) * 4.0)
    assert ema.module[1].num_batches_tracked.item() == 7


def test_bad_decay():
    with pytest.raises(ValueError, match=r"ema decay must be in \[0, 1\), found 1.0"):
        make_ema(nn.Linear(1, 1), decay=1.0)


def test_the_ema_and_its_counter_live_on_the_model_device():
    # An EMA made after a prune inside a DDP fit is never moved by Lightning: a CPU counter there
    # reaches DDP's buffer broadcast, which NCCL refuses. The meta device stands in for CUDA.
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).to("meta")
    ema = make_ema(model)
    assert {tensor.device.type for tensor in [*ema.parameters(), *ema.buffers()]} == {"meta"}
    assert ema.n_averaged.device.type == "meta"


class _HostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in ("item", "__bool__", "__float__", "__int__", "tolist")
        return func(*args, **(kwargs or {}))


def test_update_ema_is_torchs_update_without_reading_the_device():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    theirs, ours = make_ema(model, decay=0.9, ramp_updates=3.0), make_ema(model, decay=0.9, ramp_updates=3.0)
    reads = []
    for step in range(5):
        model.train()(torch.randn(8, 3))  # new BatchNorm statistics and a counter step
        with torch.no_grad():
            model[0].weight.add_(torch.randn_like(model[0].weight))
        theirs.update_parameters(model)
        with _HostReads() as counter:
            update_ema(ours, model)
        reads.append(counter.count)
        for mine, expected in zip([*ours.parameters(), *ours.buffers()], [*theirs.parameters(), *theirs.buffers()]):
            torch.testing.assert_close(mine, expected, rtol=0, atol=0)
    assert reads == [1, 0, 0, 0, 0]  # the counter is read once, when the EMA is new


def test_a_loaded_counter_drives_the_ramp():
    model = nn.Linear(2, 1)
    ema = make_ema(model, decay=0.9, ramp_updates=1.0)
    for _ in range(3):
        update_ema(ema, model)
    restored = make_ema(model, decay=0.9, ramp_updates=1.0)
    update_ema(restored, model)  # its own count is 1 now
    restored.load_state_dict(ema.state_dict())  # 3, as a resumed fit loads it
    with torch.no_grad():
        model.weight.fill_(1.0)
    before = restored.module.weight.clone()
    update_ema(restored, model)
    decay = 0.9 * (1 - math.exp(-3.0))
    torch.testing.assert_close(restored.module.weight, decay * before + (1 - decay) * 1.0)
    assert int(restored.n_averaged) == 4


@pytest.mark.parametrize("frozen_layer", [False, True])
def test_lightning_warns_of_eval_mode_layers_but_not_of_the_ema(tmp_path, synthetic_cache, frozen_layer):
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    if frozen_layer:
        module.model.model[0].eval()  # a layer the user left in eval mode: Lightning's warning still says so
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_train_batches=1, limit_val_batches=0, default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=tiny_datamodule(synthetic_cache))
    warned = [w for w in caught if "in eval mode at the start of training" in str(w.message)]
    assert len(warned) == (1 if frozen_layer else 0)
