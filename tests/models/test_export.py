"""ONNX and TorchScript export: parity, a dynamic batch, pruned models, metadata, settings errors.

Measured here (torch 2.14.1, onnxruntime 1.32, yolov5n nc=3 with random BatchNorms, 128x128, batch 2):
the largest difference in decoded outputs is 1.5e-4 for the dense model and 9e-5 for the ratio-0.5
compaction, on predictions up to ~400 (box sizes in pixels); the tests allow 1e-3.
"""

import ast
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from yolo_slim.models import YOLOv5
from yolo_slim.models.export import check_onnx, check_torchscript, export_onnx, export_torchscript, max_opset
from yolo_slim.models.testing import randomize_norms
from yolo_slim.slim import compact, plan_pruning

IMGSZ = 128
TOLERANCE = 1e-3


def _model_with_random_norms(seed: int = 0) -> YOLOv5:
    torch.manual_seed(seed)
    return randomize_norms(YOLOv5("yolov5n", nc=3), seed)


@pytest.fixture(scope="module")
def dense():
    return _model_with_random_norms()


@pytest.fixture(scope="module")
def dense_file(dense, tmp_path_factory):
    return export_onnx(dense, tmp_path_factory.mktemp("onnx") / "dense.onnx", imgsz=IMGSZ)


def test_outputs_match_onnxruntime(dense, dense_file):
    assert dense_file.is_file()
    assert check_onnx(dense, dense_file, IMGSZ) < TOLERANCE


def test_names_and_a_dynamic_batch(dense, dense_file):
    graph = onnx.load(str(dense_file)).graph
    assert [node.name for node in graph.input] == ["images"]
    assert [node.name for node in graph.output] == ["predictions"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnxruntime.InferenceSession(str(dense_file), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        images = torch.rand(batch, 3, IMGSZ, IMGSZ)
        (found,) = session.run(["predictions"], {"images": images.numpy()})
        with torch.no_grad():
            expected = dense(images)
        assert found.shape == tuple(expected.shape) == (batch, 3 * (16**2 + 8**2 + 4**2), 8)
        assert np.abs(found - expected.numpy()).max() < TOLERANCE


def test_a_pruned_model_exports_smaller(dense, dense_file, tmp_path):
    small = compact(dense, plan_pruning(dense, ratio=0.5))
    path = export_onnx(small, tmp_path / "small.onnx", imgsz=IMGSZ)
    assert check_onnx(small, path, IMGSZ) < TOLERANCE
    assert path.stat().st_size < 0.6 * dense_file.stat().st_size


def test_fixed_batch_and_a_non_square_size_leave_the_model_untouched(tmp_path):
    model = YOLOv5("yolov5n", nc=2).train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    path = export_onnx(model, tmp_path / "fixed.onnx", imgsz=(64, 96), dynamic_batch=False, opset=13)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    saved = onnx.load(str(path))
    assert saved.opset_import[0].version == 13
    assert [d.dim_value for d in saved.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 96]
    assert check_onnx(model, path, (64, 96)) < TOLERANCE  # on the file's fixed batch of 1
    with pytest.raises(ValueError, match=r"takes images of 64x96 but imgsz=\(96, 64\) was given"):
        check_onnx(model, path, (96, 64))
    with pytest.raises(ValueError, match=r"does not hold this model: .* shape \(1, 378, 7\), torch \(1, 378, 6\)"):
        check_onnx(YOLOv5("yolov5n", nc=1), path, (64, 96))


def test_settings_errors(dense, dense_file, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"imgsz must be a positive multiple of 32 .* found 100"):
        export_onnx(dense, tmp_path / "bad.onnx", imgsz=100)
    with pytest.raises(ValueError, match=r"imgsz must be a positive multiple of 32 .* found \(64, 0\)"):
        check_onnx(dense, dense_file, imgsz=(64, 0))
    for opset in (9, max_opset() + 1):
        with pytest.raises(ValueError, match=f"opset must be an int from 11 to {max_opset()}, found {opset}"):
            export_onnx(dense, tmp_path / "bad.onnx", opset=opset)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ImportError, match="check_onnx needs onnxruntime: pip install onnxruntime"):
        check_onnx(dense, dense_file, IMGSZ)


def test_the_onnx_file_carries_names_and_stride(dense_file):
    metadata = {entry.key: entry.value for entry in onnx.load(str(dense_file)).metadata_props}
    # As ultralytics' export writes it: their DetectMultiBackend eval()s it and reads names[0].
    assert metadata["stride"] == "32" and ast.literal_eval(metadata["names"]) == {0: "0", 1: "1", 2: "2"}


def test_torchscript_parity_a_free_batch_axis_and_its_config(dense, tmp_path):
    small = compact(dense, plan_pruning(dense, ratio=0.5))
    for model in (dense, small):
        path = export_torchscript(model, tmp_path / "model.torchscript", imgsz=IMGSZ)
        assert check_torchscript(model, path, IMGSZ) < TOLERANCE  # traced at batch 1, checked at batch 2
    extra = {"config.txt": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["config.txt"]) == {"shape": [1, 3, IMGSZ, IMGSZ], "stride": 32,
                                               "names": {"0": "0", "1": "1", "2": "2"}}
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in small.modules())  # the source keeps its BatchNorms
    assert "batch_norm" not in str(loaded.inlined_graph)  # the file has them folded
