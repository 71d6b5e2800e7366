"""Parsing ultralytics model yamls: arithmetic, every shipped config, and the errors for bad yamls."""

import copy
import json
from pathlib import Path

import pytest
import torch

from yolo_slim.models import ModelSpec, YOLOv5, count_parameters, load_model_yaml, parse_model_yaml, shipped_configs

# ultralytics' own summaries at nc=80 (their `model_info` / README figures).
GOLDEN_PARAMETERS = {
    "yolov5n": 1_872_157,
    "yolov5s": 7_235_389,
    "yolov5m": 21_190_557,
    "yolov5l": 46_563_709,
    "yolov5x": 86_749_405,
    "yolov5s-v5": 7_276_605,
    "yolov5n6": 3_246_940,  # the hub layouts: ultralytics' counts from benchmarks/compare_reference.py
    "yolov5-p34": 5_331_518,
    "yolov5-p2": 47_493_372,
    "yolov3": 61_949_149,
    "yolov3-spp": 62_998_749,
    "yolov3-tiny": 8_852_366,
    "yolov5s-ghost": 3_897_605,
    "yolov5s-transformer": 7_235_645,
    "yolov5s-LeakyReLU": 7_235_389,
}


def test_ships_both_generations_of_every_size_and_the_hub_layouts():
    expected = {f"yolov5{size}{suffix}" for size in "nsmlx" for suffix in ("", "-v5", "6")}
    expected |= {f"yolov5-{name}" for name in ("fpn", "panet", "bifpn", "p2", "p34", "p6", "p7")}
    expected |= {"yolov5s-LeakyReLU", "yolov5s-ghost", "yolov5s-transformer", "yolov3", "yolov3-spp", "yolov3-tiny"}
    assert expected <= set(shipped_configs())
    conf = Path(__file__).parents[2] / "conf" / "model"
    assert {path.stem for path in conf.glob("*.yaml")} == set(shipped_configs())  # model=NAME for each


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_builds_and_runs(name):
    model = YOLOv5(name, nc=80)
    strides = [int(s) for s in model.stride.tolist()]
    # P3-P5 for most; P3-P6 for the *6 and -p6 layouts, P2-P5 for -p2, P3-P4 for -p34, P3-P7 for -p7,
    # P4-P5 for yolov3-tiny.
    assert strides in ([8, 16, 32], [8, 16, 32, 64], [4, 8, 16, 32], [8, 16], [8, 16, 32, 64, 128], [16, 32]), strides
    largest = int(max(model.spec.downsampling()))  # what the input must divide by (32 for -p34 too)
    height, width = 2 * largest, 3 * largest
    image = torch.rand(2, 3, height, width)
    with torch.no_grad():
        decoded = model.eval()(image)
        raw = model.train()(image)
    grids = [(height // s, width // s) for s in strides]
    assert decoded.shape == (2, 3 * sum(h * w for h, w in grids), 85)  # 3 anchors per cell on every level
    assert [tuple(level.shape) for level in raw] == [(2, 3, h, w, 85) for h, w in grids]


@pytest.mark.parametrize("name,expected", GOLDEN_PARAMETERS.items())
def test_parameter_counts_match_ultralytics(name, expected):
    assert count_parameters(YOLOv5(name, nc=80)) == expected


@pytest.mark.parametrize("name,repeats", [
    ("yolov5n", [1, 2, 3, 1, 1, 1, 1, 1]),      # 3/6/9/3 backbone, 3 in the head, depth 0.33
    ("yolov5m", [2, 4, 6, 2, 2, 2, 2, 2]),      # depth 0.67: round(6.03) = 6, round(2.01) = 2
    ("yolov5x", [4, 8, 12, 4, 4, 4, 4, 4]),     # depth 1.33: round(11.97) = 12
    ("yolov5s-v5", [1, 3, 3, 1, 1, 1, 1, 1]),   # v5.0: 3/9/9 backbone, the last C3 without shortcut
])
def test_c3_depth_arithmetic(name, repeats):
    spec = YOLOv5(name).spec
    assert [len(layer.params["bottlenecks"]) for layer in spec.layers if layer.module == "C3"] == repeats


def test_repeated_rows_are_copies_in_a_sequential_as_ultralytics_builds_them():
    spec = YOLOv5("yolov3").spec
    assert spec.layers[4].module == "Repeat" and spec.layers[4].params["module"] == "Bottleneck"
    assert [len(layer.params["copies"]) for layer in spec.layers if layer.module == "Repeat"] == [2, 8, 8, 4, 2]
    assert spec.layers[2].module == "Bottleneck"  # a number of 1 stays the block itself (keys model.2.cv1...)
    data = load_model_yaml("yolov3")
    data["depth_multiple"] = 0.33  # the depth gain applies to every repeated row: round(8 * 0.33) = 3, 2 and 4 -> 1
    repeated = [layer for layer in parse_model_yaml(data).layers if layer.module == "Repeat"]
    assert [len(layer.params["copies"]) for layer in repeated] == [3, 3]


@pytest.mark.parametrize("text,canonical", [
    ("nn.LeakyReLU(0.1)", "nn.LeakyReLU(0.1)"), ("LeakyReLU(negative_slope=0.1)", "nn.LeakyReLU(0.1)"),
    ("nn.SiLU()", "nn.SiLU()"), ("SiLU", "nn.SiLU()"), ("torch.nn.ReLU(inplace=True)", "nn.ReLU()"),
    ("nn.Hardswish()", "nn.Hardswish()"),
])
def test_activation_key_without_eval(text, canonical):
    data = load_model_yaml("yolov5n")
    data["activation"] = text
    model = YOLOv5(data)
    assert model.spec.activation == canonical
    assert ModelSpec.from_dict(json.loads(json.dumps(model.spec.to_dict()))).activation == canonical
    acts = {type(m.act).__name__ for m in model.modules()
            if hasattr(m, "act") and not isinstance(m.act, torch.nn.Identity)}
    assert acts == {canonical.removeprefix("nn.").split("(")[0]}


def test_leaky_relu_slope_reaches_every_conv_and_changes_the_output():
    torch.manual_seed(0)
    silu = YOLOv5("yolov5s").eval()
    leaky = YOLOv5("yolov5s-LeakyReLU").eval()
    leaky.load_state_dict(silu.state_dict())
    slopes = {m.act.negative_slope for m in leaky.modules() if isinstance(getattr(m, "act", None), torch.nn.LeakyReLU)}
    assert slopes == {0.1}
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (leaky(image) - silu(image)).abs().max() > 1e-3


def test_width_arithmetic_rounds_up_to_multiples_of_eight():
    data = load_model_yaml("yolov5s")
    data["width_multiple"] = 0.3
    spec = parse_model_yaml(data)
    channels = spec.output_channels()
    assert channels[0] == 24  # ceil(64 * 0.3 / 8) * 8
    assert channels[7] == 312  # ceil(1024 * 0.3 / 8) * 8 = ceil(38.4) * 8
    assert spec.layers[2].params["cv1_channels"] == int(40 * 0.5)  # C3 hidden = int(c2 * 0.5) with c2 = 40


def test_v5_layout_has_focus_spp_and_no_shortcut_in_last_backbone_c3():
    spec = YOLOv5("yolov5s-v5").spec
    assert spec.layers[0].module == "Focus" and spec.layers[8].module == "SPP"
    assert spec.layers[8].params["kernel_sizes"] == [5, 9, 13]
    assert spec.layers[9].params["shortcut"] is False and spec.layers[6].params["shortcut"] is True


def test_nc_override_and_names():
    model = YOLOv5("yolov5n", nc=3, names=["cat", "dog", "cow"])
    assert model.nc == 3 and model.names == ["cat", "dog", "cow"]
    assert model.detect.m[0].weight.shape[0] == 3 * 8
    with pytest.raises(ValueError, match="names has 2 entries but the model has nc=3"):
        YOLOv5("yolov5n", nc=3, names=["a", "b"])


def test_model_from_yaml_path_and_dict(tmp_path):
    data = load_model_yaml("yolov5n")
    path = tmp_path / "custom.yaml"
    path.write_text(json.dumps(data))  # JSON is valid YAML
    assert count_parameters(YOLOv5(path)) == count_parameters(YOLOv5(data)) == GOLDEN_PARAMETERS["yolov5n"]


def test_spec_round_trips_through_json_and_weights_only_load(tmp_path):
    model = YOLOv5("yolov5s-v5", nc=7)
    text = json.dumps(model.spec.to_dict())
    rebuilt = YOLOv5.from_spec(json.loads(text))
    assert rebuilt.spec == model.spec
    torch.save({"spec": model.spec.to_dict()}, tmp_path / "spec.pt")
    loaded = torch.load(tmp_path / "spec.pt", weights_only=True)
    same = YOLOv5.from_spec(loaded["spec"])
    same.load_state_dict(model.state_dict(), strict=True)
    image = torch.rand(1, 3, 64, 64)
    assert torch.equal(same.eval()(image), model.eval()(image))


def test_spec_rejects_inconsistent_channels():
    data = YOLOv5("yolov5n").spec.to_dict()
    data["layers"][1]["params"]["in_channels"] = 99
    with pytest.raises(ValueError, match=r"layer 1 \(Conv\) expects 99 input channels but its sources \[0\] produce 16"):
        ModelSpec.from_dict(data)


def test_reversed_anchor_levels_are_flipped_like_ultralytics():
    data = load_model_yaml("yolov5n")
    data["anchors"] = list(reversed(data["anchors"]))
    model = YOLOv5(data)
    assert model.detect.anchors[0].mul(8).tolist() == [[10, 13], [16, 30], [33, 23]]
    assert model.spec.anchors[0] == (10, 13, 16, 30, 33, 23)


def _yaml_with(edit):
    data = load_model_yaml("yolov5n")
    edit(data)
    return data


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("depth_multiple"), "lacks depth_multiple; required keys: nc, depth_multiple"),
    (lambda d: d["backbone"].__setitem__(2, [-1, 3, "C4", [128]]),
     r"row 2 .*unknown module 'C4'; allowed: .*C3.*Conv.*SPPF"),
    (lambda d: d["backbone"].__setitem__(3, [5, 1, "Conv", [256, 3, 2]]),
     r"row 3 .*from index 5 does not name an earlier layer \(allowed: -3..-1 or 0..2\)"),
    (lambda d: d["backbone"].__setitem__(1, [-4, 1, "Conv", [128, 3, 2]]), r"row 1 .*from index -4"),
    (lambda d: d["backbone"].__setitem__(1, ["x", 1, "Conv", [128, 3, 2]]), r"row 1 .*from must be an int"),
    (lambda d: d["backbone"].__setitem__(1, [-1, 1, "Conv"]), r"row 1: expected \[from, number, module, args\]"),
    (lambda d: d["backbone"].__setitem__(1, [-1, 0, "Conv", [128, 3, 2]]), r"row 1 .*number must be a positive int"),
    (lambda d: d["backbone"].__setitem__(1, [-1, 9, "Conv", [128, 3, 2]]),
     r"row 1 .*number 9 repeats Conv, which needs one input and as many output channels as input"),
    (lambda d: d["backbone"].__setitem__(2, [-1, 3, "C3", [128, "yes"]]), r"row 2 .*shortcut must be True or False"),
    (lambda d: d["backbone"].__setitem__(1, [-1, 1, "Conv", []]), r"row 1 .*bad arguments for Conv"),
    (lambda d: d.__setitem__("anchors", 0), "an anchor count must be >= 1, found 0"),
    (lambda d: d.__setitem__("anchors", "many"), "anchors must be a list of per-level .* or a count"),
    (lambda d: d["anchors"].__setitem__(0, [10, 13, 16]), "even number of values"),
    (lambda d: d["head"].__setitem__(2, [[-1, 4], 1, "Concat", [1]]),
     r"layer 12 \(Concat\) joins inputs of different resolutions"),
    (lambda d: d["head"].pop(), "the last row must be Detect"),
    (lambda d: d.__setitem__("activation", "__import__('os').system('true')"), "activation .* is not supported"),
    (lambda d: d.__setitem__("activation", "nn.Softmax(1)"), "activation 'nn.Softmax\\(1\\)' is not supported"),
    (lambda d: d.__setitem__("activation", "nn.LeakyReLU(0.1, 0.2)"), "takes at most 1 numeric argument"),
])
def test_bad_yamls_name_the_problem(edit, message):
    with pytest.raises(ValueError, match=message):
        YOLOv5(_yaml_with(edit))


def test_a_count_of_classes_below_one_is_named():
    for nc in (0, -3, 2.5):
        with pytest.raises(ValueError, match=f"nc must be an int >= 1 \\(the number of classes\\), found {nc}"):
            YOLOv5("yolov5n", nc=nc)


def test_unknown_config_name_lists_shipped_ones():
    with pytest.raises(ValueError, match=r"'yolov9' is neither a file nor a shipped config; shipped: .*yolov5s"):
        YOLOv5("yolov9")


def test_yaml_dict_is_not_mutated():
    data = load_model_yaml("yolov5n")
    before = copy.deepcopy(data)
    YOLOv5(data, nc=5)
    assert data == before
