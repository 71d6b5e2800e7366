"""YOLODataModule: argument checks, nc before a Trainer, one report per split, loaders end to end."""

from __future__ import annotations

import logging
import random

import pytest
import torch
import yaml

from yolo_slim.data import AugmentConfig, DataConfigError, YOLODataModule


@pytest.mark.parametrize("arguments, message", [
    ({"imgsz": 0}, r"imgsz must be a positive multiple of 32 .*; found 0"),
    ({"imgsz": 100}, r"imgsz must be a positive multiple of 32 .*; found 100. Try 96"),
    ({"imgsz": 320.0}, r"imgsz must be a positive multiple of 32 .*; found 320.0"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1; found 0"),
    ({"batch_size": True}, r"batch_size must be an integer >= 1; found True"),
    ({"workers": -1}, r"workers must be an integer >= 0 .*; found -1"),
    ({"cache": "disk"}, r"cache \(data.cache\) must be one of none, ram, auto \(auto: .*\); found 'disk'"),
    ({"cache": None}, r"cache \(data.cache\) must be one of none, ram, auto .*; found None"),
    ({"cache": True}, r"cache \(data.cache\) must be one of none, ram, auto .*; found True"),
])
def test_invalid_arguments(yolo_dataset, arguments, message):
    with pytest.raises(ValueError, match=message):
        YOLODataModule(yolo_dataset, **arguments)


def test_invalid_augment(yolo_dataset):
    with pytest.raises(TypeError, match=r"augment must be an AugmentConfig or None; found dict"):
        YOLODataModule(yolo_dataset, augment={"mosaic": 1.0})


def test_nc_and_names_without_a_trainer(yolo_dataset):
    datamodule = YOLODataModule(str(yolo_dataset), imgsz=64)
    assert datamodule.nc == 2 and datamodule.names == ["square", "box"]
    assert datamodule.data_yaml == yolo_dataset
    assert datamodule.dataset_config.yaml_path == yolo_dataset
    assert datamodule.reports == {}  # nothing was scanned for that


def test_setup_scans_and_logs_each_split_once(yolo_dataset, caplog):
    labels = yolo_dataset.parent / "labels" / "train" / "img0.txt"
    labels.write_text(labels.read_text() + "9 0.5 0.5 0.1 0.1\n")
    datamodule = YOLODataModule(yolo_dataset, imgsz=64, batch_size=2, workers=0)
    with caplog.at_level(logging.INFO, logger="yolo_slim.data.datamodule"):
        datamodule.setup("fit")
        datamodule.setup("fit")
        datamodule.setup("validate")
    assert set(datamodule.reports) == {"train", "val"}
    assert datamodule.reports["train"].problems == {"bad_class": 1}
    messages = [(record.levelno, record.getMessage().splitlines()[0]) for record in caplog.records]
    assert [message for message in messages if "split of" in message[1]] == [
        (logging.WARNING, f"train split of {yolo_dataset}: 6 images listed, 6 usable (1 background), 6 objects"),
        (logging.INFO, f"val split of {yolo_dataset}: 3 images listed, 3 usable (0 background), 3 objects"),
    ]
    assert [message[1].split(",")[0] for message in messages if "cached" in message[1]] == [
        "train split: 6 images cached in RAM", "val split: 3 images cached in RAM"]
    assert (yolo_dataset.parent / "labels" / "train.yolo_slim.cache").is_file()


def test_split_with_no_usable_image(yolo_dataset):
    for path in (yolo_dataset.parent / "images" / "val").iterdir():
        path.write_bytes(b"not an image")
    datamodule = YOLODataModule(yolo_dataset, imgsz=64)
    with pytest.raises(DataConfigError, match=r"split 'val' has no usable image \(all 3 were skipped\)"
                                              r"(.|\n)*corrupt_image x3"):
        datamodule.setup("validate")


def test_a_training_split_without_any_label_file_is_refused(yolo_dataset):
    for label in (yolo_dataset.parent / "labels" / "train").glob("*.txt"):
        label.unlink()
    datamodule = YOLODataModule(yolo_dataset, imgsz=64)
    with pytest.raises(DataConfigError, match=r"no image of split 'train' has a label file; e.g. .*labels.train.img"
                                              r"\w*\.txt does not exist"):
        datamodule.setup("fit")


def test_a_training_split_whose_rows_were_all_skipped_is_refused(yolo_dataset):
    # Boxes written in pixels instead of fractions: every row out of bounds, every image a background.
    for label in (yolo_dataset.parent / "labels" / "train").glob("*.txt"):
        label.write_text("0 32 32 10 10\n")
    datamodule = YOLODataModule(yolo_dataset, imgsz=64)
    with pytest.raises(DataConfigError, match=r"split 'train' has no object to learn from(.|\n)*out_of_bounds x"):
        datamodule.setup("fit")
    for label in (yolo_dataset.parent / "labels" / "train").glob("*.txt"):
        label.write_text("")  # empty files: backgrounds, nothing to learn either
    with pytest.raises(DataConfigError, match=r"split 'train' has no object to learn from"):
        YOLODataModule(yolo_dataset, imgsz=64).setup("fit")


def test_test_split(yolo_dataset):
    datamodule = YOLODataModule(yolo_dataset, imgsz=64, workers=0)
    with pytest.raises(DataConfigError, match=r"has no 'test' split; it has train, val"):
        datamodule.test_dataloader()
    content = yaml.safe_load(yolo_dataset.read_text()) | {"test": "images/val"}
    yolo_dataset.write_text(yaml.safe_dump(content))
    datamodule = YOLODataModule(yolo_dataset, imgsz=64, workers=0)
    datamodule.setup()
    assert set(datamodule.reports) == {"train", "val", "test"}
    assert datamodule.test_dataloader().dataset.augment is None


@pytest.mark.parametrize("workers", [0, 2])
def test_loaders_end_to_end(yolo_dataset, workers):
    datamodule = YOLODataModule(yolo_dataset, imgsz=64, batch_size=4, workers=workers)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    assert (train.num_workers, train.persistent_workers, train.pin_memory, train.drop_last) == (
        workers, workers > 0, False, False)
    assert isinstance(train.dataset.augment, AugmentConfig) and val.dataset.augment is None
    assert type(train.sampler).__name__ == "RandomSampler" and type(val.sampler).__name__ == "SequentialSampler"
    for loader, expected_size in ((train, 4), (val, 3)):
        batch = next(iter(loader))
        assert batch["images"].shape == (expected_size, 3, 64, 64) and batch["images"].dtype == torch.uint8
        targets = batch["targets"]
        assert targets.dtype == torch.float32 and targets.shape[1] == 6 and len(targets) > 0
        assert set(targets[:, 0].long().tolist()) <= set(range(expected_size))
        assert torch.all((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1))
        assert len(batch["paths"]) == expected_size
    assert val.dataset[0][2] == batch["paths"][0]  # validation is not shuffled


def test_pin_memory_follows_the_trainer(yolo_dataset):
    class FakeStrategy:
        root_device = torch.device("cuda", 0)

    class FakeTrainer:
        strategy = FakeStrategy()

    datamodule = YOLODataModule(yolo_dataset, imgsz=64, workers=0)
    assert datamodule.val_dataloader().pin_memory is False  # no trainer attached
    datamodule.trainer = FakeTrainer()
    assert datamodule.val_dataloader().pin_memory is True


def test_each_ddp_rank_draws_its_own_augmentation_when_loading_in_process(yolo_dataset):
    # workers=0: augmentation draws from the training process's `random`, which seed_everything seeds alike
    # on every rank. The fake ranks below read the same images (no DistributedSampler), so any difference
    # in their first batch is the augmentation's.
    class FakeStrategy:
        root_device = torch.device("cpu")

    def first_batch(world_size: int | None, rank: int = 0) -> torch.Tensor:
        class FakeTrainer:
            strategy, is_global_zero, global_rank = FakeStrategy(), rank == 0, rank

        datamodule = YOLODataModule(yolo_dataset, imgsz=64, batch_size=4, workers=0)
        if world_size is not None:
            datamodule.trainer = FakeTrainer()
            datamodule.trainer.world_size = world_size
        datamodule.setup("fit")
        random.seed(0), torch.manual_seed(0)
        return next(iter(datamodule.train_dataloader()))["images"]

    assert torch.equal(first_batch(1), first_batch(None))  # one process: the seeded draws as they were
    assert torch.equal(first_batch(2, 1), first_batch(2, 1))  # each rank still reproducible
    assert not torch.equal(first_batch(2, 0), first_batch(2, 1))


def test_the_hsv_jitter_goes_to_the_device_only_when_training_on_a_gpu(yolo_dataset):
    class FakeStrategy:
        root_device = torch.device("cuda", 0)

    class FakeTrainer:
        strategy = FakeStrategy()
        is_global_zero = True

    on_cpu = YOLODataModule(yolo_dataset, imgsz=64, batch_size=4, workers=0)
    on_cpu.setup("fit")
    assert not on_cpu.datasets["train"].defer_hsv and "hsv" not in next(iter(on_cpu.train_dataloader()))
    on_gpu = YOLODataModule(yolo_dataset, imgsz=64, batch_size=4, workers=0)
    on_gpu.trainer = FakeTrainer()
    on_gpu.setup("fit")
    assert on_gpu.datasets["train"].defer_hsv and not on_gpu.datasets["val"].defer_hsv
    random.seed(0), torch.manual_seed(0)  # the sampler's order and the augmentation's draws
    deferred = next(iter(on_gpu.train_dataloader()))
    random.seed(0), torch.manual_seed(0)
    in_worker = next(iter(on_cpu.train_dataloader()))
    assert deferred["hsv"].shape == (4, 3)
    assert not torch.equal(deferred["images"], in_worker["images"])  # the workers left the jitter undone
    # Lightning calls the hook after moving the batch; here the "device" is the CPU: the same bytes.
    applied = on_gpu.on_after_batch_transfer(deferred, 0)
    assert "hsv" not in applied
    assert torch.equal(applied["images"], in_worker["images"]) and torch.equal(applied["targets"], in_worker["targets"])


def test_lightning_hands_the_deferred_jitter_to_the_data_module_hook(yolo_dataset):
    import lightning as L

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.keys: list[list[str]] = []

        def training_step(self, batch, batch_idx):
            self.keys.append(sorted(batch))
            return self.weight + batch["images"].float().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    datamodule = YOLODataModule(yolo_dataset, imgsz=64, batch_size=2, workers=0)
    datamodule.setup("fit")
    datamodule.datasets["train"].defer_hsv = True  # as on a GPU; the hook runs wherever the batch went
    probe = Probe()
    L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(probe, datamodule=datamodule)
    assert probe.keys == [["images", "paths", "targets"]] * 2


def test_synthetic_default_data(tmp_path):
    synthetic = pytest.importorskip("yolo_slim.data.synthetic")
    config = synthetic.SyntheticConfig(num_train=4, num_val=2, image_size=64, min_object_size_fraction=0.1)
    datamodule = YOLODataModule(None, imgsz=64, batch_size=2, workers=0, synthetic=config, cache_dir=tmp_path)
    assert datamodule.nc == len(synthetic.SYNTHETIC_NAMES) and datamodule.names == list(synthetic.SYNTHETIC_NAMES)
    assert datamodule.data_yaml.parent.parent == tmp_path.resolve()
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.reports["train"].usable_images == 4 and datamodule.reports["train"].problems == {}
    assert next(iter(datamodule.train_dataloader()))["images"].shape == (2, 3, 64, 64)


@pytest.mark.parametrize("cache, limit, cached", [
    ("auto", 1 << 30, True),  # a tiny set is far below 1 GiB
    ("auto", 1000, False),  # the train split's images at 64 pixels take 53 kB
    ("ram", 1000, True),
    ("none", 1 << 30, False),
])
def test_cache_setting(yolo_dataset, monkeypatch, caplog, cache, limit, cached):
    monkeypatch.setattr("yolo_slim.data.datamodule.AUTO_RAM_LIMIT_BYTES", limit)
    datamodule = YOLODataModule(yolo_dataset, imgsz=64, workers=0, cache=cache)
    with caplog.at_level(logging.INFO, logger="yolo_slim.data.datamodule"):
        datamodule.setup("fit")
    assert datamodule.datasets["train"].cached is cached and datamodule.datasets["val"].cached is cached
    message = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("train split:"))
    if cached:
        assert message.startswith(f"train split: 6 images cached in RAM, 0.1 MiB at imgsz 64 (data.cache={cache})")
    elif cache == "none":
        assert message == ("train split: images decoded on every sample, not cached (0.1 MiB at imgsz 64; "
                           "data.cache=none)")
    else:
        assert message == ("train split: images decoded on every sample, not cached (0.1 MiB at imgsz 64; "
                           "data.cache=auto caches below 0.0 MiB; ram forces it)")
    assert next(iter(datamodule.train_dataloader()))["images"].shape == (6, 3, 64, 64)


def test_a_ram_cache_larger_than_the_free_memory_is_refused_and_auto_does_without(yolo_dataset, monkeypatch, caplog):
    monkeypatch.setattr("yolo_slim.data.datamodule.available_memory_bytes", lambda: 50 * 1024)  # 0.05 MiB
    with pytest.raises(DataConfigError, match=r"data.cache=ram: the train split needs 0.1 MiB at imgsz 64, but "
                                              r"0.0 MiB of memory is available; use data.cache=auto or none"):
        YOLODataModule(yolo_dataset, imgsz=64, workers=0, cache="ram").setup("fit")
    datamodule = YOLODataModule(yolo_dataset, imgsz=64, workers=0, cache="auto")
    with caplog.at_level(logging.INFO, logger="yolo_slim.data.datamodule"):
        datamodule.setup("fit")
    assert datamodule.datasets["train"].cached is False
    assert any("not cached (data.cache=auto: the train split needs" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr("yolo_slim.data.datamodule.available_memory_bytes", lambda: None)  # no /proc/meminfo
    assert YOLODataModule(yolo_dataset, imgsz=64, workers=0, cache="ram").setup("fit") is None


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_a_containers_memory_limit_bounds_the_available_memory(tmp_path, layout):
    from yolo_slim.data.datamodule import available_memory_bytes

    folder = tmp_path if layout == "v2" else tmp_path / "memory"
    folder.mkdir(exist_ok=True)
    limit, usage, inactive = (("memory.max", "memory.current", "inactive_file") if layout == "v2" else
                              ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    (folder / limit).write_text(f"{8 << 20}\n")  # 8 MiB: below any machine's free memory
    (folder / usage).write_text(f"{6 << 20}\n")
    (folder / "memory.stat").write_text(f"anon 123\n{inactive} {1 << 20}\n")  # 1 MiB of it reclaimable cache
    assert available_memory_bytes(tmp_path) == (8 << 20) - (5 << 20)
    (folder / limit).write_text("max\n" if layout == "v2" else "9223372036854771712\n")  # no limit
    assert available_memory_bytes(tmp_path) != (8 << 20) - (5 << 20)  # MemAvailable alone then
