"""AutoAnchor inside a real (tiny) fit: bad anchors are refitted for network, EMA and loss; good ones kept."""

import lightning as L
import numpy as np
import pytest
import torch
from slim_support import tiny_datamodule

from yolo_slim.lit import AutoAnchor, YOLOv5Module
from yolo_slim.models import YOLOv5, load_model_yaml


def _fit(module, callback, tmp_path, synthetic_cache, datamodule=None, **kwargs):
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_train_batches=1, limit_val_batches=0, default_root_dir=tmp_path, callbacks=[callback])
    trainer.fit(module, datamodule=datamodule or tiny_datamodule(synthetic_cache), **kwargs)
    return trainer


def test_bad_anchors_are_refitted_everywhere_the_run_reads_them(tmp_path, synthetic_cache):
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    module.set_anchors(torch.full((9, 2), 600.0))  # far larger than any box of a 64 px image
    callback = AutoAnchor(generations=50, seed=0)
    _fit(module, callback, tmp_path, synthetic_cache)
    result = callback.result
    assert result["changed"] and result["recall_before"] == 0.0 and result["recall_after"] > 0.9
    anchors = module.model.detect.anchors
    fitted = torch.tensor(result["anchors"], dtype=anchors.dtype)
    assert torch.allclose(module.model.anchors_px().reshape(-1, 2), fitted)
    assert torch.equal(module.ema.module.detect.anchors, anchors)  # the EMA copy
    assert torch.equal(module.criterion.anchors, anchors)  # and the loss, which keeps its own copy
    assert module.hparams["model"]["anchors"] == [list(level) for level in module.model.spec.anchors]


def test_fitting_anchors_are_kept_and_a_resume_is_left_alone(tmp_path, synthetic_cache):
    module = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    module.set_anchors(torch.tensor([[8.0, 8], [10, 10], [12, 12], [16, 16], [20, 20], [24, 24], [30, 30],
                                     [36, 36], [44, 44]]))
    before = module.model.detect.anchors.clone()
    callback = AutoAnchor(generations=50)
    trainer = _fit(module, callback, tmp_path, synthetic_cache)
    assert not callback.result["changed"] and callback.result["recall_before"] >= 0.98
    assert torch.equal(module.model.detect.anchors, before)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    resumed = YOLOv5Module(YOLOv5("yolov5n", nc=4), imgsz=64)
    resumed_callback = AutoAnchor()
    _fit(resumed, resumed_callback, tmp_path, synthetic_cache, ckpt_path=tmp_path / "run.ckpt")
    assert resumed_callback.result is None  # not checked again: the checkpoint's anchors were trained


def test_placeholder_anchors_are_refitted_even_when_their_recall_passes(tmp_path, synthetic_cache, monkeypatch):
    data = load_model_yaml("yolov5n")
    data["anchors"] = 3  # placeholders 0, 1, ..., 5 px on every level
    module = YOLOv5Module(YOLOv5(data, nc=4), imgsz=64)
    datamodule = tiny_datamodule(synthetic_cache)
    datamodule.setup("fit")
    # Boxes of 3 to 12 px: the placeholder (4, 5) matches them all (recall 1.0, above the 0.98 target).
    small = np.random.default_rng(0).uniform(3, 12, size=(200, 2))
    monkeypatch.setattr(type(datamodule.datasets["train"]), "box_sizes", lambda self: small)
    callback = AutoAnchor(generations=50, seed=0)
    _fit(module, callback, tmp_path, synthetic_cache, datamodule=datamodule)
    result = callback.result
    assert result["placeholders"] and result["recall_before"] == 1.0 and result["changed"]
    assert (module.model.anchors_px() > 1).all()  # no zero-width placeholder is left
    assert torch.equal(module.criterion.anchors, module.model.detect.anchors)


def test_bad_arguments():
    with pytest.raises(ValueError, match="anchor_t must be > 1"):
        AutoAnchor(anchor_t=1.0)
    with pytest.raises(ValueError, match="generations must be >= 0"):
        AutoAnchor(generations=-1)


@pytest.mark.parametrize("rank_zero", [True, False], ids=["rank0", "rank1"])
def test_the_result_is_said_by_rank_zero_only(caplog, rank_zero):
    """Under DDP every rank installs rank 0's result (broadcast); only rank 0 logs it."""
    from types import SimpleNamespace

    result = {"changed": True, "placeholders": False, "recall_before": 0.9, "recall_after": 0.999,
              "anchors": np.arange(18, dtype=float).reshape(3, 3, 2) + 1}
    installed = []
    module = SimpleNamespace(set_anchors=installed.append)
    dataset = SimpleNamespace(box_sizes=lambda: np.ones((4, 2)))
    trainer = SimpleNamespace(ckpt_path=None, is_global_zero=rank_zero,
                              datamodule=SimpleNamespace(datasets={"train": dataset}),
                              strategy=SimpleNamespace(broadcast=lambda value, src: result))
    callback = AutoAnchor()
    callback._check = lambda pl_module, sizes: result  # rank 0's computation, tested above
    with caplog.at_level("INFO", logger="yolo_slim"):
        callback.on_fit_start(trainer, module)
    assert len(installed) == 1 and callback.result is result  # every rank installs the anchors
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("AutoAnchor:")]
    assert len(said) == (1 if rank_zero else 0), said
