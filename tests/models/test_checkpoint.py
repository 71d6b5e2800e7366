"""load_yolov5: ultralytics-layout pickles read without their code, hostile pickles refused."""

import re
import sys
import types

import numpy as np
import pytest
import torch
from model_support import RunsCommand
from torch import nn

from yolo_slim.models import CheckpointFormatError, UnsafeCheckpointError, YOLOv5, load_model_yaml, load_yolov5
from yolo_slim.models import blocks
from yolo_slim.models.checkpoint import check_archive
from yolo_slim.models.detect import Detect

# ultralytics class name for each of our block classes.
_ULTRALYTICS_NAMES = {blocks.Conv: "Conv", blocks.Focus: "Focus", blocks.Bottleneck: "Bottleneck",
                      blocks.C3: "C3", blocks.SPP: "SPP", blocks.SPPF: "SPPF", blocks.Concat: "Concat",
                      Detect: "Detect"}


class _FakeUltralytics:
    """Puts ``<package>.yolo`` / ``<package>.common`` modules with ultralytics' class names in sys.modules.

    The classes subclass ours, so pickling a model re-classed with them writes exactly the global
    names an ultralytics checkpoint holds (``models.common.C3`` ...). They are removed again before
    loading, so the loader cannot lean on them.
    """

    def __init__(self, package: str) -> None:
        self.package = package
        self.modules = {package: types.ModuleType(package), f"{package}.yolo": types.ModuleType(f"{package}.yolo"),
                        f"{package}.common": types.ModuleType(f"{package}.common")}
        self.classes = {}
        for ours, name in _ULTRALYTICS_NAMES.items():
            home = f"{package}.yolo" if name == "Detect" else f"{package}.common"
            fake = type(name, (ours,), {"__module__": home})
            setattr(self.modules[home], name, fake)
            self.classes[ours] = fake
        self.detection_model = type("DetectionModel", (nn.Module,), {"__module__": f"{package}.yolo"})
        self.modules[f"{package}.yolo"].DetectionModel = self.detection_model
        # The package itself, so that pickle can import "models.yolo" when checking the class.
        if "." in package:
            parent = package.split(".")[0]
            self.modules[parent] = types.ModuleType(parent)
            setattr(self.modules[parent], package.split(".")[1], self.modules[package])
        self.modules[package].yolo = self.modules[f"{package}.yolo"]
        self.modules[package].common = self.modules[f"{package}.common"]

    def pickled_model(self, model: YOLOv5, yaml_dict: dict, names: dict, v5_anchor_grid: bool) -> nn.Module:
        """An object laid out as ultralytics' DetectionModel, holding ``model``'s (re-classed) layers."""
        layers = model.model
        for module in layers.modules():
            if type(module) in self.classes:
                module.__class__ = self.classes[type(module)]
        if v5_anchor_grid:  # v5.0's Detect kept this persistent buffer
            detect = layers[-1]
            detect.register_buffer("anchor_grid", (detect.anchors * detect.stride.view(-1, 1, 1)).view(3, 1, -1, 1, 1, 2))
        wrapper = self.detection_model()
        wrapper.model = nn.Sequential(*layers)
        wrapper.yaml, wrapper.names, wrapper.stride = yaml_dict, names, model.stride.clone()
        return wrapper

    def __enter__(self):
        sys.modules.update(self.modules)
        return self

    def __exit__(self, *exc):
        for name in self.modules:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("package,config,key", [
    ("models", "yolov5n-v5", "model"),        # v5.0 release file: Focus, SPP, anchor_grid buffer
    ("models", "yolov5n", "model"),           # v6/v7 release file
    ("yolov5.models", "yolov5n", "ema"),      # saved from the PyPI package, training checkpoint
])
def test_round_trip_of_an_ultralytics_layout_checkpoint(tmp_path, package, config, key):
    torch.manual_seed(0)
    original = YOLOv5(config, nc=3).eval()
    image = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        expected = YOLOv5.from_spec(original.spec).eval()
    expected.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                              for k, v in original.state_dict().items()})
    yaml_dict = load_model_yaml(config) | {"nc": 3, "ch": 3}
    names = {0: "cat", 1: "dog", 2: "cow"}
    path = tmp_path / "weights.pt"
    with _FakeUltralytics(package) as fake:
        pickled = fake.pickled_model(original, yaml_dict, names, v5_anchor_grid=config.endswith("-v5")).half()
        if key == "model":  # a release: strip_optimizer emptied the training state
            content = {"model": pickled, "ema": None, "epoch": -1, "optimizer": None, "updates": None,
                       "best_fitness": None}
        else:  # their train.py's last.pt: best_fitness is the ndarray fitness() returns, the optimizer's state
            optimizer = torch.optim.SGD(pickled.parameters(), lr=0.01, momentum=0.937, nesterov=True)
            content = {"model": None, "ema": pickled, "epoch": 3, "updates": 120,
                       "best_fitness": np.array([0.4213]), "optimizer": optimizer.state_dict(),
                       "opt": {"weights": "yolov5n.pt", "epochs": 100, "hyp": {"lr0": np.float64(0.01)}},
                       "git": {"remote": "", "branch": None, "commit": None}}
        torch.save({**content, "date": "2022-11-22"}, path)
    assert package not in sys.modules
    loaded = load_yolov5(path)
    assert loaded.names == ["cat", "dog", "cow"] and loaded.nc == 3
    assert loaded.stride.tolist() == [8.0, 16.0, 32.0]
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert not loaded.training
    assert torch.equal(loaded.detect.anchors, original.detect.anchors)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), expected(image))


def test_plain_state_dict_needs_and_uses_a_yaml(tmp_path):
    model = YOLOv5("yolov5n", nc=5).eval()
    torch.save(model.state_dict(), tmp_path / "state.pt")
    with pytest.raises(CheckpointFormatError, match=r"plain state dict: pass cfg="):
        load_yolov5(tmp_path / "state.pt")
    loaded = load_yolov5(tmp_path / "state.pt", cfg="yolov5n.yaml")
    assert loaded.nc == 5  # read off the Detect output convs
    image = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(image), model(image))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": RunsCommand(f"touch {marker}"), "epoch": -1}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"refers to (posix|os|nt)\.system, which yolo_slim does not load"):
        load_yolov5(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unknown_class_in_a_yolov5_package_is_refused(tmp_path):
    with _FakeUltralytics("models") as fake:
        impostor = type("Evil", (nn.Module,), {"__module__": "models.yolo"})
        fake.modules["models.yolo"].Evil = impostor
        torch.save({"model": impostor()}, tmp_path / "odd.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"models\.yolo\.Evil"):
        load_yolov5(tmp_path / "odd.pt")


def test_checkpoint_without_a_model(tmp_path):
    torch.save({"epoch": 3, "note": "nothing here"}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointFormatError, match="holds no YOLOv5 model"):
        load_yolov5(tmp_path / "empty.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_yolov5(tmp_path / "missing.pt")


def _truncated(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save({"model": YOLOv5("yolov5n").state_dict()}, path)
    data = path.read_bytes()
    (tmp_path / "file.pt").write_bytes(data[: len(data) // 2])


def _resnet_weights(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64), "fc.bias": torch.zeros(10)},
               tmp_path / "file.pt")


@pytest.mark.parametrize("write,found", [
    (lambda tmp: (tmp / "file.pt").write_bytes(b""), r"is empty \(0 bytes\)"),
    (_truncated, r"is a zip archive torch cannot read \([\d,]+ bytes: truncated"),
    (lambda tmp: (tmp / "file.pt").write_text("garbage\nmore garbage\n"),
     r"is a text file, not a checkpoint \(it begins 'garbage'\)"),
    (lambda tmp: torch.save([1, 2, 3], tmp / "file.pt"), r"holds no YOLOv5 model: .* found a pickled list"),
    (lambda tmp: torch.save({"epoch": 1, "loss": 0.5}, tmp / "file.pt"), r"found a dict with keys \['epoch', 'loss'\]"),
    (_resnet_weights, r"holds the weights of another network \(keys conv1.weight, bn1.weight, fc.bias"),
    (lambda tmp: torch.save({"state_dict": {"w": torch.zeros(1)}, "pytorch-lightning_version": "2.4.0"},
                            tmp / "file.pt"), r"is a Lightning checkpoint of another LightningModule"),
    (lambda tmp: (tmp / "file.pt").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100)), r"is an HDF5 file"),
], ids=["empty", "truncated", "text", "list", "other-dict", "other-network", "other-lightning", "hdf5"])
def test_corrupt_and_foreign_files_are_named_and_described(tmp_path, write, found):
    write(tmp_path)
    path = tmp_path / "file.pt"
    with pytest.raises(CheckpointFormatError) as error:
        load_yolov5(path)
    assert str(error.value).startswith(str(path))  # the file is named first
    assert error.value.args[0] == str(error.value) and "\n" not in str(error.value)
    assert re.search(found, str(error.value)), str(error.value)


def test_a_newer_ultralytics_package_is_named(tmp_path):
    with _FakeUltralytics("ultralytics.nn.tasks") as fake:  # what a YOLOv8 / YOLO11 .pt pickles
        impostor = type("DetectionModel", (nn.Module,), {"__module__": "ultralytics.nn.tasks"})
        fake.modules["ultralytics.nn.tasks"].DetectionModel = impostor
        torch.save({"model": impostor()}, tmp_path / "yolov8n.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"yolov8n.pt: .*ultralytics' newer package \(YOLOv8, YOLO11"):
        load_yolov5(tmp_path / "yolov8n.pt")


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.parametrize("name", ["model.pt", "model.ckpt", "model.torchscript"])
def test_a_torchscript_file_is_refused_before_torch_can_run_it(tmp_path, monkeypatch, name):
    traced = torch.jit.trace(nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 8, 8))
    traced.save(str(tmp_path / name))

    def must_not_run(*args, **kwargs):  # torch.load hands TorchScript archives to torch.jit.load
        raise AssertionError("torch.jit.load was called on the file")

    monkeypatch.setattr(torch.jit, "load", must_not_run)
    for load in (load_yolov5, check_archive):  # check_archive guards the file a resume gives Lightning
        with pytest.raises(CheckpointFormatError, match=r"is a TorchScript file, an export rather than a checkpoint"):
            load(tmp_path / name)


def test_other_yolov5_tasks_and_onnx_files_are_named(tmp_path):
    with _FakeUltralytics("models") as fake:  # what yolov5s-seg.pt pickles
        segmentation = type("SegmentationModel", (nn.Module,), {"__module__": "models.yolo"})
        fake.modules["models.yolo"].SegmentationModel = segmentation
        torch.save({"model": segmentation()}, tmp_path / "yolov5n-seg.pt")
    with pytest.raises(CheckpointFormatError, match=r"yolov5n-seg.pt: checkpoint holds a YOLOv5 segmentation model "
                                                    r"\(models\.yolo\.SegmentationModel\); .* detection models only"):
        load_yolov5(tmp_path / "yolov5n-seg.pt")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(50))
    with pytest.raises(CheckpointFormatError, match=r"m.onnx is an ONNX file \(an export, not a checkpoint"):
        load_yolov5(tmp_path / "m.onnx")


def test_check_archive_reads_only_the_directory_and_names_bad_files(tmp_path):
    torch.save({"model": YOLOv5("yolov5n").state_dict()}, tmp_path / "whole.pt")
    check_archive(tmp_path / "whole.pt")  # a whole archive passes
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) - 100])  # the central directory lost
    (tmp_path / "text.pt").write_text("garbage\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, found in (("cut", "a zip archive torch cannot read"), ("text", "a text file"), ("empty", "is empty")):
        with pytest.raises(CheckpointFormatError, match=re.escape(f"{tmp_path / name}.pt") + ".*" + found):
            check_archive(tmp_path / f"{name}.pt")
