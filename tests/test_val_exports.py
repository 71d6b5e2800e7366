"""`val` of an exported file (ONNX, TorchScript): the file's own mAP, equal to its checkpoint's."""

import json
import logging
import re
import shutil

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image
from torchvision.io import read_image

from yolo_slim.cli import config_dir, val
from yolo_slim.cli.errors import UsageError
from yolo_slim.cli.schemas import register_schemas
from yolo_slim.data.synthetic import SyntheticConfig, ensure_synthetic_dataset
from yolo_slim.models import YOLOv5
from yolo_slim.models.export import export_onnx, export_torchscript
from yolo_slim.models.postprocess import NMSConfig, non_max_suppression
from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint


def _val(overrides: list[str], capsys) -> dict:
    """The val command's run on its composed config, in this process; its printed result."""
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        val.run(compose(config_name="val", overrides=[*overrides, "data.workers=0", "trainer.accelerator=cpu"]))
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def _labelled_by(model, root):
    """Generated images labelled with ``model``'s own three best detections inside each image.

    The network is untrained but random, its scores differing from box to box: its own detections rank first and
    it scores high on these labels, where a runtime that read the images otherwise (another scale, channel order
    or size) would not.
    """
    source = ensure_synthetic_dataset(SyntheticConfig(num_train=1, num_val=8, image_size=96), root / "cache")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    images = sorted((source.parent / "images" / "val").iterdir())
    # BatchNorm statistics measured on these images: under a fresh network's initial ones its activations fade
    # on the way to Detect, and every box scores alike.
    for norm in (module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)):
        norm.reset_running_stats()
        norm.momentum = None  # a plain mean over the batches seen
    with torch.no_grad():
        model.train()(torch.cat([read_image(str(image))[None].float() / 255 for image in images]))
    model.eval()
    for image in images:
        pixels = read_image(str(image))[None].float() / 255
        with torch.no_grad():
            found = non_max_suppression(model(pixels), NMSConfig())[0]  # eval: the decoded predictions
        height, width = pixels.shape[-2:]
        inside = (found[:, :2] >= 0).all(1) & (found[:, 2] <= width) & (found[:, 3] <= height)
        rows = [f"{int(c)} {(x1 + x2) / 2 / width} {(y1 + y2) / 2 / height} {(x2 - x1) / width} {(y2 - y1) / height}"
                for x1, y1, x2, y2, _, c in found[inside][:3].tolist()]  # a box overhanging the border is clipped
        shutil.copy(image, root / "images" / image.name)
        (root / "labels" / f"{image.stem}.txt").write_text("\n".join(rows) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images",
                                                    "names": model.names}))
    return root / "data.yaml"


def test_an_exported_file_scores_as_its_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = YOLOv5("yolov5n", nc=4, names=["circle", "rectangle", "triangle", "cross"])
    data = _labelled_by(model, tmp_path)
    files = [write_ultralytics_checkpoint(model, tmp_path / "model.pt", half=False),
             export_onnx(model, tmp_path / "model.onnx", imgsz=96),
             export_torchscript(model, tmp_path / "model.torchscript", imgsz=96)]
    checkpoint = _val([f"ckpt={files[0]}", f"data.path={data}", "data.imgsz=96"], capsys)
    # Its own detections, outranked only by those overhanging the border: about 0.2, where the real labels give 0.
    assert checkpoint["map50"] > 0.1, checkpoint
    for exported in files[1:]:
        result = _val([f"ckpt={exported}", f"data.path={data}"], capsys)
        assert result["imgsz"] == 96  # the export's own size
        # The same network in another runtime: float rounding only.
        assert result["map50"] == pytest.approx(checkpoint["map50"], abs=0.01)
        assert result["map"] == pytest.approx(checkpoint["map"], abs=0.01)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    model = YOLOv5("yolov5n", nc=2, names=["cat", "dog"])
    return {"square": export_onnx(model, folder / "square.onnx", imgsz=64),
            "wide": export_onnx(model, folder / "wide.onnx", imgsz=(64, 96))}


def _four_class_data(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "a.png")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [a, b, c, d]\n")
    return tmp_path / "data.yaml"


@pytest.mark.parametrize("file,settings,found", [
    ("square", [], "the exported file carries no data location: give data.path"),
    ("square", ["data.imgsz=128", "data.path=DATA"], "data.imgsz=128, but ckpt='SQUARE' runs only at the size it was "
                                                     "exported at, 64"),
    ("wide", ["data.path=DATA"], "ckpt='WIDE' was exported at 64x96; val letterboxes images to a square"),
    ("square", ["data.path=DATA"], "has 4 classes but the exported file's model has 2"),
    ("square", ["data.imgsz=65"], "data.imgsz must be a positive multiple of 32, found 65"),
])
def test_an_export_that_cannot_be_scored_on_the_data_is_named(exports, tmp_path, capsys, file, settings, found):
    replace = {"DATA": str(_four_class_data(tmp_path)), "SQUARE": str(exports["square"]), "WIDE": str(exports["wide"])}
    settings = [re.sub("|".join(replace), lambda match: replace[match.group()], s) for s in settings]
    found = re.sub("|".join(replace), lambda match: replace[match.group()], found)
    with pytest.raises(UsageError, match=re.escape(found)):
        _val([f"ckpt={exports[file]}", *settings], capsys)


def test_classes_named_otherwise_than_the_models_are_named(tmp_path, caplog):
    from omegaconf import OmegaConf

    from yolo_slim.cli.settings import evaluation_datamodule

    settings = OmegaConf.create({"path": str(_four_class_data(tmp_path)), "imgsz": None, "batch_size": 2,
                                 "workers": 0, "cache_dir": None})
    for names, warned in ((["a", "b", "c", "d"], False), (["cat", "dog", "bird", "fish"], True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolo_slim.cli.settings"):
            evaluation_datamodule(settings, None, data=None, imgsz=64, stride=32, names=names)
        named = "names its classes ['a', 'b', 'c', 'd'], the checkpoint's model ['cat', 'dog', 'bird', 'fish']: " \
                "they are scored by index"
        assert (named in caplog.text) is warned, caplog.text
