"""YOLODataset and collate: sample layout, labels on their pixels, decode failures, worker seeds."""

from __future__ import annotations

import logging
import random

import lightning
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from yolo_slim.data import AugmentConfig, YOLODataset, collate, load_dataset_config, scan_split

NO_AUGMENT = AugmentConfig(mosaic=0.0, affine=0.0, hsv=0.0, fliplr=0.0)


def _records(yolo_dataset, split: str = "train"):
    config = load_dataset_config(yolo_dataset)
    return scan_split(config.splits[split], config.nc)[0]


def _pixel_boxes(labels: torch.Tensor, size: int) -> np.ndarray:
    """Normalised [cls, cx, cy, w, h] -> pixel x1, y1, x2, y2."""
    cx, cy, w, h = (labels[:, 1:] * size).T.numpy()
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def test_validation_sample_is_letterboxed(yolo_dataset, helpers):
    dataset = YOLODataset(_records(yolo_dataset, "val"), imgsz=64, augment=None)
    assert len(dataset) == 3
    for index in range(3):
        image, labels, path = dataset[index]
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
        assert labels.dtype == torch.float32 and labels.shape == (1, 5)
        assert path.endswith(f"v{index}.{'png' if index == 1 else 'jpg'}")
        np.testing.assert_allclose(_pixel_boxes(labels, 64)[0], helpers.white_box(image), atol=1.0)
    # v1.png is 80 x 40: resized to 64 x 32, padded 16 rows top and bottom; box (10, 5, 70, 35).
    np.testing.assert_allclose(dataset[1][1].numpy(), [[1, 0.5, 0.5, 0.75, 0.375]], atol=1e-6)


def test_flip_only_training_sample(yolo_dataset, helpers):
    flip = AugmentConfig(mosaic=0.0, affine=0.0, hsv=0.0, fliplr=1.0)
    plain = YOLODataset(_records(yolo_dataset), imgsz=64, augment=NO_AUGMENT)
    flipped = YOLODataset(_records(yolo_dataset), imgsz=64, augment=flip)
    image, labels, _ = plain[2]
    flipped_image, flipped_labels, _ = flipped[2]
    assert torch.equal(flipped_image, image.flip(-1))
    np.testing.assert_allclose(flipped_labels[:, 1], 1 - labels[:, 1], atol=1e-6)
    np.testing.assert_allclose(_pixel_boxes(flipped_labels, 64)[0], helpers.white_box(flipped_image), atol=1.0)


@pytest.mark.parametrize("seed", range(4))
def test_augmented_training_samples(yolo_dataset, seed):
    dataset = YOLODataset(_records(yolo_dataset), imgsz=64, augment=AugmentConfig(hsv=0.0))
    random.seed(seed)
    objects = 0
    for index in range(len(dataset)):
        image, labels, path = dataset[index]
        objects += len(labels)
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
        assert labels.shape[1] == 5 and labels.dtype == torch.float32
        assert torch.all((labels[:, 1:] >= 0) & (labels[:, 1:] <= 1))
        assert torch.all(labels[:, 3:] > 0) and set(labels[:, 0].tolist()) <= {0.0, 1.0}
        for box in _pixel_boxes(labels, 64):  # every box still sits on white pixels
            x1, y1, x2, y2 = box
            core = image[:, int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1].float()
            assert core.numel() == 0 or core.mean() > 200, path
    assert objects >= len(dataset)  # mosaics hold several images' objects


def test_augmentation_is_reproducible_from_the_python_seed(yolo_dataset):
    dataset = YOLODataset(_records(yolo_dataset), imgsz=64, augment=AugmentConfig())
    random.seed(3)
    first = [dataset[index] for index in range(3)]
    random.seed(3)
    second = [dataset[index] for index in range(3)]
    for (image_a, labels_a, _), (image_b, labels_b, _) in zip(first, second):
        assert torch.equal(image_a, image_b) and torch.equal(labels_a, labels_b)


def test_undecodable_image_is_replaced_not_fatal(yolo_dataset, caplog):
    dataset = YOLODataset(_records(yolo_dataset, "val"), imgsz=64, augment=None)
    broken = yolo_dataset.parent / "images" / "val" / "v0.jpg"
    broken.write_bytes(b"changed on disk after the scan")
    with caplog.at_level(logging.WARNING, logger="yolo_slim.data.dataset"):
        image, labels, path = dataset[0]
        again = dataset[0]
    assert path.endswith("v1.png") and again[2] == path  # the next image, deterministically
    assert torch.equal(image, dataset[1][0]) and torch.equal(labels, dataset[1][1])
    assert dataset.decode_failures == 1
    assert len([record for record in caplog.records if "v0.jpg" in record.getMessage()]) == 1


def test_decode_failure_inside_a_mosaic(yolo_dataset):
    records = _records(yolo_dataset)
    for record in records[1:]:
        record.path.write_bytes(b"gone")
    dataset = YOLODataset(records, imgsz=64, augment=AugmentConfig())
    random.seed(0)
    for index in range(len(dataset)):
        image, _, path = dataset[index]
        assert image.shape == (3, 64, 64) and path.endswith("img0.jpg")
    assert dataset.decode_failures == 5


def test_nothing_decodable_raises(yolo_dataset):
    records = _records(yolo_dataset, "val")
    for record in records:
        record.path.write_bytes(b"gone")
    with pytest.raises(RuntimeError, match="none of the 3 images can be decoded"):
        YOLODataset(records, imgsz=64)[0]


def test_pillow_fallback_formats(tmp_path, helpers):
    paths = [helpers.write_image(tmp_path / f"a.{suffix}", 40, 20, [(10, 5, 30, 15)])
             for suffix in ("bmp", "tif", "webp")]
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")  # no images/ folder: labels sit beside
    records, report = scan_split(paths, nc=1)
    assert report.usable_images == 3
    dataset = YOLODataset(records, imgsz=32)
    for index in range(3):
        image, labels, _ = dataset[index]
        np.testing.assert_allclose(_pixel_boxes(labels, 32)[0], helpers.white_box(image), atol=1.0)


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_images_keep_their_high_byte(tmp_path, suffix):
    # As OpenCV's imread (ultralytics' loader) reads them; torchvision returns a 16-bit PNG as
    # uint16, and Pillow's convert("RGB") would clip a 16-bit TIFF at 255.
    from PIL import Image

    from yolo_slim.data.dataset import decode_rgb

    grey = (np.arange(20 * 40, dtype=np.uint32).reshape(20, 40) * 80).astype(np.uint16)  # 0 .. 63920
    path = tmp_path / "images" / f"deep.{suffix}"
    path.parent.mkdir(parents=True)
    Image.fromarray(grey).save(path)
    image = decode_rgb(str(path))
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 40)
    expected = torch.from_numpy((grey >> 8).astype(np.uint8))
    assert all(torch.equal(channel, expected) for channel in image)
    records, _ = scan_split([path], nc=1)
    dataset = YOLODataset(records, imgsz=32)
    dataset.cache_images()  # the RAM cache takes only uint8 images: this raised before
    assert dataset[0][0].dtype == torch.uint8


# --- RAM cache -----------------------------------------------------------------------------------


@pytest.mark.parametrize("imgsz", [32, 64, 96])
def test_cached_validation_samples_equal_decoded_ones(yolo_dataset, imgsz):
    decoded = YOLODataset(_records(yolo_dataset, "val"), imgsz=imgsz)
    cached = YOLODataset(_records(yolo_dataset, "val"), imgsz=imgsz)
    assert cached.cache_images() == cached.resized_bytes and cached.cached and not decoded.cached
    for index in range(len(decoded)):
        (image_a, labels_a, path_a), (image_b, labels_b, path_b) = decoded[index], cached[index]
        assert torch.equal(image_a, image_b) and torch.equal(labels_a, labels_b) and path_a == path_b


def test_cached_training_samples_equal_decoded_ones(yolo_dataset):
    """Reading the cache draws no random numbers: the same seed gives the same mosaics."""
    decoded = YOLODataset(_records(yolo_dataset), imgsz=64, augment=AugmentConfig())
    cached = YOLODataset(_records(yolo_dataset), imgsz=64, augment=AugmentConfig())
    cached.cache_images()
    for dataset in (decoded, cached):
        random.seed(5)
        dataset.samples = [dataset[index % len(dataset)] for index in range(12)]
    for (image_a, labels_a, _), (image_b, labels_b, _) in zip(decoded.samples, cached.samples):
        assert torch.equal(image_a, image_b) and torch.equal(labels_a, labels_b)


def test_resized_bytes(yolo_dataset, helpers):
    dataset = YOLODataset(_records(yolo_dataset), imgsz=64)
    expected = 0
    for width, height, _ in helpers.TRAIN_IMAGES.values():
        scale = 64 / max(width, height)
        expected += 3 * round(height * scale) * round(width * scale)
    assert dataset.resized_bytes == expected
    assert dataset.cache_images() == expected and dataset.cache_images() == expected  # the second call: no-op


def test_samples_are_not_views_of_the_cache(yolo_dataset):
    dataset = YOLODataset(_records(yolo_dataset, "val"), imgsz=64)  # v0.jpg is 64 x 64: nothing to pad
    dataset.cache_images()
    image = dataset[0][0]
    before = image.clone()
    image.fill_(0)
    assert torch.equal(dataset[0][0], before)


def test_undecodable_image_found_while_caching(yolo_dataset, caplog):
    records = _records(yolo_dataset, "val")
    (yolo_dataset.parent / "images" / "val" / "v0.jpg").write_bytes(b"changed on disk after the scan")
    dataset = YOLODataset(records, imgsz=64)
    with caplog.at_level(logging.WARNING, logger="yolo_slim.data.dataset"):
        dataset.cache_images()
        image, labels, path = dataset[0]
    assert dataset.decode_failures == 1 and len(caplog.records) == 1 and "v0.jpg" in caplog.records[0].getMessage()
    assert path.endswith("v1.png")  # replaced by the next image, as without the cache
    assert torch.equal(image, dataset[1][0]) and torch.equal(labels, dataset[1][1])


def test_cache_serves_images_without_the_files(yolo_dataset):
    records = _records(yolo_dataset, "val")
    dataset = YOLODataset(records, imgsz=64)
    dataset.cache_images()
    expected = [dataset[index][0] for index in range(len(dataset))]
    for record in records:
        record.path.unlink()
    assert all(torch.equal(dataset[index][0], expected[index]) for index in range(len(dataset)))
    assert dataset.decode_failures == 0


@pytest.mark.parametrize("imgsz", [0, -32, 64.0, True])
def test_invalid_imgsz(yolo_dataset, imgsz):
    with pytest.raises(ValueError, match=rf"imgsz must be a positive integer; found {imgsz!r}"):
        YOLODataset(_records(yolo_dataset), imgsz=imgsz)


def test_empty_records():
    with pytest.raises(ValueError, match="records is empty"):
        YOLODataset([], imgsz=64)


def test_collate_layout():
    batch = [
        (torch.zeros((3, 8, 8), dtype=torch.uint8), torch.tensor([[1, 0.5, 0.5, 0.2, 0.2]]), "a.jpg"),
        (torch.ones((3, 8, 8), dtype=torch.uint8), torch.zeros((0, 5)), "b.jpg"),
        (torch.full((3, 8, 8), 2, dtype=torch.uint8), torch.tensor([[0, 0.1, 0.2, 0.3, 0.4], [1, 0.5, 0.6, 0.7, 0.8]]),
         "c.jpg"),
    ]
    out = collate(batch)
    assert out["images"].shape == (3, 3, 8, 8) and out["images"].dtype == torch.uint8
    assert out["images"][2].eq(2).all()
    assert out["targets"].dtype == torch.float32
    torch.testing.assert_close(out["targets"], torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.2], [2, 0, 0.1, 0.2, 0.3, 0.4],
                                                             [2, 1, 0.5, 0.6, 0.7, 0.8]]))
    assert out["paths"] == ["a.jpg", "b.jpg", "c.jpg"]
    assert collate(batch[1:2])["targets"].shape == (0, 6)


def test_workers_draw_different_augmentations(tmp_path, helpers):
    """With seed_everything(workers=True), each worker has its own Python random stream."""
    paths = [helpers.write_image(tmp_path / f"{index}.png", 64, 64, [(16, 16, 48, 48)]) for index in range(4)]
    for path in paths:
        path.with_suffix(".txt").write_text("0 0.5 0.5 0.5 0.5\n")
    dataset = YOLODataset(scan_split(paths, nc=1)[0], imgsz=64, augment=AugmentConfig())
    lightning.seed_everything(0, workers=True)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=collate)
    batches = list(loader)
    # Indices 0 and 1 go to different workers; the images are identical, so only the random
    # streams can make them differ.
    assert not torch.equal(batches[0]["images"], batches[1]["images"])
