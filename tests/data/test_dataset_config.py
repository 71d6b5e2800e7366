"""load_dataset_config: the data.yaml forms ultralytics accepts, and every fatal problem named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from yolo_slim.data import DataConfigError, load_dataset_config


def _write_yaml(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content))
    return path


def test_folder_splits_are_listed_sorted(yolo_dataset, helpers):
    config = load_dataset_config(yolo_dataset)
    root = yolo_dataset.parent
    assert config.root == root
    assert config.yaml_path == yolo_dataset
    assert config.names == ["square", "box"] and config.nc == 2
    assert set(config.splits) == {"train", "val"}
    assert config.splits["train"] == sorted(root / "images" / "train" / name for name in helpers.TRAIN_IMAGES)
    assert [path.name for path in config.splits["val"]] == ["v0.jpg", "v1.png", "v2.jpg"]


def test_relative_yaml_path_is_made_absolute(yolo_dataset, monkeypatch):
    monkeypatch.chdir(yolo_dataset.parent.parent)
    config = load_dataset_config(Path(yolo_dataset.parent.name) / "data.yaml")
    assert config.yaml_path.is_absolute() and config.root == yolo_dataset.parent


def test_folder_search_is_recursive_and_case_insensitive(tmp_path, helpers):
    helpers.write_image(tmp_path / "images" / "train" / "a" / "x.JPG", 8, 8)
    helpers.write_image(tmp_path / "images" / "train" / "b" / "deep" / "y.Png", 8, 8)
    helpers.write_image(tmp_path / "images" / "train" / "z.bmp", 8, 8)
    (tmp_path / "images" / "train" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "train" / "anim.gif").write_bytes(b"GIF89a")
    data_yaml = _write_yaml(tmp_path / "data.yaml", {"train": "images/train", "val": "images/train", "names": ["a"]})
    found = load_dataset_config(data_yaml).splits["train"]
    assert [path.relative_to(tmp_path / "images" / "train").as_posix() for path in found] == [
        "a/x.JPG", "b/deep/y.Png", "z.bmp"]


@pytest.mark.parametrize("path_value", ["relative", "absolute", "missing"])
def test_root_from_path_key(tmp_path, helpers, path_value):
    root = tmp_path / "data" / "set"
    helpers.write_image(root / "images" / "a.jpg", 8, 8)
    content = {"train": "images", "val": "images", "names": {0: "a"}}
    if path_value == "relative":
        yaml_path, content["path"] = tmp_path / "configs" / "data.yaml", "../data/set"
    elif path_value == "absolute":
        yaml_path, content["path"] = tmp_path / "elsewhere" / "data.yaml", str(root)
    else:
        yaml_path = root / "data.yaml"
    config = load_dataset_config(_write_yaml(yaml_path, content))
    assert config.root == root
    assert config.splits["train"] == [root / "images" / "a.jpg"]


def test_txt_list_and_lists_of_sources(tmp_path, helpers, caplog):
    for name in ("a.jpg", "b.jpg", "c.png"):
        helpers.write_image(tmp_path / "images" / name, 8, 8)
    helpers.write_image(tmp_path / "extra" / "images" / "d.jpg", 8, 8)
    lists = tmp_path / "lists"
    lists.mkdir()
    # './' is relative to the list's folder (ultralytics), other relative entries to the root.
    (lists / "train.txt").write_text(
        f"./../images/a.jpg\nimages/b.jpg\n{tmp_path / 'images' / 'c.png'}\n\nimages/readme.md\n")
    data_yaml = _write_yaml(tmp_path / "data.yaml", {
        "train": ["lists/train.txt", "extra/images", "images"],  # b, c, a listed twice: de-duplicated
        "val": "lists/train.txt", "test": "extra/images", "names": ["a"]})
    with caplog.at_level(logging.WARNING):
        config = load_dataset_config(data_yaml)
    assert config.splits["train"] == sorted([tmp_path / "extra" / "images" / "d.jpg",
                                              *(tmp_path / "images" / name for name in ("a.jpg", "b.jpg", "c.png"))])
    assert config.splits["val"] == [tmp_path / "images" / name for name in ("a.jpg", "b.jpg", "c.png")]
    assert config.splits["test"] == [tmp_path / "extra" / "images" / "d.jpg"]
    assert "skipped 1 entries without an image suffix" in caplog.text


def test_txt_list_keeps_missing_images_for_the_scan_to_count(tmp_path, helpers):
    helpers.write_image(tmp_path / "images" / "a.jpg", 8, 8)
    (tmp_path / "train.txt").write_text("./images/a.jpg\n./images/gone.jpg\n", encoding="utf-8-sig")  # BOM first
    config = load_dataset_config(_write_yaml(tmp_path / "data.yaml",
                                             {"train": "train.txt", "val": "train.txt", "names": ["a"]}))
    assert config.splits["train"] == [tmp_path / "images" / "a.jpg", tmp_path / "images" / "gone.jpg"]


def test_names_dict_and_matching_nc(yolo_dataset):
    content = yaml.safe_load(yolo_dataset.read_text())
    content.update(names={1: "box", 0: "square"}, nc=2, test=None)
    _write_yaml(yolo_dataset, content)
    config = load_dataset_config(yolo_dataset)
    assert config.names == ["square", "box"]
    assert "test" not in config.splits


_DELETE = object()  # a value of _fatal's changes: remove the key


def _fatal(yolo_dataset: Path, **changes: object) -> Path:
    content = yaml.safe_load(yolo_dataset.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            del content[key]
        else:
            content[key] = value
    return _write_yaml(yolo_dataset, content)


@pytest.mark.parametrize("changes, message", [
    ({"train": _DELETE}, r"lacks train; required keys: train, val, names"),
    ({"val": _DELETE, "names": _DELETE}, r"lacks val, names"),
    ({"names": []}, r"lacks names"),
    ({"names": {0: "a", 2: "c"}}, r"'names' dict ids must be contiguous 0..1; found \[0, 2\]"),
    ({"names": {"zero": "a"}}, r"'names' dict keys must be integer class ids; found \['zero'\]"),
    ({"names": "square"}, r"'names' must be a dict \{id: name\} or a list of names; found str"),
    ({"nc": 3}, r"'nc' must equal the number of names \(2\); found nc=3"),
    ({"nc": "2"}, r"'nc' must equal the number of names \(2\); found nc='2'"),
    ({"val": "images/nowhere"}, r"split 'val' entry 'images/nowhere' \(resolved to .*nowhere'\) does not exist"),
    ({"train": ["images/train", "nothing.txt"]}, r"split 'train' entry 'nothing.txt' .* does not exist"),
    ({"val": "data.yaml"}, r"split 'val' entry 'data.yaml' .* is not a folder or a .txt list"),
    ({"val": 5}, r"split 'val' entries must be folder or .txt paths; found 5"),
    ({"path": 5}, r"'path' must be a folder path; found 5"),
])
def test_fatal_yaml_problems(yolo_dataset, changes, message):
    data_yaml = _fatal(yolo_dataset, **changes)
    with pytest.raises(DataConfigError, match=message) as error:
        load_dataset_config(data_yaml)
    assert str(data_yaml) in str(error.value)


def test_split_without_images(yolo_dataset):
    empty = yolo_dataset.parent / "images" / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    (yolo_dataset.parent / "empty.txt").write_text("\n")
    for value in ("images/empty", "empty.txt"):
        with pytest.raises(DataConfigError, match=rf"split 'val' \('{value}'\) holds no images with suffix .*\.jpg"):
            load_dataset_config(_fatal(yolo_dataset, val=value))


def test_missing_file(tmp_path):
    with pytest.raises(DataConfigError, match=r"data.yaml '.*absent.yaml' does not exist"):
        load_dataset_config(tmp_path / "absent.yaml")


def test_a_folder_is_named_as_one_with_its_yaml_files(tmp_path):
    (tmp_path / "dataset" / "images").mkdir(parents=True)
    with pytest.raises(DataConfigError, match=r"dataset' is a folder; give the data yaml file \(the yaml that"):
        load_dataset_config(tmp_path / "dataset")
    (tmp_path / "dataset" / "coco128.yaml").write_text("train: images\n")
    with pytest.raises(DataConfigError, match=r"is a folder; give the data yaml file \(it holds coco128.yaml\)"):
        load_dataset_config(tmp_path / "dataset")


@pytest.mark.parametrize("text, message", [
    ("- train\n- val\n", r"must hold a mapping with keys train, val, names; found list"),
    ("", r"must hold a mapping .*; found NoneType"),
    ("train: [unclosed\n", r"cannot be read as yaml"),
])
def test_not_a_mapping(tmp_path, text, message):
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(text)
    with pytest.raises(DataConfigError, match=message):
        load_dataset_config(data_yaml)


def test_data_config_error_is_a_value_error():
    assert issubclass(DataConfigError, ValueError)


def test_a_test_split_that_points_to_nothing_is_left_out(yolo_dataset, caplog):
    # Exports often name a test split they do not include; only train and val are required.
    with caplog.at_level(logging.WARNING, logger="yolo_slim.data.dataset_config"):
        config = load_dataset_config(_fatal(yolo_dataset, test="../test/images"))
    assert set(config.splits) == {"train", "val"}
    assert "split 'test' entry '../test/images'" in caplog.text and "the test split is left out" in caplog.text


def test_roboflow_layout_finds_parent_relative_splits_beside_the_yaml(tmp_path, helpers):
    # Roboflow's export: data.yaml beside train/ valid/ test/, entries written as ../train/images.
    for split in ("train", "valid", "test"):
        helpers.write_image(tmp_path / "export" / split / "images" / f"{split}.jpg", 32, 32)
    data_yaml = _write_yaml(tmp_path / "export" / "data.yaml", {
        "train": "../train/images", "val": "../valid/images", "test": "../test/images", "nc": 1, "names": ["a"]})
    config = load_dataset_config(data_yaml)
    assert {split: [path.name for path in paths] for split, paths in config.splits.items()} == {
        "train": ["train.jpg"], "val": ["valid.jpg"], "test": ["test.jpg"]}
    assert config.splits["train"][0] == tmp_path / "export" / "train" / "images" / "train.jpg"


def test_ultralytics_own_yaml_finds_its_dataset_from_their_checkout(tmp_path, helpers, monkeypatch):
    # Their data/coco128.yaml says `path: ../datasets/coco128`, meaning ../datasets beside their checkout.
    helpers.write_image(tmp_path / "datasets" / "coco128" / "images" / "train2017" / "a.jpg", 32, 32)
    data_yaml = _write_yaml(tmp_path / "yolov5" / "data" / "coco128.yaml", {
        "path": "../datasets/coco128", "train": "images/train2017", "val": "images/train2017", "names": ["a"]})
    monkeypatch.chdir(tmp_path / "yolov5" / "data")  # the yaml's own folder: nothing at ../datasets from here
    with pytest.raises(DataConfigError, match="does not exist"):  # from elsewhere: beside the yaml, as documented
        load_dataset_config(data_yaml)
    monkeypatch.chdir(tmp_path / "yolov5")  # where their commands run
    assert load_dataset_config(data_yaml).root == tmp_path / "datasets" / "coco128"
    beside = tmp_path / "yolov5" / "datasets" / "coco128" / "images" / "train2017"
    helpers.write_image(beside / "b.jpg", 32, 32)  # a folder beside the yaml wins: moving a dataset keeps working
    assert load_dataset_config(data_yaml).splits["train"] == [beside / "b.jpg"]


def test_hidden_files_are_not_images(tmp_path, helpers):
    helpers.write_image(tmp_path / "images" / "a.jpg", 32, 32)
    (tmp_path / "images" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    data_yaml = _write_yaml(tmp_path / "data.yaml", {"train": "images", "val": "images", "names": ["a"]})
    assert [path.name for path in load_dataset_config(data_yaml).splits["train"]] == ["a.jpg"]
