"""Slimming reports: per-layer rows that add up, γ of every producer, plain JSON, structure checks."""

import json

import pytest
import torch

from yolo_slim.models import YOLOv5, load_model_yaml, model_info
from yolo_slim.slim import SlimReport, compact, format_report, plan_pruning, report, trace_channels


@pytest.fixture()
def dense_and_pruned(random_model):
    model = random_model("yolov5n")
    plan = plan_pruning(model, ratio=0.5)
    return model, compact(model, plan), plan


def test_rows_match_model_info_of_each_model(dense_and_pruned):
    model, small, _ = dense_and_pruned
    result = report(model, small, imgsz=320)
    assert isinstance(result, SlimReport)
    info_before, info_after = model_info(model, 320), model_info(small, 320)
    assert len(result.layers) == len(info_before.layers) == 25
    for row, old, new in zip(result.layers, info_before.layers, info_after.layers):
        assert (row.index, row.module) == (old.index, old.module)
        assert (row.out_channels_before, row.out_channels_after) == (old.out_channels, new.out_channels)
        assert (row.params_before, row.params_after) == (old.params, new.params)
    assert sum(row.params_before for row in result.layers) == result.params_before == info_before.params
    assert sum(row.params_after for row in result.layers) == result.params_after == info_after.params
    assert result.gflops_after == pytest.approx(info_after.gflops)
    assert result.params_ratio == pytest.approx(info_after.params / info_before.params)
    assert 0 < result.params_ratio < 0.75 and 0 < result.gflops_ratio < 0.75
    assert result.imgsz == (320, 320)


def test_bn_channels_sum_every_norm_of_the_layer(dense_and_pruned):
    model, small, plan = dense_and_pruned
    result = report(model, small, imgsz=64)
    # yolov5n layer 2 is a C3: cv1 16 + cv2 16 + cv3 32 + one Bottleneck's cv1 16 and cv2 16.
    assert result.layers[2].bn_channels_before == 96
    assert result.layers[11].module == "Upsample" and result.layers[11].bn_channels_before == 0
    # After compaction every producer has its group's kept width.
    graph = trace_channels(model.spec, plan.policy)
    kept = sum(len(plan.keep[group.name]) * len(group.members) for group in graph.groups.values())
    dense = sum(group.size * len(group.members) for group in graph.groups.values())
    assert sum(row.bn_channels_after for row in result.layers) == kept
    assert sum(row.bn_channels_before for row in result.layers) == dense


def test_gammas_are_the_absolute_scales_of_the_dense_model(dense_and_pruned):
    model, small, _ = dense_and_pruned
    with torch.no_grad():
        model.model[3].bn.weight[0] = -0.25  # a negative γ reports as its magnitude
    result = report(model, small, imgsz=64)
    assert list(result.gammas) == list(trace_channels(model.spec).producers())
    assert "2.m.0.cv2" in result.gammas and "24" not in result.gammas
    assert result.gammas["3"][0] == pytest.approx(0.25)
    assert result.gammas["2.cv1"] == pytest.approx(model.model[2].cv1.bn.weight.abs().tolist())
    assert all(value >= 0 for values in result.gammas.values() for value in values)


def test_to_dict_is_plain_json_and_the_table_shows_totals(dense_and_pruned):
    model, small, _ = dense_and_pruned
    result = report(model, small, imgsz=64)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["params_before"] == result.params_before and data["imgsz"] == [64, 64]
    assert data["layers"][2]["bn_channels_before"] == 96
    assert data["gammas"]["2.cv1"] == pytest.approx(result.gammas["2.cv1"])
    assert data["gflops_ratio"] == pytest.approx(result.gflops_ratio)
    table = format_report(result)
    assert f"{result.params_before:,} -> {result.params_after:,}" in table
    assert "GFLOPs at 64x64" in table and table.count("C3") == 8


def test_a_model_against_itself_changes_nothing(random_model):
    model = random_model("yolov5n")
    result = report(model, model, imgsz=64)
    assert result.params_ratio == 1.0 and result.gflops_ratio == pytest.approx(1.0)
    assert all(row.bn_channels_before == row.bn_channels_after for row in result.layers)


def test_models_of_different_structure_are_refused():
    with pytest.raises(ValueError, match=r"layer 0 is Conv from \(-1,\) before but Focus"):
        report(YOLOv5("yolov5n"), YOLOv5("yolov5n-v5"), imgsz=64)
    tiny = load_model_yaml("yolov5n")
    tiny["backbone"] = [[-1, 1, "Conv", [16, 3, 2]] for _ in range(5)]
    tiny["head"] = [[[2, 3, 4], 1, "Detect", ["nc", "anchors"]]]
    with pytest.raises(ValueError, match="before has 25 layers, after has 6"):
        report(YOLOv5("yolov5n"), YOLOv5(tiny), imgsz=64)


def test_a_ddp_network_with_sync_batchnorm_reports_the_same_channels(dense_and_pruned):
    # A DDP run with sync_batchnorm=True converts every BatchNorm2d: the report must still count them.
    model, small, _ = dense_and_pruned
    plain = report(model, small, imgsz=64)
    synced = report(*(torch.nn.SyncBatchNorm.convert_sync_batchnorm(m).eval() for m in (model, small)), imgsz=64)
    assert [row.bn_channels_before for row in synced.layers] == [row.bn_channels_before for row in plain.layers]
    assert [row.bn_channels_after for row in synced.layers] == [row.bn_channels_after for row in plain.layers]
    assert sum(row.bn_channels_after for row in synced.layers) > 0
