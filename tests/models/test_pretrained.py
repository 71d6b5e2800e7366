"""Starting from weights: a different nc keeps everything but the Detect output convs."""

import torch

from yolo_slim.models import YOLOv5, load_pretrained


def _save_yolo_slim_checkpoint(model: YOLOv5, path) -> None:
    torch.save({"yolo_slim": {"spec": model.spec.to_dict(), "names": model.names},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)


def test_other_nc_keeps_all_but_the_output_convs(tmp_path):
    source = YOLOv5("yolov5n", nc=80)
    _save_yolo_slim_checkpoint(source, tmp_path / "coco.ckpt")
    target = load_pretrained(tmp_path / "coco.ckpt", nc=3, names=["a", "b", "c"])
    assert target.nc == 3 and target.names == ["a", "b", "c"] and target.training
    source_state, target_state = source.state_dict(), target.state_dict()
    changed = [k for k in target_state if not torch.equal(target_state[k], source_state[k])
               if target_state[k].shape == source_state[k].shape]
    assert changed == []
    assert [k for k in target_state if target_state[k].shape != source_state[k].shape] == [
        f"model.24.m.{i}.{p}" for i in range(3) for p in ("weight", "bias")]


def test_same_nc_loads_everything(tmp_path):
    source = YOLOv5("yolov5n", nc=4)
    _save_yolo_slim_checkpoint(source, tmp_path / "run.ckpt")
    target = load_pretrained(tmp_path / "run.ckpt", nc=4)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
