"""One block, one place: every block has its graph half (models/registry.py) and its slimming half
(slim/rules.py), and a user's own block registers in a few lines (the example the docstrings show)."""

import pytest
import torch
from model_support import kill_removed
from torch import nn

from yolo_slim.models import BlockType, YOLOv5, block_types, load_model_yaml, register_block, unregister_block
from yolo_slim.models.blocks import Conv
from yolo_slim.models.export import check_onnx, export_onnx
from yolo_slim.models.loss import LossConfig, YOLOv5Loss
from yolo_slim.models.testing import randomize_norms
from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint
from yolo_slim.slim import (SlimRule, compact, format_report, plan_pruning, register_slim_rule, report,
                            slim_rules, trace_channels, unregister_slim_rule)


def test_every_block_has_both_halves():
    # A block added to models/registry.py without a rule in slim/rules.py (or the reverse) fails here;
    # declare a block unprunable on purpose with register_slim_rule(name, WHOLE).
    assert set(block_types()) == set(slim_rules())


class Twin(nn.Module):
    """The docstrings' example: two Conv units side by side, concatenated."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.a = Conv(in_channels, out_channels // 2, 3)
        self.b = Conv(in_channels, out_channels - out_channels // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.a(x), self.b(x)), 1)


class PrunableTwin(Twin):
    """The same block with both widths as arguments, so that a plan can shrink each half."""

    def __init__(self, in_channels: int, a_channels: int, b_channels: int) -> None:
        nn.Module.__init__(self)
        self.a = Conv(in_channels, a_channels, 3)
        self.b = Conv(in_channels, b_channels, 1)


def _trace_twin(tracer, path, params, inputs):
    flat = [segment for source in inputs for segment in source]
    outputs = []
    for part in ("a", "b"):
        tracer.consume(f"{path}.{part}", flat)
        outputs.append(tracer.produce(f"{path}.{part}", params[f"{part}_channels"]))
    return outputs


@pytest.fixture()
def twin_blocks():
    register_block(BlockType("Twin", Twin, parse=lambda row: {"in_channels": row.in_channels,
                                                              "out_channels": row.width(row.args[0])}))
    width = {"a": lambda out: out // 2, "b": lambda out: out - out // 2}
    register_block(BlockType(
        "PrunableTwin", PrunableTwin,
        parse=lambda row: {"in_channels": row.in_channels,
                           **{f"{part}_channels": split(row.width(row.args[0])) for part, split in width.items()}},
        output_channels=lambda params, inputs: params["a_channels"] + params["b_channels"]))
    register_slim_rule("PrunableTwin", SlimRule(_trace_twin, resize=lambda params, path, widths: {
        **params, "a_channels": widths[f"{path}.a"], "b_channels": widths[f"{path}.b"]}))
    yield
    for name in ("Twin", "PrunableTwin"):
        unregister_block(name)
        unregister_slim_rule(name)


def _with_block(module: str) -> dict:
    data = load_model_yaml("yolov5n")
    data["backbone"][2] = [-1, 1, module, [128]]  # in place of the first C3 (stride 1, 32 channels at n)
    return data


def _train_one_step(model: YOLOv5) -> dict[str, torch.Tensor]:
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = YOLOv5Loss(model.detect.anchors, model.nc, LossConfig().scaled(3, model.nc, 64))
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.4], [1, 1, 0.3, 0.6, 0.2, 0.2]])
    loss, _ = loss_fn(model(torch.rand(2, 3, 64, 64)), targets)
    loss.backward()
    optimizer.step()
    return {name: (p.detach() - before[name]).abs().max() for name, p in model.named_parameters()}


def _assert_compact_is_exact(model: YOLOv5, ratio: float = 0.5) -> YOLOv5:
    plan = plan_pruning(model, ratio=ratio)
    kill_removed(model, plan)
    small = compact(model, plan).eval()
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(small(image), model.eval()(image), rtol=1e-5, atol=1e-4)
    rebuilt = YOLOv5.from_spec(small.spec, names=small.names)
    rebuilt.load_state_dict(small.state_dict(), strict=True)
    return small


def test_a_custom_block_with_a_rule_builds_trains_and_prunes_inside(twin_blocks):
    torch.manual_seed(0)
    model = YOLOv5(_with_block("PrunableTwin"), nc=2)
    assert isinstance(model.model[2], PrunableTwin) and model.spec.layers[2].params["a_channels"] == 16
    changes = _train_one_step(model)
    assert changes["model.2.a.conv.weight"] > 0 and changes["model.2.b.bn.weight"] > 0
    small = _assert_compact_is_exact(randomize_norms(model))
    assert small.model[2].a.conv.out_channels < 16 or small.model[2].b.conv.out_channels < 16
    assert not trace_channels(model.spec).whole_layers


def test_a_custom_block_without_a_rule_is_left_whole_and_named(twin_blocks, tmp_path):
    torch.manual_seed(0)
    model = YOLOv5(_with_block("Twin"), nc=2)
    changes = _train_one_step(model)
    assert changes["model.2.a.conv.weight"] > 0
    graph = trace_channels(model.spec)
    assert graph.whole_layers == {2: ("Twin at 2: no slimming rule registered, left whole",)}
    assert graph.groups["1"].frozen  # Twin's input keeps every channel
    assert not any(p.startswith("2.") for p in graph.producers())  # its BatchNorms are not ranked or penalised
    dense = randomize_norms(model)
    small = _assert_compact_is_exact(dense)
    assert small.model[3].conv.out_channels < dense.model[3].conv.out_channels  # pruned around it
    for name, tensor in small.model[2].state_dict().items():  # copied as it is
        torch.testing.assert_close(tensor, dense.model[2].state_dict()[name], rtol=0, atol=0)
    text = format_report(report(dense, small, imgsz=64))
    assert "layer 2: Twin at 2: no slimming rule registered, left whole" in text
    # Exported like any block; only ultralytics' format, which has no Twin, refuses it by name.
    assert check_onnx(small, export_onnx(small, tmp_path / "twin.onnx", imgsz=64), imgsz=64) < 1e-4
    with pytest.raises(TypeError, match="Twin has no ultralytics counterpart"):
        write_ultralytics_checkpoint(small, tmp_path / "twin.pt")


def test_names_are_taken_once_and_unknown_blocks_point_to_the_registry(twin_blocks):
    with pytest.raises(ValueError, match=r"block name\(s\) \['Conv'\] already registered"):
        register_block(BlockType("Conv", Twin, parse=lambda row: {}))
    with pytest.raises(ValueError, match="already has a slimming rule"):
        register_slim_rule("PrunableTwin", SlimRule(_trace_twin))
    with pytest.raises(ValueError, match=r"unknown module 'Triplet'.*register others with yolo_slim.models"):
        YOLOv5(_with_block("Triplet"))
    with pytest.raises(ValueError, match="built-in block"):
        unregister_block("C3")
