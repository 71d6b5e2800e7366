"""Channel groups and consumers traced from the spec."""

import pytest
import torch

from yolo_slim.models import YOLOv5, load_model_yaml, shipped_configs
from yolo_slim.slim import Segment, trace_channels


@pytest.mark.parametrize("name", shipped_configs())
def test_every_batchnorm_is_in_exactly_one_group(name):
    model = YOLOv5(name)
    graph = trace_channels(model.spec)
    producers = list(graph.producers())
    assert len(producers) == len(set(producers))
    norms = {path.removesuffix(".bn") for path, m in model.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert set(producers) == norms
    for group in graph.groups.values():  # tied members have the same width
        assert {model.model.get_submodule(p).bn.num_features for p in group.members} == {group.size}
    # Every conv reads exactly as many channels as its segments describe.
    for consumer in graph.consumers:
        module = model.model.get_submodule(consumer.path)
        conv = module if consumer.detect else module.conv
        assert conv.in_channels == sum(s.size for s in consumer.segments), consumer.path


def test_residual_groups_of_yolov5n():
    graph = trace_channels(YOLOv5("yolov5n").spec)
    assert graph.groups["4.cv1"].members == ("4.cv1", "4.m.0.cv2", "4.m.1.cv2")
    assert graph.groups["4.cv1"].residual and not graph.groups["4.cv2"].residual
    assert sorted(name for name, g in graph.groups.items() if g.residual) == ["2.cv1", "4.cv1", "6.cv1", "8.cv1"]
    assert not graph.groups["13.cv1"].residual  # head C3s have no shortcut
    assert not any(g.frozen for g in graph.groups.values())


def test_consumers_through_concat_sppf_and_detect():
    consumers = {c.path: c for c in trace_channels(YOLOv5("yolov5n").spec).consumers}
    # Concat of the upsampled layer 10 and layer 6 (through nn.Upsample), in order.
    assert [(s.group, s.size) for s in consumers["13.cv1"].segments] == [("10", 128), ("6.cv3", 128)]
    assert [s.group for s in consumers["9.cv2"].segments] == ["9.cv1"] * 4  # SPPF: input and three pools
    assert consumers["0"].segments == (Segment(None, 3),)  # the image is never pruned
    assert consumers["24.m.2"].detect and consumers["24.m.2"].segments[0].group == "23.cv3"
    # The C3 output reads the residual stream: it carries cv1 plus each Bottleneck's cv2.
    assert consumers["4.cv3"].segments[0].sources == ("4.cv1", "4.m.0.cv2", "4.m.1.cv2")
    assert consumers["4.m.1.cv1"].segments[0].sources == ("4.cv1", "4.m.0.cv2")


def test_v5_layout_spp_and_focus():
    consumers = {c.path: c for c in trace_channels(YOLOv5("yolov5n-v5").spec).consumers}
    assert [s.group for s in consumers["8.cv2"].segments] == ["8.cv1"] * 4  # SPP(5, 9, 13)
    assert consumers["0.conv"].segments == (Segment(None, 3),) * 4  # Focus stacks four phases
    assert not trace_channels(YOLOv5("yolov5n-v5").spec).groups["9.cv1"].residual  # v5.0: no shortcut there


def test_seed_policy_freezes_what_touches_a_shortcut():
    groups = trace_channels(YOLOv5("yolov5n").spec, policy="seed").groups
    assert groups["2.cv1"].frozen and groups["2.m.0.cv1"].frozen
    assert not groups["2.cv2"].frozen and not groups["2.cv3"].frozen and not groups["13.m.0.cv1"].frozen


def test_grouped_convs_and_multi_group_shortcuts_are_frozen():
    data = load_model_yaml("yolov5n")
    data["backbone"][3] = [-1, 1, "Conv", [256, 3, 2, None, 2]]  # a conv with groups=2
    data["head"][3] = [-1, 1, "Bottleneck", [1024]]  # 256 in and out: a shortcut over a Concat, not one group
    graph = trace_channels(YOLOv5(data).spec)
    assert graph.groups["3"].frozen and graph.groups["2.cv3"].frozen
    assert graph.groups["13.cv2"].frozen and graph.groups["10"].frozen and graph.groups["6.cv3"].frozen
    assert not graph.groups["14"].frozen


def test_unknown_policy():
    with pytest.raises(ValueError, match=r"policy must be one of \('grouped', 'seed'\), found 'all'"):
        trace_channels(YOLOv5("yolov5n").spec, policy="all")


def test_blocks_left_whole_inside_are_reported_with_the_reason():
    graph = trace_channels(YOLOv5("yolov5s-transformer").spec)
    assert graph.whole_layers == {8: ("transformer at 8.m left whole",)}
    assert graph.groups["8.cv1"].frozen and not graph.groups["8.cv2"].frozen and not graph.groups["8.cv3"].frozen
    ghost = trace_channels(YOLOv5("yolov5s-ghost").spec)
    # Depthwise convolutions freeze both halves of every GhostConv; the C3Ghost's cv2 and cv3 still prune.
    assert ghost.groups["1.cv1"].frozen and ghost.groups["1.cv2"].frozen and ghost.groups["2.cv1"].frozen
    assert not ghost.groups["2.cv2"].frozen and not ghost.groups["2.cv3"].frozen
    assert "grouped convolution at 1.cv2 (groups=32)" in ghost.whole_layers[1]


def test_repeated_bottlenecks_share_one_residual_group():
    graph = trace_channels(YOLOv5("yolov3").spec)
    assert graph.groups["5"].members == ("5", *(f"6.{j}.cv2" for j in range(8)))
    assert not graph.groups["5"].frozen and graph.groups["6.3.cv1"].members == ("6.3.cv1",)
