"""The built-in synthetic dataset: layout, label format, determinism, caching, config errors, tight boxes."""

import concurrent.futures
import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from yolo_slim.data import synthetic
from yolo_slim.data.synthetic import SYNTHETIC_NAMES, SyntheticConfig, default_cache_dir, ensure_synthetic_dataset

SMALL = SyntheticConfig(num_train=12, num_val=4, image_size=96)
LABEL_ROW = re.compile(r"^\d+ \d\.\d{6} \d\.\d{6} \d\.\d{6} \d\.\d{6}$")


def _label_texts(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text() for path in sorted(root.glob("labels/*/*.txt"))}


def _image_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.glob("images/*/*.png"))}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_dataset(SMALL, tmp_path_factory.mktemp("cache"))


def test_layout_and_data_yaml(small_dataset):
    root = small_dataset.parent
    assert small_dataset.name == "data.yaml"
    assert re.fullmatch(r"synthetic-[0-9a-f]{12}", root.name)
    data = yaml.safe_load(small_dataset.read_text())
    assert data["path"] == str(root)
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert data["names"] == dict(enumerate(SYNTHETIC_NAMES))
    for split, count in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        images = sorted(path.stem for path in (root / "images" / split).iterdir())
        labels = sorted(path.stem for path in (root / "labels" / split).iterdir())
        assert images == labels == [f"{index:06d}" for index in range(count)]
    with Image.open(root / "images" / "train" / "000000.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (SMALL.image_size, SMALL.image_size))
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 12, "val": 4}
    assert manifest["config"]["seed"] == SMALL.seed


def test_label_rows_are_normalised_boxes(small_dataset):
    rows = [row for text in _label_texts(small_dataset.parent).values() for row in text.splitlines()]
    assert len(rows) >= SMALL.num_train  # about 4.5 objects per image on average
    for row in rows:
        assert LABEL_ROW.match(row), row
        class_id, centre_x, centre_y, width, height = (float(value) for value in row.split())
        assert int(class_id) in range(len(SYNTHETIC_NAMES))
        assert width > 0 and height > 0
        # The box, not only its centre, lies in the image (with the rounding of six decimals).
        assert -1e-6 <= centre_x - width / 2 and centre_x + width / 2 <= 1 + 1e-6
        assert -1e-6 <= centre_y - height / 2 and centre_y + height / 2 <= 1 + 1e-6


def test_default_config_has_all_classes_and_some_empty_images():
    config = SyntheticConfig()
    class_ids, object_counts = [], []
    for index in range(60):
        _, objects = synthetic._generate_image(config, "train", index)
        class_ids += [scene_object.class_id for scene_object in objects]
        object_counts.append(len(objects))
    assert set(class_ids) == set(range(len(SYNTHETIC_NAMES)))
    assert max(object_counts) <= config.max_objects
    assert 3 <= np.mean(object_counts) <= 6
    config_with_backgrounds = SyntheticConfig(background_fraction=0.5)
    empty = sum(not synthetic._generate_image(config_with_backgrounds, "val", index)[1] for index in range(40))
    assert 10 <= empty <= 30


def test_same_config_gives_identical_files(small_dataset, tmp_path):
    again = ensure_synthetic_dataset(SMALL, tmp_path)
    assert again != small_dataset
    assert _label_texts(again.parent) == _label_texts(small_dataset.parent)
    assert _image_bytes(again.parent) == _image_bytes(small_dataset.parent)


@pytest.mark.parametrize("threads", [1, 5])
def test_files_do_not_depend_on_how_many_threads_draw_them(small_dataset, tmp_path, monkeypatch, threads):
    monkeypatch.setattr(synthetic, "_available_cpus", lambda: threads)
    again = ensure_synthetic_dataset(SMALL, tmp_path)
    assert _label_texts(again.parent) == _label_texts(small_dataset.parent)
    assert _image_bytes(again.parent) == _image_bytes(small_dataset.parent)


def test_different_seeds_give_different_data(small_dataset, tmp_path):
    other = ensure_synthetic_dataset(SyntheticConfig(num_train=12, num_val=4, image_size=96, seed=1), tmp_path)
    assert other.parent.name != small_dataset.parent.name
    assert _label_texts(other.parent) != _label_texts(small_dataset.parent)
    assert _image_bytes(other.parent)["images/train/000000.png"] != _image_bytes(small_dataset.parent)[
        "images/train/000000.png"]


def test_images_do_not_depend_on_the_size_of_the_set(small_dataset, tmp_path):
    larger = ensure_synthetic_dataset(SyntheticConfig(num_train=14, num_val=5, image_size=96), tmp_path)
    assert larger.parent.name != small_dataset.parent.name
    assert _label_texts(larger.parent)["labels/val/000003.txt"] == _label_texts(small_dataset.parent)[
        "labels/val/000003.txt"]


def test_second_call_reuses_the_folder(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="yolo_slim.data.synthetic"):
        first = ensure_synthetic_dataset(SMALL, tmp_path)
    assert len(caplog.records) == 1
    assert str(first.parent) in caplog.records[0].getMessage()
    assert "12 train + 4 val" in caplog.records[0].getMessage()
    modified = {path: path.stat().st_mtime_ns for path in first.parent.rglob("*")}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolo_slim.data.synthetic"):
        second = ensure_synthetic_dataset(SMALL, tmp_path)
    assert second == first
    assert caplog.records == []
    assert {path: path.stat().st_mtime_ns for path in first.parent.rglob("*")} == modified
    assert sorted(path.name for path in tmp_path.iterdir()) == [first.parent.name]  # no staging left behind


@pytest.mark.parametrize("damage", ["remove_manifest", "remove_image", "edit_manifest"])
def test_incomplete_folder_is_regenerated(tmp_path, damage):
    data_yaml = ensure_synthetic_dataset(SMALL, tmp_path)
    root = data_yaml.parent
    labels = _label_texts(root)
    if damage == "remove_manifest":
        (root / "manifest.json").unlink()
        (root / "leftover.txt").write_text("from a crashed run")
    elif damage == "remove_image":
        (root / "images" / "val" / "000002.png").unlink()
    else:
        (root / "manifest.json").write_text(json.dumps({"format_version": 0}))
    assert ensure_synthetic_dataset(SMALL, tmp_path) == data_yaml
    assert (root / "manifest.json").is_file()
    assert (root / "images" / "val" / "000002.png").is_file()
    assert not (root / "leftover.txt").exists()
    assert _label_texts(root) == labels
    assert sorted(path.name for path in tmp_path.iterdir()) == [root.name]


def test_concurrent_calls_agree(tmp_path):
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(lambda _: ensure_synthetic_dataset(SMALL, tmp_path), range(4)))
    assert len(set(paths)) == 1
    assert synthetic._is_complete(paths[0].parent, SMALL)
    assert sorted(path.name for path in tmp_path.iterdir()) == [paths[0].parent.name]


def test_losing_the_rename_race_keeps_the_winners_folder(small_dataset, tmp_path):
    root = small_dataset.parent
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "marker.txt").write_text("the loser's copy")
    synthetic._publish(staging, root, SMALL)
    assert not (root / "marker.txt").exists()
    assert synthetic._is_complete(root, SMALL)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("YOLO_SLIM_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("YOLO_SLIM_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "yolo_slim"


def test_import_creates_nothing(tmp_path):
    environment = {**os.environ, "HOME": str(tmp_path), "YOLO_SLIM_CACHE": str(tmp_path / "cache")}
    # Loaded from its file so that the package's own imports (torch) do not slow the test down.
    load = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('synthetic', sys.argv[1]); "
            "module = sys.modules[spec.name] = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
            "assert module.SYNTHETIC_NAMES")
    subprocess.run([sys.executable, "-c", load, synthetic.__file__], env=environment, check=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field,value,match", [
    ("num_train", 0, r"num_train must be an integer in \[1, 999999\], got 0"),
    ("num_val", -3, r"num_val .* got -3"),
    ("image_size", 16, r"image_size must be an integer in \[32, 4096\], got 16"),
    ("seed", -1, r"seed .* got -1"),
    ("max_objects", 0, r"max_objects .* got 0"),
    ("min_objects", 9, r"min_objects must be an integer in \[0, 8\], got 9"),
    ("background_fraction", 1.5, r"background_fraction must be a number in \[0.0, 1.0\], got 1.5"),
    ("max_object_size_fraction", 1.2, r"max_object_size_fraction .* got 1.2"),
    ("min_object_size_fraction", 0.5, r"min_object_size_fraction must be a number in \[0.0, 0.44\], got 0.5"),
    ("min_object_size_fraction", 0.01, r"min_object_size_fraction \* image_size must be at least 4 px"),
    ("max_occlusion", 1.0, r"max_occlusion .* got 1.0"),
    ("random_colour_fraction", -0.1, r"random_colour_fraction .* got -0.1"),
    ("max_distractors", -1, r"max_distractors .* got -1"),
    ("max_lines", -1, r"max_lines .* got -1"),
    ("max_noise_std", math.nan, r"max_noise_std .* got nan"),
])
def test_bad_config_values_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("num_train", 12.0), ("seed", True), ("max_occlusion", "0.5")])
def test_bad_config_types_are_rejected(field, value):
    with pytest.raises(TypeError, match=rf"SyntheticConfig\.{field} must be .* got {re.escape(repr(value))} of type"):
        SyntheticConfig(**{field: value})


def test_box_of_rotated_rectangle_is_the_extent_of_its_corners():
    angle = math.radians(30)
    half_width, half_height, centre = 20.0, 10.0, np.array([50.0, 40.0])
    corners = np.array([[-half_width, -half_height], [half_width, -half_height],
                        [half_width, half_height], [-half_width, half_height]])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    polygon = centre + corners @ rotation.T
    # Half extents of a rotated rectangle: w cos + h sin and w sin + h cos.
    extent_x = half_width * math.cos(angle) + half_height * math.sin(angle)
    extent_y = half_width * math.sin(angle) + half_height * math.cos(angle)
    box = synthetic._polygon_box(polygon, image_size=160)
    assert box == pytest.approx((50 - extent_x, 40 - extent_y, 50 + extent_x, 40 + extent_y))


def test_box_of_a_shape_leaving_the_image_is_the_box_of_its_visible_part():
    # A diamond centred at (165, 40) with half-diagonal 20, cut at x = 160 where it spans y 25..55:
    # clipping its whole box would wrongly keep y 20..60.
    diamond = np.array([[185.0, 40.0], [165.0, 60.0], [145.0, 40.0], [165.0, 20.0]])
    assert synthetic._polygon_box(diamond, image_size=160) == pytest.approx((145, 25, 160, 55))
    # A cross reaching over the top-left corner: the concave outline clips exactly too.
    cross = np.array([[-10, -2], [-2, -2], [-2, -10], [2, -10], [2, -2], [10, -2],
                      [10, 2], [2, 2], [2, 10], [-2, 10], [-2, 2], [-10, 2]], dtype=float)
    assert synthetic._polygon_box(cross, image_size=160) == pytest.approx((0, 0, 10, 10))
    assert synthetic._polygon_box(diamond + 100.0, image_size=160) == (0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("class_id", range(len(SYNTHETIC_NAMES)))
def test_label_box_matches_the_drawn_pixels(class_id):
    """Sampled shapes drawn white on black through the real drawing path fill their label box.

    Compared on the supersampled canvas, whose box filter is the image, so that offsets of a
    fraction of an image pixel show: edges may differ by the rasteriser's half subpixel plus rounding.
    """
    config = SyntheticConfig(image_size=96)
    supersample = synthetic._SUPERSAMPLE
    rng = np.random.Generator(np.random.PCG64(class_id))
    for _ in range(20):
        polygon = synthetic._sample_polygon(rng, class_id, config)  # some run off the image
        canvas = Image.new("L", (96 * supersample,) * 2)
        synthetic._draw_polygon(ImageDraw.Draw(canvas), polygon, 255)
        rows, columns = np.nonzero(np.asarray(canvas))
        pixel_box = np.array([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]) / supersample
        label_box = synthetic._polygon_box(polygon, 96)
        assert np.abs(pixel_box - label_box).max() <= 0.35, (pixel_box, label_box)


@pytest.mark.parametrize("index", range(4))
def test_generated_object_lies_in_its_label_box(index):
    """End to end on a noise-free single-object image: pixels of the object's colour fill its label box."""
    config = SyntheticConfig(image_size=96, min_objects=1, max_objects=1, background_fraction=0.0,
                             max_distractors=0, max_lines=0, max_noise_std=0.0)
    image, (scene_object,) = synthetic._generate_image(config, "train", index)
    rows, columns = np.nonzero(np.all(np.asarray(image) == scene_object.colour, axis=-1))
    x_min, y_min, x_max, y_max = synthetic._polygon_box(scene_object.polygon, 96)
    assert x_min <= columns.min() and columns.max() + 1 <= x_max
    assert y_min <= rows.min() and rows.max() + 1 <= y_max
    # Fully covered pixels reach to within 3 px of every side (sharp corners are partly covered only).
    assert columns.min() - x_min <= 3 and x_max - columns.max() - 1 <= 3
    assert rows.min() - y_min <= 3 and y_max - rows.max() - 1 <= 3
