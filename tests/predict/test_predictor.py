"""The predictor on a hand-made case: boxes come back in the original image's pixels; sources; runtimes agree."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from yolo_slim.models import CheckpointFormatError, YOLOv5, fuse_batchnorm
from yolo_slim.models.export import export_onnx, export_torchscript
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.models.testing import randomize_norms
from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint
from yolo_slim.predict import Detector, image_sources, load_detector, predict_image
from yolo_slim.predict.runtime import _names


def _one_box_detector() -> Detector:
    """Always one box at cx=32, cy=32, w=32, h=16 letterbox pixels: objectness 0.9, class 1 at 0.9."""

    def run(images: torch.Tensor) -> torch.Tensor:
        assert images.shape == (1, 3, 64, 64) and images.dtype == torch.float32 and images.max() <= 1
        return torch.tensor([[[32.0, 32.0, 32.0, 16.0, 0.9, 0.1, 0.9]]])

    return Detector(Path("fake.pt"), "torch", ["a", "b"], 32, None, run)


def test_boxes_are_mapped_back_through_the_letterbox():
    # 100 x 200 (H x W) -> 32 x 64 resized, 16 px of padding above: a box at y 24..40 is at 25..75 originally.
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    prediction = predict_image(_one_box_detector(), image, 64, NMSConfig(conf_threshold=0.25, multi_label=False))
    assert (prediction.width, prediction.height) == (200, 100)
    assert prediction.detections.shape == (1, 6)
    assert torch.allclose(prediction.detections[0, :4], torch.tensor([50.0, 25.0, 150.0, 75.0]))
    assert prediction.detections[0, 4].item() == pytest.approx(0.81) and prediction.detections[0, 5].item() == 1
    assert all(ms >= 0 for ms in prediction.milliseconds)


def test_sources_a_file_a_folder_a_glob_and_a_list(tmp_path):
    for name in ("a.jpg", "sub/b.png", "sub/notes.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert image_sources(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]
    assert image_sources(tmp_path) == [tmp_path / "a.jpg", tmp_path / "sub" / "b.png"]
    assert image_sources(f"{tmp_path}/**/*.png") == [tmp_path / "sub" / "b.png"]
    (tmp_path / "list.txt").write_text("sub/b.png\n\na.jpg\n")
    assert image_sources(tmp_path / "list.txt") == [tmp_path / "a.jpg", tmp_path / "sub" / "b.png"]
    with pytest.raises(ValueError, match=r"source='.*nowhere' does not exist; give an image, a folder"):
        image_sources(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no image files"):
        image_sources(tmp_path / "sub" / "*.gif")
    with pytest.raises(ValueError, match="is not an image"):
        image_sources(tmp_path / "sub" / "notes.md")
    (tmp_path / "bad.txt").write_text("missing.jpg\n")
    with pytest.raises(ValueError, match="lists 1 files that do not exist"):
        image_sources(tmp_path / "bad.txt")


def test_every_runtime_gives_the_same_detections(tmp_path):
    torch.manual_seed(0)
    model = randomize_norms(YOLOv5("yolov5n", nc=2, names=["cat", "dog"]), 0).eval()
    files = [write_ultralytics_checkpoint(model, tmp_path / "m.pt", half=False),
             export_torchscript(model, tmp_path / "m.torchscript", imgsz=64),
             export_onnx(model, tmp_path / "m.onnx", imgsz=64)]
    image = torch.randint(0, 255, (3, 48, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    nms = NMSConfig(conf_threshold=0.001, multi_label=False, max_det=20)
    results = []
    for path in files:
        detector = load_detector(path)
        assert detector.names == ["cat", "dog"] and detector.stride == 32
        assert detector.imgsz == (None if path.suffix == ".pt" else (64, 64))
        results.append(predict_image(detector, image, 64, nms).detections)
    assert len(results[0]) > 0
    for other in results[1:]:  # the same boxes, scores and classes (the order of equal scores may differ)
        assert other.shape == results[0].shape
        distance = (other[:, None, :] - results[0][None, :, :]).abs().amax(dim=2)  # (n, n)
        assert distance.amin(dim=1).max() < 1e-2


def _closest(found: torch.Tensor, expected: torch.Tensor) -> float:
    """For each expected detection the distance to the nearest found one (boxes, score, class), at worst."""
    assert found.shape == expected.shape and len(expected) > 0
    return float((found[:, None, :] - expected[None, :, :]).abs().amax(dim=2).amin(dim=0).max())


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_rectangular_fp16_and_upper_case_exports_run_at_their_own_size(tmp_path):
    torch.manual_seed(0)
    model = randomize_norms(YOLOv5("yolov5n", nc=2, names=["cat", "dog"]), 0).eval()
    image = torch.randint(0, 255, (3, 48, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    nms = NMSConfig(conf_threshold=0.001, multi_label=False)  # no max_det cut among the random model's equal scores
    reference = predict_image(load_detector(write_ultralytics_checkpoint(model, tmp_path / "m.pt", half=False)),
                              image, (64, 96), nms).detections  # the torch model at the same 64 x 96
    # What ultralytics' `export.py --imgsz 64 96` writes (and an upper-case suffix), then `--half`.
    rectangular = [export_onnx(model, tmp_path / "rect.ONNX", imgsz=(64, 96)),
                   export_torchscript(model, tmp_path / "rect.torchscript", imgsz=(64, 96))]
    # An fp16 file (`--half`) as onnxruntime sees it: fp16 images in, fp16 predictions out. (Tracing the
    # network itself in fp16 needs a GPU, as their export does; casts at both ends stand in for it here.)
    half = tmp_path / "half.onnx"
    torch.onnx.export(_Half(model).eval(), (torch.zeros(1, 3, 64, 96, dtype=torch.half),), str(half),
                      dynamo=False, input_names=["images"], output_names=["output0"], opset_version=17)
    for path in rectangular:
        detector = load_detector(path)
        assert detector.imgsz == (64, 96)
        found = predict_image(detector, image, detector.imgsz, nms).detections
        assert _closest(found, reference) < 1e-2, path
    # fp16 files are compared before NMS, which fp16's rounding of near-equal scores could reorder. A TorchScript
    # file traced in fp16 throughout (CPU convolutions run in fp16 too) takes fp16 input as well.
    traced = torch.jit.trace(fuse_batchnorm(copy.deepcopy(model)).half(), torch.zeros(1, 3, 64, 96, dtype=torch.half))
    traced.save(str(tmp_path / "half.torchscript"), _extra_files={"config.txt": '{"shape": [1, 3, 64, 96]}'})
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(images)
    for path in (half, tmp_path / "half.torchscript"):
        detector = load_detector(path)
        found = detector.run(images)
        assert detector.imgsz == (64, 96) and found.dtype == torch.float32
        torch.testing.assert_close(found, expected, rtol=2e-2, atol=2e-2)  # fp16 keeps about 3 significant digits


class _Half(nn.Module):
    def __init__(self, model: YOLOv5) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float()).half()


class _Layout(nn.Module):
    """A YOLOv5 whose output is rearranged as other exports lay theirs out."""

    def __init__(self, model: YOLOv5, layout: str) -> None:
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, images: torch.Tensor):
        if self.layout == "fixed_size":
            return self.model(images.reshape(1, 3, 128, 128))
        predictions = self.model(images)  # (B, N, 5 + nc)
        if self.layout == "yolov8":  # (B, 4 + nc, N), no objectness
            return torch.cat([predictions[..., :4], predictions[..., 5:]], dim=2).transpose(1, 2)
        if self.layout == "segmentation":  # detections with 32 mask coefficients, and the prototypes
            return predictions.repeat(1, 1, 6)[..., :7 + 32], images[:, :1].repeat(1, 32, 1, 1)
        if self.layout == "with_maps":  # ultralytics' PyPI export.py: the predictions, then Detect's raw maps
            maps = [predictions[:, :48].reshape(1, 3, 4, 4, 7), predictions[:, 48:60].reshape(1, 3, 2, 2, 7)]
            return predictions, maps
        return predictions[..., :4]  # boxes only


def _saved(module: nn.Module, path: Path) -> Path:
    """``module`` traced at 64 x 64 into ``path``: ONNX or TorchScript by its suffix, with no metadata."""
    example = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        if path.suffix == ".onnx":
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17)
        else:
            torch.jit.trace(module, example).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("layout", ["yolov8", "segmentation", "boxes"])
@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_exports_of_other_layouts_are_refused_when_loaded(tmp_path, layout, suffix):
    path = _saved(_Layout(YOLOv5("yolov5n", nc=2).eval(), layout).eval(), tmp_path / f"other{suffix}")
    with pytest.raises(CheckpointFormatError, match=r"is not a YOLOv5 detector's export: it returned \d output"):
        load_detector(path)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_an_export_that_also_returns_the_raw_maps_runs(tmp_path, suffix):
    model = YOLOv5("yolov5n", nc=2).eval()
    path = _saved(_Layout(model, "with_maps").eval(), tmp_path / f"m{suffix}")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_detector(path).run(images), model(images), atol=1e-4)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_a_torchscript_file_that_does_not_say_its_size_is_tried_at_imgsz(tmp_path):
    model = _Layout(YOLOv5("yolov5n", nc=2).eval(), "fixed_size").eval()  # runs at 128 x 128 only, like a file
    with torch.no_grad():                                                  # whose grids were traced as constants
        torch.jit.trace(model, torch.zeros(1, 3, 128, 128)).save(str(tmp_path / "m.torchscript"))  # no config.txt
    detector = load_detector(tmp_path / "m.torchscript", imgsz=128)
    assert detector.imgsz is None and detector.names == []
    with pytest.raises(CheckpointFormatError, match=r"does not run on a 1x3x64x64 image .*; it does not say its "
                                                    r"input size: give imgsz= the size it was exported at"):
        load_detector(tmp_path / "m.torchscript", imgsz=64)


def test_class_names_in_metadata():
    assert _names("{0: 'cat', 1: 'dog'}") == ["cat", "dog"] and _names('{"1": "dog", "0": "cat"}') == ["cat", "dog"]
    assert _names(["a", "b"]) == ["a", "b"]
    assert _names("{'a': 'cat'}") == [] and _names("not python") == [] and _names(None) == []  # numbered instead


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_unreadable_files_and_one_channel_models_are_refused_with_the_file_named(tmp_path):
    for name, found in (("bad.onnx", "is not an ONNX file onnxruntime can load"),
                        ("bad.torchscript", "is not a TorchScript file torch can read")):
        (tmp_path / name).write_bytes(b"not a model at all\n" * 10)
        with pytest.raises(CheckpointFormatError, match=found) as error:
            load_detector(tmp_path / name)
        assert str(error.value).startswith(str(tmp_path / name)) and "\n" not in str(error.value)
    gray = YOLOv5("yolov5n", nc=2, in_channels=1).eval()
    files = [write_ultralytics_checkpoint(gray, tmp_path / "gray.pt", half=False),
             export_onnx(gray, tmp_path / "gray.onnx", imgsz=64),
             export_torchscript(gray, tmp_path / "gray.torchscript", imgsz=64)]
    for path in files:
        with pytest.raises(CheckpointFormatError, match=r"takes 1-channel images; predict feeds RGB images"):
            load_detector(path)
