"""`predict` through the CLI, as a subprocess: a folder with a corrupt image, labels, json, compare=, bad settings."""

import json
import shutil
from pathlib import Path

import pytest
from cli_support import run_cli, run_cli_in_process
from PIL import Image


@pytest.fixture()
def images(tmp_path, trained_run):
    """Two images of the run's own validation set (one with an upper-case suffix, one resized to 120 x 72, not
    square) and a corrupt file."""
    data = json.loads((trained_run / "summary.json").read_text())["data"]
    source = sorted((Path(data).parent / "images" / "val").glob("*"))[:2]
    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(source[0]).save(folder / "camera.JPG", format="JPEG")  # the upper-case suffix cameras write
    Image.open(source[1]).resize((120, 72)).save(folder / "wide.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return folder


@pytest.mark.slow
def test_predict_writes_pictures_labels_and_json_and_skips_a_corrupt_image(trained_run, images, tmp_path,
                                                                           cli_environment):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    other = tmp_path / "other" / "best.ckpt"  # a second model of the same file name
    other.parent.mkdir()
    shutil.copy(checkpoint, other)
    (images / "sub").mkdir()
    shutil.copy(images / "wide.png", images / "sub" / "wide.png")  # the same name in another folder
    out = tmp_path / "predict"
    # No imgsz=: the size the checkpoint was trained at, 96 (not ultralytics' 640), as val and prune take it.
    result = run_cli(["predict", f"ckpt={checkpoint}", f"source={images}", "conf=0.001",
                      f"compare={other}", f"hydra.run.dir={out}"], cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    for label in ("checkpoints/best.ckpt (torch)", "other/best.ckpt (torch)"):  # told apart by their folders
        assert label in result.stdout and "per image at 1x3x96x96" in result.stdout
    assert "skipped 1 unreadable image(s)" in result.stdout and "broken.jpg" in result.stdout
    assert "ms inference" in result.stdout
    pictures = sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".png"))
    assert pictures == ["camera.JPG", "wide.png", "wide_2.png"]  # each drawn under its own suffix, case kept
    assert Image.open(out / "camera.JPG").format == "JPEG"
    assert "1 image(s) share a name with another in another folder and are written as wide_2" in result.stdout
    assert Image.open(out / "wide.png").size == (120, 72)  # drawn on the original image
    assert len(list((out / "compare").glob("*.jpg"))) == 3
    assert Image.open(out / "compare" / "wide.jpg").size[0] == 2 * 120 + 4  # two pictures side by side
    rows = json.loads((out / "predictions.json").read_text())
    wide = [row for row in rows if row["image_id"] == "wide"]
    assert wide, "the tiny model finds something at conf 0.001"
    for row in wide:  # COCO [x, y, w, h] in the original 120 x 72 pixels
        x, y, w, h = row["bbox"]
        assert 0 <= x <= x + w <= 120 + 1e-3 and 0 <= y <= y + h <= 72 + 1e-3 and 0 < row["score"] <= 1
    labels = (out / "labels" / "wide.txt").read_text().splitlines()
    assert len(labels) == len(wide)
    assert all(0 <= float(v) <= 1 for line in labels for v in line.split()[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 3 and list(summary["skipped"]) == [str(images / "broken.jpg")]
    assert {summary["sources"]["wide"], summary["sources"]["wide_2"]} == {str(images / "wide.png"),
                                                                          str(images / "sub" / "wide.png")}
    assert summary["imgsz"] == [96, 96]  # height, width


@pytest.mark.slow
def test_bad_source_and_bad_format_name_the_setting(trained_run, tmp_path, cli_environment, capfd):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    missing = run_cli_in_process(["predict", f"ckpt={checkpoint}", f"source={tmp_path / 'none'}",
                                  f"hydra.run.dir={tmp_path / 'out'}"], cli_environment, capfd)
    assert missing.returncode != 0 and f"source='{tmp_path / 'none'}' does not exist" in missing.stderr
    (tmp_path / "x.jpg").write_bytes(b"")
    no_model = run_cli_in_process(["predict", f"ckpt={tmp_path / 'no.ckpt'}", f"source={tmp_path / 'x.jpg'}",
                                   f"hydra.run.dir={tmp_path / 'out'}"], cli_environment, capfd)
    assert no_model.returncode != 0 and f"ckpt='{tmp_path / 'no.ckpt'}' does not exist" in no_model.stderr
    itself = run_cli(["predict", f"ckpt={checkpoint}", f"source={tmp_path / 'x.jpg'}", f"compare={checkpoint}",
                      f"hydra.run.dir={tmp_path / 'out'}"], cli_environment)
    assert itself.returncode != 0 and f"compare='{checkpoint}' is the file ckpt= already names" in itself.stderr
    bad_format = run_cli_in_process(["export", f"ckpt={checkpoint}", "format=tflite"], cli_environment, capfd)
    assert "format must be one of onnx, ultralytics, torchscript, found 'tflite'" in bad_format.stderr


def test_compare_with_other_classes_is_warned_about_with_the_first_difference(caplog):
    from yolo_slim.cli.predict import _warn_if_other_classes
    from yolo_slim.predict import Detector

    def detector(names: list[str]) -> Detector:
        return Detector(Path("m.pt"), "torch", names, 32, None, lambda images: images)

    with caplog.at_level("WARNING", logger="yolo_slim.cli.predict"):
        _warn_if_other_classes(detector(["person", "car"]), detector(["person", "car"]))
        _warn_if_other_classes(detector(["person", "car"]), detector([]))  # a file without names: nothing to say
        assert not caplog.records
        _warn_if_other_classes(detector(["person", "car"]), detector(["person", "bus"]))
        _warn_if_other_classes(detector(["person"]), detector(["person", "car"]))
    first, second = (record.getMessage() for record in caplog.records)
    assert "2 and 2 classes; class 1 is 'car' in ckpt= and 'bus' in compare=" in first
    assert "1 and 2 classes; class 1 is missing in ckpt= and 'car' in compare=" in second
