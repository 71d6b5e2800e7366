"""Pruning plans: thresholds, constraints, FLOPs targets, plain-data round trip, errors."""

import logging
import math
import re

import pytest
import torch

from yolo_slim.models.info import spec_gflops
from yolo_slim.models.yolo import YOLOv5
from yolo_slim.slim import PruningPlan, compact, group_importance, plan_pruning, pruned_spec, trace_channels


def test_ratio_removes_that_fraction_without_constraints(random_model):
    model = random_model()
    plan = plan_pruning(model, ratio=0.4, round_to=1, min_channels=1)
    assert plan.removed_channels == int(0.4 * plan.total_channels)
    # Everything removed is below the threshold, everything kept at or above it.
    importance = group_importance(model, trace_channels(model.spec))
    for name, kept in plan.keep.items():
        removed = set(range(plan.sizes[name])) - set(kept)
        assert all(importance[name][c] < plan.threshold for c in removed)
        assert all(importance[name][c] >= plan.threshold for c in kept)


def test_round_to_and_min_channels(random_model):
    model = random_model("yolov5s")
    plan = plan_pruning(model, ratio=0.7, round_to=8, min_channels=16)
    for name, kept in plan.keep.items():
        size = plan.sizes[name]
        assert len(kept) == size or (len(kept) % 8 == 0 and len(kept) >= 16), (name, len(kept))
        assert kept == sorted(kept)


def test_a_dead_layer_keeps_min_channels(random_model):
    model = random_model()
    with torch.no_grad():
        model.model[3].bn.weight.zero_()
    plan = plan_pruning(model, threshold=0.05, round_to=1, min_channels=4)
    assert len(plan.keep["3"]) == 4  # never empty: the seed code crashed here


def test_threshold_zero_keeps_everything_and_policy_seed_spares_shortcuts(random_model):
    model = random_model()
    assert plan_pruning(model, threshold=0.0).removed_channels == 0
    seed = plan_pruning(model, ratio=0.5, policy="seed", round_to=1, min_channels=1)
    assert len(seed.keep["2.cv1"]) == seed.sizes["2.cv1"] and len(seed.keep["4.m.1.cv1"]) == seed.sizes["4.m.1.cv1"]
    grouped = plan_pruning(model, ratio=0.5, round_to=1, min_channels=1)
    assert len(grouped.keep["4.cv1"]) < grouped.sizes["4.cv1"]


def test_flops_target_is_met_by_the_smallest_threshold(random_model):
    model = random_model("yolov5s")
    dense = spec_gflops(model.spec, 320)
    plan = plan_pruning(model, flops_target=0.5, imgsz=320)
    assert spec_gflops(pruned_spec(model.spec, plan), 320) <= 0.5 * dense
    importance = torch.cat(list(group_importance(model, trace_channels(model.spec)).values()))
    lower = importance[importance < plan.threshold].max().item()  # the next smaller threshold
    looser = plan_pruning(model, threshold=lower, imgsz=320)
    assert spec_gflops(pruned_spec(model.spec, looser), 320) > 0.5 * dense


def test_plan_is_plain_data(random_model, tmp_path):
    plan = plan_pruning(random_model(), ratio=0.3)
    torch.save(plan.to_dict(), tmp_path / "plan.pt")
    assert PruningPlan.from_dict(torch.load(tmp_path / "plan.pt", weights_only=True)) == plan


@pytest.mark.parametrize("edit,message", [
    (lambda data: data["keep"].pop(next(iter(data["keep"]))),
     r"keep and sizes must name the same groups; keep lacks \['"),
    (lambda data: data["sizes"].pop(next(iter(data["sizes"]))), r"keep lacks \[\], sizes lacks \['"),
    (lambda data: data.pop("sizes"), r"pruning plan lacks \['sizes'\]"),
])
def test_a_damaged_plan_file_is_refused_when_read(random_model, edit, message):
    data = plan_pruning(random_model(), ratio=0.3).to_dict()
    edit(data)
    with pytest.raises(ValueError, match=message):
        PruningPlan.from_dict(data)


@pytest.mark.parametrize("arguments,message", [
    ({"ratio": 1.0}, r"ratio must be in \[0, 1\), found 1.0"),
    ({"ratio": -0.1}, r"ratio must be in \[0, 1\), found -0.1"),
    ({}, "give exactly one of ratio, threshold, flops_target; found none"),
    ({"ratio": 0.3, "threshold": 0.1}, r"found \['ratio', 'threshold'\]"),
    ({"threshold": -1.0}, "threshold must be >= 0"),
    ({"flops_target": 0.0}, r"flops_target must be in \(0, 1\]"),
    ({"ratio": 0.3, "round_to": 0}, "round_to must be an int >= 1, found 0"),
    ({"ratio": 0.3, "min_channels": 2.5}, "min_channels must be an int >= 1, found 2.5"),
    ({"flops_target": 0.5, "imgsz": -64}, "imgsz must be an int >= 1, found -64"),
    ({"ratio": 0.3, "policy": "all"}, "policy must be one of"),
    ({"ratio": 0.3, "aggregate": "sum"}, r"aggregate must be one of \('max', 'mean'\)"),
    ({"ratio": "0.3"}, "ratio must be a number, found '0.3'"),
    ({"flops_target": True}, "flops_target must be a number, found True"),
    ({"flops_target": 0.01, "imgsz": 64}, r"flops_target=0.01 cannot be met: with min_channels=8 and round_to=8 "
                                          r"the smallest model has 0\.\d+ of the dense GFLOPs"),
])
def test_bad_arguments_fail_before_touching_the_model(random_model, arguments, message):
    model = random_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        plan_pruning(model, **arguments)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plan_for_another_architecture_is_refused(random_model):
    plan = plan_pruning(random_model("yolov5n"), ratio=0.3)
    with pytest.raises(ValueError, match="made for a different architecture"):
        compact(random_model("yolov5s"), plan)
    assert math.isfinite(plan.threshold)


def test_what_is_no_network_or_plan_is_named(random_model):
    model = random_model()
    with pytest.raises(TypeError, match="plan_pruning takes a yolo_slim YOLOv5 .*, found OrderedDict"):
        plan_pruning(model.state_dict(), ratio=0.3)
    for plan in (None, {}):
        with pytest.raises(TypeError, match=f"compact takes a yolo_slim YOLOv5 and a PruningPlan .*, found YOLOv5 and "
                                            f"{type(plan).__name__}"):
            compact(model, plan)
    assert trace_channels(model).groups.keys() == trace_channels(model.spec).groups.keys()  # a network, or its spec
    with pytest.raises(TypeError, match="trace_channels takes a ModelSpec or a YOLOv5, found str"):
        trace_channels("yolov5n")


def test_a_ratio_the_floors_hold_back_is_named(random_model, caplog):
    with caplog.at_level(logging.WARNING, logger="yolo_slim.slim.plan"):
        plan = plan_pruning(random_model(), ratio=0.5, min_channels=10_000)
    assert plan.removed_channels == 0
    assert re.search(r"ratio=0.5 asks for \d+ of the \d+ prunable channels, 0 removed: min_channels=10000 and "
                     r"round_to=8 keep the rest", caplog.text), caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolo_slim.slim.plan"):
        plan_pruning(random_model(), ratio=0.5)
    assert "keep the rest" not in caplog.text


def test_ratio_with_tied_importances_still_removes_that_many(random_model):
    model = random_model()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)  # an untrained network: every γ equal
    plan = plan_pruning(model, ratio=0.5, round_to=1, min_channels=1)
    assert plan.removed_channels == plan.total_channels // 2


@pytest.mark.parametrize("target", [{"ratio": 0.5}, {"threshold": 0.1}, {"flops_target": 0.5}])
def test_a_network_with_nothing_to_prune_is_refused_with_the_reason(target):
    # Grouped convolutions couple their input and output channels, so every group here is frozen.
    layout = {"nc": 2, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30, 33, 23]],
              "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2, None, 8]],
                           [-1, 1, "Conv", [8, 3, 2, None, 8]]],
              "head": [[[2], 1, "Detect", ["nc", "anchors"]]]}
    with pytest.raises(ValueError, match=r"no channel group of this network can be pruned under policy 'grouped' "
                                         r"\(layer 1: grouped convolution"):
        plan_pruning(YOLOv5(layout), **target)
