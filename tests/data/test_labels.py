"""scan_split: every kind of bad data is skipped, counted and shown; the good rest is kept; the cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yolo_slim.data import DataReport, scan_split
from yolo_slim.data import labels as labels_module
from yolo_slim.data.dataset import decode_rgb
from yolo_slim.data.labels import PROBLEM_KINDS, default_cache_path, label_path_for

GOOD_ROW = "0 0.5 0.5 0.25 0.25"


@pytest.fixture
def one_image(tmp_path, helpers) -> tuple[Path, Path]:
    """A 64 x 64 image and the path of its (not yet written) label file."""
    image = helpers.write_image(tmp_path / "images" / "train" / "a.png", 64, 64, [(24, 24, 40, 40)])
    label = tmp_path / "labels" / "train" / "a.txt"
    label.parent.mkdir(parents=True)
    return image, label


def test_label_path_rule():
    assert label_path_for(Path("/d/images/x/images/train/a.b.jpg")) == Path("/d/images/x/labels/train/a.b.txt")
    assert label_path_for(Path("/d/pictures/a.png")) == Path("/d/pictures/a.txt")


def test_valid_dataset(yolo_dataset, helpers):
    from yolo_slim.data import load_dataset_config

    config = load_dataset_config(yolo_dataset)
    records, report = scan_split(config.splits["train"], nc=2)
    assert [record.path.name for record in records] == sorted(helpers.TRAIN_IMAGES)
    by_name = {record.path.name: record for record in records}
    assert by_name["img2.jpg"].size == (50, 100)  # (height, width)
    np.testing.assert_allclose(by_name["img2.jpg"].labels, [[1, 0.7, 0.5, 0.4, 0.6]], atol=1e-6)
    assert by_name["img1.png"].labels.shape == (2, 5) and by_name["img1.png"].labels.dtype == np.float32
    assert by_name["img4.jpg"].labels.shape == (0, 5)
    assert (report.images, report.usable_images, report.objects, report.backgrounds) == (6, 6, 6, 1)
    assert report.problems == {} and report.problem_count == 0


@pytest.mark.parametrize("bad_row, kind", [
    ("0 0.5 0.5 0.25", "wrong_column_count"),
    ("0 0.5 0.5 0.25 0.25 0.7", "wrong_column_count"),
    ("0 0.5 abc 0.25 0.25", "not_a_number"),
    ("0 nan 0.5 0.25 0.25", "not_a_number"),
    ("0 0.5 0.5 inf 0.25", "not_a_number"),
    ("0 0.5 0.5 -0.25 0.25", "negative_value"),
    ("-1 0.5 0.5 0.25 0.25", "negative_value"),
    ("2 0.5 0.5 0.25 0.25", "bad_class"),
    ("0.5 0.5 0.5 0.25 0.25", "bad_class"),
    ("1 0.5 0.5 0 0.25", "zero_size_box"),
    ("1 0.5 0.5 0.25 0.0", "zero_size_box"),
    ("1 320 240 50 60", "out_of_bounds"),  # pixels, not normalised
    ("1 1.5 0.5 0.1 0.1", "out_of_bounds"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", "wrong_column_count"),  # an odd number of coordinates
    ("0 0.1 0.1 0.5", "wrong_column_count"),
    ("0 -0.3 0.1 -0.1 0.2 -0.2 0.4", "negative_value"),  # a polygon left of the image: its box's cx < 0
    ("3 0.1 0.1 0.5 0.1 0.3 0.6", "bad_class"),
    ("0 0.1 0.1 0.5 0.1 1.3 0.6", "out_of_bounds"),
    ("0 0.1 0.1 0.2 0.1 0.3 0.1", "zero_size_box"),  # its points on one horizontal line
    (GOOD_ROW, "duplicate_row"),
    ("0 0.500 0.5 0.2500 0.25", "duplicate_row"),  # the same numbers, written differently
])
def test_bad_rows_are_skipped_and_counted(one_image, bad_row, kind):
    image, label = one_image
    label.write_text(f"{GOOD_ROW}\n{bad_row}\n\n1 0.25 0.25 0.125 0.125\n")
    records, report = scan_split([image], nc=2)
    assert report.problems == {kind: 1}
    assert report.examples[kind] == [f"{label}:2"]
    assert len(records) == 1 and report.objects == 2
    np.testing.assert_allclose(records[0].labels, [[0, 0.5, 0.5, 0.25, 0.25], [1, 0.25, 0.25, 0.125, 0.125]])
    assert f"{kind} x1" in report.summary() and f"{label}:2" in report.summary()


def test_a_label_file_starting_with_a_byte_order_mark_keeps_its_first_row(one_image):
    image, label = one_image
    label.write_text(f"{GOOD_ROW}\n1 0.25 0.25 0.125 0.125\n", encoding="utf-8-sig")  # as Notepad saves it
    records, report = scan_split([image], nc=2)
    assert report.problems == {} and report.objects == 2
    np.testing.assert_allclose(records[0].labels, [[0, 0.5, 0.5, 0.25, 0.25], [1, 0.25, 0.25, 0.125, 0.125]])


def test_boxes_overhanging_the_image_are_clipped(one_image):
    image, label = one_image
    # x2 = 1.005; y1 = -0.001; x2 = 1.05 (an object leaving the frame); y1 = -0.05; cx a rounding below 0
    label.write_text("0 0.995 0.5 0.02 0.2\n1 0.1 0.004 0.2 0.01\n1 0.95 0.5 0.2 0.2\n1 0.5 0.05 0.2 0.2\n"
                     "0 -0.005 0.5 0.1 0.1\n")
    records, report = scan_split([image], nc=2)
    assert report.problems == {} and report.clipped_boxes == 5
    np.testing.assert_allclose(records[0].labels, [[0, 0.9925, 0.5, 0.015, 0.2], [1, 0.1, 0.0045, 0.2, 0.009],
                                                   [1, 0.925, 0.5, 0.15, 0.2], [1, 0.5, 0.075, 0.2, 0.15],
                                                   [0, 0.0225, 0.5, 0.045, 0.1]], atol=1e-6)
    assert "5 boxes clipped" in report.summary()


def test_polygon_rows_become_their_bounding_boxes(one_image):
    # ultralytics' segment labels: class, then x y points; mixed with box rows in one file.
    image, label = one_image
    label.write_text("0 0.1 0.1 0.3 0.1 0.2 0.4\n1 0.5 0.5 0.25 0.25\n1 0.9 0.2 1.005 0.3 0.95 0.6 0.85 0.5\n")
    records, report = scan_split([image], nc=2)
    assert report.problems == {} and report.polygon_boxes == 2 and report.clipped_boxes == 1
    np.testing.assert_allclose(records[0].labels, [[0, 0.2, 0.25, 0.2, 0.3], [1, 0.5, 0.5, 0.25, 0.25],
                                                   [1, 0.925, 0.4, 0.15, 0.4]], atol=1e-6)
    assert "2 polygon rows kept as their bounding boxes" in report.summary()


def test_polygons_overhanging_the_border_are_clipped_as_boxes_are(one_image):
    # ultralytics checks a segment's box (cx, cy, w, h), not its points: these two rows train there.
    image, label = one_image
    label.write_text("0 -0.03 0.2 0.5 0.2 0.5 0.6 -0.03 0.6\n0 0.6 0.2 1.04 0.2 1.04 0.7 0.6 0.7\n")
    records, report = scan_split([image], nc=2)
    assert report.problems == {} and report.polygon_boxes == 2 and report.clipped_boxes == 2
    np.testing.assert_allclose(records[0].labels, [[0, 0.25, 0.4, 0.5, 0.4], [0, 0.8, 0.45, 0.4, 0.5]], atol=1e-6)


def test_examples_are_capped_at_three(one_image):
    image, label = one_image
    label.write_text("".join(f"{5 + index} 0.5 0.5 0.1 0.1\n" for index in range(5)))
    _, report = scan_split([image], nc=2)
    assert report.problems == {"bad_class": 5}
    assert report.examples["bad_class"] == [f"{label}:{line}" for line in (1, 2, 3)]
    assert report.backgrounds == 1  # every row was bad: the image stays, with no objects


def _bad_image_split(tmp_path: Path, helpers) -> tuple[list[Path], dict[str, Path]]:
    images = tmp_path / "images" / "train"
    labels = tmp_path / "labels" / "train"
    good = helpers.write_image(images / "good.jpg", 32, 32, [(8, 8, 24, 24)])
    background = helpers.write_image(images / "background.png", 32, 32)
    labels.mkdir(parents=True)
    (labels / "good.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (labels / "background.txt").write_text("")  # an empty label file is a background too
    corrupt = images / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a JPEG at all")
    truncated_jpeg = helpers.write_image(images / "truncated.jpg", 32, 32, [(8, 8, 24, 24)])
    truncated_jpeg.write_bytes(truncated_jpeg.read_bytes()[:-40])
    truncated_png = helpers.write_image(images / "truncated.png", 32, 32, [(8, 8, 24, 24)])
    truncated_png.write_bytes(truncated_png.read_bytes()[:len(truncated_png.read_bytes()) // 2])
    unreadable = helpers.write_image(images / "unreadable.png", 32, 32)
    (labels / "unreadable.txt").write_bytes(b"\xff\xfe\x00\x81 binary")
    orphan = labels / "orphan.txt"
    orphan.write_text("0 0.5 0.5 0.5 0.5\n")
    # A label whose image exists but is not in this split (splits sharing a folder): no orphan.
    helpers.write_image(images / "in_other_split.jpg", 32, 32)
    (labels / "in_other_split.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    for corrupt_label in (labels / "corrupt.txt", labels / "truncated.txt"):
        corrupt_label.write_text("0 0.5 0.5 0.5 0.5\n")
    missing = images / "missing.jpg"
    (labels / "missing.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    paths = [good, background, corrupt, truncated_jpeg, truncated_png, unreadable, missing]
    return paths, {"missing_image": missing, "corrupt_image": corrupt, "unreadable_label": labels / "unreadable.txt",
                   "orphan_label": orphan, "truncated_jpeg": truncated_jpeg, "truncated_png": truncated_png}


def test_bad_images_are_skipped_and_counted(tmp_path, helpers):
    paths, bad = _bad_image_split(tmp_path, helpers)
    records, report = scan_split(paths, nc=1)
    assert [record.path.name for record in records] == ["good.jpg", "background.png"]
    assert report.problems == {"missing_image": 1, "corrupt_image": 3, "unreadable_label": 1, "orphan_label": 1}
    assert report.examples["missing_image"] == [str(bad["missing_image"])]
    assert report.examples["corrupt_image"] == [str(bad[name]) for name in ("corrupt_image", "truncated_jpeg",
                                                                          "truncated_png")]
    assert report.examples["unreadable_label"] == [str(bad["unreadable_label"])]
    assert report.examples["orphan_label"] == [str(bad["orphan_label"])]
    assert (report.images, report.usable_images, report.objects, report.backgrounds) == (7, 2, 1, 1)


def test_truncated_files_are_really_undecodable(tmp_path, helpers):
    """The scan's verdict agrees with the decoder: the truncated files cannot be decoded."""
    _, bad = _bad_image_split(tmp_path, helpers)
    for name in ("truncated_jpeg", "truncated_png"):
        with pytest.raises(Exception):
            decode_rgb(str(bad[name]))


def test_exif_rotation_swaps_the_recorded_size(tmp_path, helpers):
    path = tmp_path / "images" / "rotated.jpg"
    path.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(path, exif=exif)
    records, _ = scan_split([path], nc=1)
    assert records[0].size == (40, 20)
    assert tuple(decode_rgb(str(path)).shape) == (3, 40, 20)


def test_summary_and_log(one_image, caplog):
    image, label = one_image
    label.write_text(GOOD_ROW + "\n")
    _, clean = scan_split([image], nc=2)
    label.write_text(f"{GOOD_ROW}\n7 0.5 0.5 0.1 0.1\n")
    _, dirty = scan_split([image], nc=2)
    logger = logging.getLogger("test_labels")
    with caplog.at_level(logging.DEBUG, logger="test_labels"):
        clean.log(logger, title="train")
        dirty.log(logger, title="train")
    assert [record.levelno for record in caplog.records] == [logging.INFO, logging.WARNING]
    assert caplog.records[0].getMessage() == "train: 1 images listed, 1 usable (0 background), 1 objects"
    lines = caplog.records[1].getMessage().splitlines()
    assert lines[1:] == ["  1 problems:", f"    bad_class x1: {PROBLEM_KINDS['bad_class']}; e.g. {label}:2"]


def test_report_round_trips_through_plain_data():
    report = DataReport(images=3, usable_images=2, objects=5, backgrounds=1)
    report.add_problem("missing_image", "/x.jpg")
    assert DataReport.from_dict(report.to_dict()) == report


def test_nc_must_be_positive(one_image):
    with pytest.raises(ValueError, match=r"nc must be a positive integer; found 0"):
        scan_split([one_image[0]], nc=0)


# --- cache ---------------------------------------------------------------------------------------


def test_cache_is_reused_without_reading_files(yolo_dataset, monkeypatch):
    images = sorted((yolo_dataset.parent / "images" / "train").iterdir())
    cache = yolo_dataset.parent / "labels" / "train.yolo_slim.cache"
    records, report = scan_split(images, nc=2, cache_path=cache)
    assert cache.is_file() and not report.from_cache
    saved = torch.load(cache, weights_only=True)  # plain data only
    assert saved["paths"] == [str(record.path) for record in records]

    def refuse(*args, **kwargs):
        raise AssertionError("a file was read although the cache matches")

    monkeypatch.setattr(Path, "read_text", refuse)
    monkeypatch.setattr(labels_module.Image, "open", refuse)
    cached_records, cached_report = scan_split(images, nc=2, cache_path=cache)
    assert cached_report.from_cache
    assert cached_report.to_dict() | {"from_cache": False} == report.to_dict()
    assert [(r.path, r.size) for r in cached_records] == [(r.path, r.size) for r in records]
    for cached, fresh in zip(cached_records, records):
        np.testing.assert_array_equal(cached.labels, fresh.labels)


def _images_and_cache(yolo_dataset: Path) -> tuple[list[Path], Path]:
    return sorted((yolo_dataset.parent / "images" / "train").iterdir()), yolo_dataset.parent / "train.cache"


def test_changed_label_file_invalidates_the_cache(yolo_dataset):
    images, cache = _images_and_cache(yolo_dataset)
    scan_split(images, nc=2, cache_path=cache)
    label = yolo_dataset.parent / "labels" / "train" / "img0.txt"
    label.write_text(label.read_text() + "1 0.5 0.5 0.1 0.1\n")
    records, report = scan_split(images, nc=2, cache_path=cache)
    assert not report.from_cache and report.objects == 7
    assert len(records[0].labels) == 2
    assert scan_split(images, nc=2, cache_path=cache)[1].from_cache  # and the new result is cached


def test_new_orphan_and_other_nc_invalidate_the_cache(yolo_dataset):
    images, cache = _images_and_cache(yolo_dataset)
    scan_split(images, nc=2, cache_path=cache)
    _, report = scan_split(images, nc=1, cache_path=cache)
    assert not report.from_cache and report.problems == {"bad_class": 3}
    (yolo_dataset.parent / "labels" / "train" / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    _, report = scan_split(images, nc=1, cache_path=cache)
    assert not report.from_cache and report.problems["orphan_label"] == 1


def test_corrupt_cache_is_rebuilt(yolo_dataset):
    images, cache = _images_and_cache(yolo_dataset)
    cache.write_bytes(b"garbage, perhaps ultralytics' own numpy cache")
    records, report = scan_split(images, nc=2, cache_path=cache)
    assert len(records) == 6 and not report.from_cache
    assert torch.load(cache, weights_only=True)["version"] == labels_module.FORMAT_VERSION


def test_unwritable_cache_location_is_skipped(yolo_dataset, caplog):
    images, _ = _images_and_cache(yolo_dataset)
    blocker = yolo_dataset.parent / "a_file"
    blocker.write_text("")
    with caplog.at_level(logging.DEBUG, logger="yolo_slim.data.labels"):
        records, report = scan_split(images, nc=2, cache_path=blocker / "sub" / "train.cache")
    assert len(records) == 6 and report.objects == 6
    assert "not written" in caplog.text
    assert sorted(os.listdir(yolo_dataset.parent)) == ["a_file", "data.yaml", "images", "labels"]


def test_default_cache_path():
    assert default_cache_path([Path("/d/images/train/a.jpg")], "train") == Path("/d/labels/train.yolo_slim.cache")
    assert default_cache_path([Path("/d/images/all/a.jpg")], "val") == Path("/d/labels/all-val.yolo_slim.cache")
    assert default_cache_path([], "train") is None
    assert default_cache_path([Path("/a.jpg")], "train") is None


def test_images_without_a_label_file_are_backgrounds_counted_and_named(one_image, helpers, caplog):
    image, label = one_image
    label.write_text(GOOD_ROW + "\n")
    unlabelled = helpers.write_image(image.parent / "b.png", 64, 64)
    records, report = scan_split([image, unlabelled], nc=1)
    assert len(records) == 2 and report.backgrounds == 1 and report.problems == {}
    assert report.missing_labels == 1 and report.missing_label_example == str(label.parent / "b.txt")
    assert f"1 images without a label file, taken as background; e.g. {label.parent / 'b.txt'}" in report.summary()
    with caplog.at_level(logging.INFO, logger="yolo_slim.test"):
        report.log(logging.getLogger("yolo_slim.test"))
    assert caplog.records[-1].levelno == logging.INFO  # some images are labelled: backgrounds are plausible
    label.unlink()  # now no image of the split has a label file: labels looked for in the wrong place
    _, report = scan_split([image, unlabelled], nc=1)
    assert report.missing_labels == 2 and report.objects == 0
    with caplog.at_level(logging.INFO, logger="yolo_slim.test"):
        report.log(logging.getLogger("yolo_slim.test"))
    assert caplog.records[-1].levelno == logging.WARNING


def test_a_jpeg_with_data_after_its_end_marker_is_kept(tmp_path, helpers):
    # Phones append a motion clip or maker data after the JPEG's end marker; the image decodes whole.
    path = helpers.write_image(tmp_path / "images" / "trailer.jpg", 32, 24, [(8, 8, 24, 16)])
    path.write_bytes(path.read_bytes() + b"\x00\x01trailing maker data")
    records, report = scan_split([path], nc=1)
    assert report.problems == {} and [record.size for record in records] == [(24, 32)]
    assert decode_rgb(str(path)).shape == (3, 24, 32)


@pytest.mark.parametrize("exif", [b"Exif\x00\x00XX*\x00\x08\x00\x00\x00",  # not a TIFF header
                                  # a valid block whose orientation is 9 (only 1 to 8 exist)
                                  b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01"
                                  b"\x00\x09\x00\x00"])
def test_a_damaged_exif_block_keeps_the_image_unrotated(tmp_path, exif):
    path = tmp_path / "images" / "exif.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(path, exif=exif)
    records, report = scan_split([path], nc=1)
    assert report.problems == {} and records[0].size == (20, 40)


def test_labelimg_classes_file_is_not_an_orphan(one_image):
    image, label = one_image
    label.write_text(GOOD_ROW + "\n")
    (label.parent / "classes.txt").write_text("cat\ndog\n")
    _, report = scan_split([image], nc=1)
    assert report.problems == {}
