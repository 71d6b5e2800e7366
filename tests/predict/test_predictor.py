"""The predictor on a hand-made case: boxes come back in the original image's pixels; sources; runtimes agree."""

from pathlib import Path

import pytest
import torch

from yolo_slim.models import YOLOv5
from yolo_slim.models.export import export_onnx, export_torchscript
from yolo_slim.models.postprocess import NMSConfig
from yolo_slim.models.testing import randomize_norms
from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint
from yolo_slim.predict import Detector, image_sources, load_detector, predict_image


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
        assert detector.imgsz == (None if path.suffix == ".pt" else 64)
        results.append(predict_image(detector, image, 64, nms).detections)
    assert len(results[0]) > 0
    for other in results[1:]:  # the same boxes, scores and classes (the order of equal scores may differ)
        assert other.shape == results[0].shape
        distance = (other[:, None, :] - results[0][None, :, :]).abs().amax(dim=2)  # (n, n)
        assert distance.amin(dim=1).max() < 1e-2
