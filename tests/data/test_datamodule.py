"""YOLODataModule: argument checks, nc before a Trainer, one report per split, loaders end to end."""

from __future__ import annotations

import logging

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
    assert messages == [
        (logging.WARNING, f"train split of {yolo_dataset}: 6 images listed, 6 usable (1 background), 6 objects"),
        (logging.INFO, f"val split of {yolo_dataset}: 3 images listed, 3 usable (0 background), 3 objects"),
    ]
    assert (yolo_dataset.parent / "labels" / "train.yolo_slim.cache").is_file()


def test_split_with_no_usable_image(yolo_dataset):
    for path in (yolo_dataset.parent / "images" / "val").iterdir():
        path.write_bytes(b"not an image")
    datamodule = YOLODataModule(yolo_dataset, imgsz=64)
    with pytest.raises(DataConfigError, match=r"split 'val' has no usable image \(all 3 were skipped\)"
                                              r"(.|\n)*corrupt_image x3"):
        datamodule.setup("validate")


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
