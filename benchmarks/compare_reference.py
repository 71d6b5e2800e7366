"""Cross-check yolo_slim's YOLOv5 against ultralytics' own implementation (PyPI ``yolov5==7.0.14``).

Not part of the test suite: yolo_slim must not depend on ultralytics. Run it in a scratch
environment that has both packages (``yolov5`` imports ``ultralytics.utils.checks.check_requirements``;
a stub of that one function is enough), e.g.::

    python -m venv --system-site-packages /tmp/refenv
    /tmp/refenv/bin/pip install --no-deps yolov5==7.0.14 thop && /tmp/refenv/bin/pip install pandas seaborn opencv-python-headless psutil
    /tmp/refenv/bin/python benchmarks/compare_reference.py

For every shipped config (both generations: ultralytics 7.0 still builds Focus and SPP) it builds
ultralytics' ``DetectionModel`` from our yaml file, moves its weights into our ``YOLOv5`` and back
with ``strict=True``, and prints the largest difference of the eval-mode outputs on random images
(square and not), the parameter counts, and our GFLOPs next to theirs. With ``--checkpoint`` it also
writes a real ultralytics fp16 checkpoint (the whole model pickled, as a release ``.pt``) and reads it
back with ``load_yolov5``.
"""

from __future__ import annotations

import argparse
import tempfile
from copy import deepcopy
from importlib import resources
from pathlib import Path

import torch

from yolo_slim import YOLOv5, load_yolov5
from yolo_slim.models import count_gflops, count_parameters, shipped_configs


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float(((ours - theirs).abs() / theirs.abs().clamp_min(1e-6)).max())


def compare(name: str, sizes: list[tuple[int, int]], check_checkpoint: bool) -> None:
    from yolov5.models.common import Conv
    from yolov5.models.yolo import DetectionModel

    yaml_path = resources.files("yolo_slim.models") / "configs" / f"{name}.yaml"
    torch.manual_seed(0)
    # Their parse_model sets the yaml's activation as a class attribute of Conv, which stays for every
    # later model of the process: reset to their default before each build.
    Conv.default_act = torch.nn.SiLU()
    theirs = DetectionModel(str(yaml_path), ch=3, nc=80).eval()
    ours = YOLOv5(name, nc=80).eval()
    # Our own build's anchors (grid units, level order) before theirs are loaded over them.
    anchors_equal = torch.equal(ours.detect.anchors, theirs.model[-1].anchors)
    keys_equal = list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    Conv.default_act = torch.nn.SiLU()
    DetectionModel(str(yaml_path), ch=3, nc=80).load_state_dict(ours.state_dict(), strict=True)
    worst_abs, worst_rel = 0.0, 0.0
    largest = int(max(ours.spec.downsampling()))  # P6 / P7 layouts need multiples of 64 / 128

    def fit(length: int) -> int:
        return -(-length // largest) * largest

    sizes = [(fit(h), fit(w)) for h, w in sizes]
    for height, width in sizes:
        image = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height + width))
        with torch.no_grad():
            expected = theirs(image)[0]
            got = ours(image)
        assert got.shape == expected.shape, (got.shape, expected.shape)
        worst_abs = max(worst_abs, float((got - expected).abs().max()))
        worst_rel = max(worst_rel, _relative_error(got, expected))
    # Training-mode maps: BN uses batch statistics in both, so they must agree too.
    image = torch.rand(2, 3, fit(128), fit(160), generator=torch.Generator().manual_seed(1))
    theirs_train, ours_train = deepcopy(theirs).train(), deepcopy(ours).train()
    train_diff = max(float((a - b).abs().max()) for a, b in zip(ours_train(image), theirs_train(image)))
    line = (f"{name:<20} keys in order {keys_equal}  params ours {count_parameters(ours):>11,} theirs {sum(p.numel() for p in theirs.parameters()):>11,}"
            f"  GFLOPs@640 ours {count_gflops(ours, 640):7.2f}  eval max|diff| {worst_abs:.2e} max rel {worst_rel:.2e}"
            f"  train max|diff| {train_diff:.2e}  anchors equal {anchors_equal}")
    if check_checkpoint:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.pt"
            torch.save({"model": deepcopy(theirs).half(), "ema": None, "updates": None, "optimizer": None,
                        "epoch": -1, "date": "reference"}, path)
            loaded = load_yolov5(path)
            half_theirs = deepcopy(theirs).half().float()
            image = torch.rand(1, 3, fit(320), fit(320), generator=torch.Generator().manual_seed(7))
            with torch.no_grad():
                ckpt_diff = float((loaded(image) - half_theirs(image)[0]).abs().max())
        line += f"  fp16 .pt via load_yolov5 max|diff| {ckpt_diff:.2e}"
    print(line, flush=True)


def compare_loss(nc: int = 5, imgsz: int = 256, num_targets: int = 40) -> None:
    """Our YOLOv5Loss against ultralytics' ComputeLoss on the same raw maps and random targets."""
    from yolov5.models.yolo import DetectionModel
    from yolov5.utils.loss import ComputeLoss

    from yolo_slim.models.loss import LossConfig, YOLOv5Loss

    torch.manual_seed(0)
    theirs = DetectionModel(str(resources.files("yolo_slim.models") / "configs" / "yolov5n.yaml"), nc=nc).train()
    config = LossConfig().scaled(3, nc, imgsz)
    theirs.hyp = {"box": config.box, "obj": config.obj, "cls": config.cls, "anchor_t": config.anchor_t,
                  "cls_pw": 1.0, "obj_pw": 1.0, "fl_gamma": 0.0, "label_smoothing": 0.0}
    maps = theirs(torch.rand(4, 3, imgsz, imgsz))
    targets = torch.cat([torch.randint(0, 4, (num_targets, 1)).float(), torch.randint(0, nc, (num_targets, 1)).float(),
                         torch.rand(num_targets, 2) * 0.9 + 0.05, torch.rand(num_targets, 2) * 0.5 + 0.01], 1)
    expected, expected_parts = ComputeLoss(theirs)(maps, targets)
    got, got_parts = YOLOv5Loss(theirs.model[-1].anchors, nc, config)(maps, targets)
    grads_expected = torch.autograd.grad(expected, maps, retain_graph=True)
    grads_got = torch.autograd.grad(got, maps)
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(grads_got, grads_expected))
    print(f"loss ours {got.item():.8f} theirs {expected.item():.8f}  parts max|diff| "
          f"{float((got_parts - expected_parts).abs().max()):.2e}  gradient max|diff| {grad_diff:.2e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=shipped_configs())
    parser.add_argument("--checkpoint", action="store_true", help="also round-trip a real ultralytics .pt")
    args = parser.parse_args()
    sizes = [(320, 320), (256, 416), (640, 480)]
    for name in args.configs:
        compare(name, sizes, args.checkpoint)
    compare_loss()


if __name__ == "__main__":
    main()
