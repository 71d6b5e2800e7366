"""YOLOv5 loss and target assignment on hand-made cases."""

import math

import pytest
import torch

from yolo_slim.models.loss import LossConfig, YOLOv5Loss

# One level, stride 8 on a 64x64 image: an 8x8 grid; two anchors of 2x2 and 6x3 cells.
ANCHORS = torch.tensor([[[2.0, 2.0], [6.0, 3.0]]])  # (nl=1, na=2, 2) in cells
CONFIG = LossConfig(balance=(1.0,))


def _maps(batch: int = 2, nc: int = 3, fill: float = 0.0) -> list[torch.Tensor]:
    return [torch.full((batch, 2, 8, 8, 5 + nc), fill, requires_grad=True)]


def _target(image: int, cls: int, cx_cells: float, cy_cells: float, w_cells: float, h_cells: float) -> list[float]:
    return [image, cls, cx_cells / 8, cy_cells / 8, w_cells / 8, h_cells / 8]


def test_target_goes_to_its_cell_and_the_two_nearest_neighbours():
    loss = YOLOv5Loss(ANCHORS, nc=3, config=CONFIG)
    # centre at (3.3, 4.7) cells: left half in x -> left neighbour; lower half in y -> cell below.
    targets = torch.tensor([_target(1, 2, 3.3, 4.7, 2.0, 2.0)])
    image, anchor, cell_y, cell_x, box, cls, anchor_wh = loss._assign(0, _maps()[0], targets)
    # 2x2 matches anchor 0 (ratio 1) and anchor 1 (ratios 3 and 1.5 < 4): 3 cells each.
    assert sorted(zip(anchor.tolist(), cell_x.tolist(), cell_y.tolist())) == [
        (0, 2, 4), (0, 3, 4), (0, 3, 5), (1, 2, 4), (1, 3, 4), (1, 3, 5)]
    assert image.tolist() == [1] * 6 and cls.tolist() == [2] * 6
    # Box offsets are relative to the assigned cell's corner: in [-0.5, 1.5).
    for (x, y, w, h), cx, cy in zip(box.tolist(), cell_x.tolist(), cell_y.tolist()):
        assert x == pytest.approx(3.3 - cx, abs=1e-5) and y == pytest.approx(4.7 - cy, abs=1e-5)
        assert (w, h) == pytest.approx((2.0, 2.0))
    assert anchor_wh.tolist().count([6.0, 3.0]) == 3


def test_anchor_ratio_threshold():
    loss = YOLOv5Loss(ANCHORS, nc=3, config=CONFIG)
    # 7x1.4 cells: against 2x2 the width ratio is 3.5 (<4) ok; against 6x3 the height ratio is 2.1: both match.
    # 0.4x0.4: ratio 5 to anchor 0 and 15 to anchor 1: no match at all.
    targets = torch.tensor([_target(0, 0, 4.5, 4.5, 7.0, 1.4), _target(0, 1, 2.5, 2.5, 0.4, 0.4)])
    _, anchor, _, _, _, cls, _ = loss._assign(0, _maps()[0], targets)
    assert set(cls.tolist()) == {0}
    assert sorted(set(anchor.tolist())) == [0, 1]


def test_no_neighbour_beyond_the_border():
    loss = YOLOv5Loss(ANCHORS, nc=3, config=CONFIG)
    targets = torch.tensor([_target(0, 0, 0.3, 0.2, 2.0, 2.0)])  # first cell, left/top halves
    _, anchor, cell_y, cell_x, _, _, _ = loss._assign(0, _maps()[0], targets)
    assert set(zip(cell_x.tolist(), cell_y.tolist())) == {(0, 0)}


def _logit(probability: float) -> float:
    return math.log(probability / (1 - probability))


def test_perfect_box_has_no_box_loss_and_full_objectness_target():
    loss = YOLOv5Loss(ANCHORS[:, :1], nc=3, config=CONFIG)  # one anchor of 2x2 cells
    # A 2x2-cell box centred at (3.5, 4.5): sigmoid(x)*2 - 0.5 = 0.5 needs sigmoid 0.5 (logit 0),
    # and (2 sigmoid(w))^2 * 2 = 2 needs sigmoid(w) = 0.5.
    raw = torch.full((1, 1, 8, 8, 8), -20.0)
    raw[0, 0, :, :, 0:4] = 0.0
    raw.requires_grad_(True)
    targets = torch.tensor([_target(0, 1, 3.5, 4.5, 2.0, 2.0)])
    total, parts = loss([raw], targets)
    assert parts[0].item() == pytest.approx(0.0, abs=1e-6)
    total.backward()
    # Objectness target 1 at the positive cell: its gradient pushes the logit up (negative grad).
    assert raw.grad[0, 0, 4, 3, 4] < 0
    # Class target one-hot: the true class is pushed up, the others down.
    assert raw.grad[0, 0, 4, 3, 6] < 0 < raw.grad[0, 0, 4, 3, 5] + 1e-12


def test_empty_targets_only_objectness():
    loss = YOLOv5Loss(ANCHORS, nc=3, config=CONFIG)
    maps = _maps(fill=0.0)
    total, parts = loss(maps, torch.zeros((0, 6)))
    assert parts[0] == 0 and parts[2] == 0
    assert parts[1].item() == pytest.approx(math.log(2), rel=1e-5)  # BCE of logit 0 against 0
    assert total.item() == pytest.approx(2 * math.log(2), rel=1e-5)  # times the batch size
    total.backward()
    assert maps[0].grad is not None


def test_single_class_has_no_class_loss():
    loss = YOLOv5Loss(ANCHORS, nc=1, config=CONFIG)
    _, parts = loss(_maps(nc=1), torch.tensor([_target(0, 0, 4.5, 4.5, 2.0, 2.0)]))
    assert parts[2] == 0 and parts[0] > 0


def test_gains_scale_like_ultralytics():
    scaled = LossConfig().scaled(num_levels=3, nc=4, imgsz=160)
    assert scaled.box == pytest.approx(0.05)
    assert scaled.cls == pytest.approx(0.5 * 4 / 80)
    assert scaled.obj == pytest.approx((160 / 640) ** 2)
    assert LossConfig().scaled(4, 80, 640).balance == (4.0, 1.0, 0.25, 0.06)


def test_loss_config_validation():
    with pytest.raises(ValueError, match="loss.anchor_t must be > 1"):
        LossConfig(anchor_t=0.5)
    with pytest.raises(ValueError, match=r"loss.label_smoothing must be in \[0, 1\)"):
        LossConfig(label_smoothing=1.0)


@pytest.mark.parametrize("balance", ["abc", (), (4.0, -1.0, 0.4), (4.0, float("nan"), 0.4), ("4", 1.0, 0.4), (True,)])
def test_a_balance_that_is_not_a_list_of_weights_is_refused(balance):
    with pytest.raises(ValueError, match="loss.balance must be a list of numbers >= 0"):
        LossConfig(balance=balance)


def test_balance_takes_one_weight_per_level():
    assert LossConfig(balance=(2.0, 1.0, 0.5, 0.1)).scaled(4, 80, 640).balance == (2.0, 1.0, 0.5, 0.1)
    assert LossConfig(balance=[3.0, 1.0, 0.5]).scaled(3, 80, 640).balance == (3.0, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"loss.balance needs one weight per detection level \(3 for this model\)"):
        LossConfig(balance=(4.0, 1.0)).scaled(3, 80, 640)
    with pytest.raises(ValueError, match=r"\(4 for this model\), found \[3.0, 1.0, 0.5\]"):
        LossConfig(balance=(3.0, 1.0, 0.5)).scaled(4, 80, 640)  # not the default: the user meant it


def test_the_loss_is_made_on_its_anchors_device():
    # After a prune the module builds a new loss from the network's anchors, on the GPU, and Lightning
    # does not move it: every tensor it uses per step must start there (the meta device stands in).
    loss = YOLOv5Loss(ANCHORS.to("meta"), nc=3, config=CONFIG)
    assert {buffer.device.type for buffer in loss.buffers()} == {"meta"}
