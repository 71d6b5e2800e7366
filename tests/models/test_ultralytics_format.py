"""The ultralytics release layout (export format=ultralytics): read back exactly, only allowed class paths, and
a forward the way ultralytics' own classes run it (stand-ins written here, no ultralytics install)."""

from __future__ import annotations

import pickle
import pickletools
import types
import zipfile

import pytest
import torch
from torch import nn

from yolo_slim.models import YOLOv5, load_pretrained, load_yolov5, parse_model_yaml
from yolo_slim.models.checkpoint import network_from_checkpoint, read_checkpoint
from yolo_slim.models.testing import randomize_norms
from yolo_slim.models.ultralytics_format import UNBUILDABLE_MODULE, ultralytics_yaml, write_ultralytics_checkpoint
from yolo_slim.slim import compact, plan_pruning


def _pruned(cfg: str) -> YOLOv5:
    torch.manual_seed(0)
    model = randomize_norms(YOLOv5(cfg, nc=3, names=["a", "b", "c"]))  # uneven γ: each group cut differently
    return compact(model, plan_pruning(model, ratio=0.5, round_to=1, min_channels=4)).eval()


@pytest.fixture(scope="module")
def pruned() -> YOLOv5:
    return _pruned("yolov5n")


def _globals_in(path) -> set[str]:
    """Every class or function the file's pickle names (GLOBAL and STACK_GLOBAL opcodes)."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(argument)
        elif opcode.name == "GLOBAL":
            found.add(argument.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
    return found


def test_a_pruned_model_reads_back_exactly(pruned, tmp_path):
    path = write_ultralytics_checkpoint(pruned, tmp_path / "pruned.pt", half=False)
    loaded = load_yolov5(path)
    assert loaded.spec == pruned.spec and loaded.names == pruned.names
    assert loaded.pruning_history == pruned.pruning_history and len(loaded.pruning_history) == 1
    expected = pruned.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())
    # model.weights= (load_pretrained) starts training from it, pruned widths kept, also for new classes.
    assert load_pretrained(path).spec == pruned.spec
    retargeted = load_pretrained(path, nc=5)
    assert retargeted.nc == 5 and retargeted.model[0].conv.weight.shape == pruned.model[0].conv.weight.shape


def test_release_layout_fp16_by_default_and_only_allowed_class_paths(pruned, tmp_path):
    path = write_ultralytics_checkpoint(pruned, tmp_path / "pruned.pt")
    content = read_checkpoint(path)
    assert {"epoch", "best_fitness", "model", "ema", "updates", "optimizer"} <= set(content)
    assert content["epoch"] == -1 and content["ema"] is None and content["optimizer"] is None
    model = content["model"]
    assert model.qualified_name == "models.yolo.DetectionModel"
    assert model.nc == 3 and model.names == {0: "a", 1: "b", 2: "c"} and model.stride.tolist() == [8, 16, 32]
    first_conv = model._modules["model"]._modules["0"]._modules["conv"]
    assert first_conv._parameters["weight"].dtype == torch.float16
    names = _globals_in(path)
    assert {"models.yolo.DetectionModel", "models.yolo.Detect", "models.common.Conv", "models.common.C3",
            "models.common.Bottleneck", "models.common.SPPF", "models.common.Concat"} <= names
    allowed_prefixes = ("models.yolo.", "models.common.", "torch.nn.modules.", "torch._utils.", "torch.")
    allowed = {"collections.OrderedDict", "__builtin__.set", "builtins.set"}
    assert all(n in allowed or n.startswith(allowed_prefixes) for n in names), names
    assert not any("yolo_slim" in n for n in names)
    half_loaded = load_yolov5(path)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(half_loaded(image), pruned(image), atol=0.05)  # fp16 weights: close, not equal


def test_fitted_anchors_survive_an_fp16_file_exactly(tmp_path):
    # AutoAnchor's anchors are any floats; in fp16 10.37 would become 10.375 and the file another model.
    model = YOLOv5("yolov5n", nc=3).eval()
    fitted = torch.tensor([[10.37, 13.11], [16.03, 30.29], [33.33, 23.17], [30.71, 61.13], [62.21, 45.09],
                           [59.37, 119.3], [116.9, 90.13], [156.7, 198.1], [373.3, 326.9]])
    model.set_anchors(fitted)
    assert not torch.equal(model.detect.anchors.half().float(), model.detect.anchors)  # the case fp16 rounds
    path = write_ultralytics_checkpoint(model, tmp_path / "fitted.pt")  # half=True, the default
    assert load_yolov5(path).spec == model.spec
    stored = read_checkpoint(path)["model"]._modules["model"]._modules[str(len(model.model) - 1)]
    assert stored._buffers["anchors"].dtype == torch.float32
    assert stored._modules["m"]._modules["0"]._parameters["weight"].dtype == torch.float16
    theirs = _load_as_theirs(path)
    assert torch.equal(theirs.model[-1].anchors, model.detect.anchors)


def test_the_yaml_rebuilds_a_dense_model_and_refuses_a_pruned_one(pruned):
    dense = YOLOv5("yolov5s-v5", nc=3)
    rows = ultralytics_yaml(dense)
    assert parse_model_yaml(rows) == dense.spec  # ultralytics' parse_model (which ours follows) rebuilds it
    pruned_rows = ultralytics_yaml(pruned)
    assert pruned_rows["backbone"][0][2] == UNBUILDABLE_MODULE and pruned_rows["head"] == []
    with pytest.raises(ValueError, match="unknown module"):
        parse_model_yaml(pruned_rows)
    assert pruned_rows["yolo_slim"]["spec"] == pruned.spec.to_dict()


# --- ultralytics' classes as their code runs them: what their forward, _forward_once and Detect read ---------

class _Conv(nn.Module):
    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class _Focus(nn.Module):
    def forward(self, x):
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class _Bottleneck(nn.Module):
    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class _C3(nn.Module):
    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class _SPP(nn.Module):
    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class _SPPF(nn.Module):
    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class _Concat(nn.Module):
    def forward(self, x):
        return torch.cat(x, self.d)


class _Detect(nn.Module):
    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
            xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + self.grid[i]) * self.stride[i]
            wh = (wh * 2) ** 2 * self.anchor_grid[i]
            z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return torch.cat(z, 1), x

    def _make_grid(self, nx, ny, i):
        shape = 1, self.na, ny, nx, 2
        y, x = torch.arange(ny, dtype=self.anchors.dtype), torch.arange(nx, dtype=self.anchors.dtype)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        return grid, (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)


class _DetectionModel(nn.Module):
    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


_THEIRS = {("models.common", "Conv"): _Conv, ("models.common", "Focus"): _Focus,
           ("models.common", "Bottleneck"): _Bottleneck, ("models.common", "C3"): _C3,
           ("models.common", "SPP"): _SPP, ("models.common", "SPPF"): _SPPF, ("models.common", "Concat"): _Concat,
           ("models.yolo", "Detect"): _Detect, ("models.yolo", "DetectionModel"): _DetectionModel}


class _TheirUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _THEIRS.get((module, name)) or super().find_class(module, name)


def _load_as_theirs(path) -> nn.Module:
    pickle_module = types.SimpleNamespace(Unpickler=_TheirUnpickler, load=pickle.load, __name__="theirs")
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)["model"].float().eval()


@pytest.mark.parametrize("cfg", ["yolov5n", "yolov5n-v5"])
@pytest.mark.parametrize("prune", [False, True], ids=["dense", "pruned"])
def test_their_forward_gives_our_predictions(cfg, prune, tmp_path):
    ours = _pruned(cfg) if prune else YOLOv5(cfg, nc=3).eval()
    theirs = _load_as_theirs(write_ultralytics_checkpoint(ours, tmp_path / "model.pt", half=False))
    assert type(theirs.model[-1]) is _Detect and isinstance(theirs.model, nn.Sequential)
    for height, width in ((64, 64), (96, 128)):
        image = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            predictions, maps = theirs(image)
            expected = ours(image)
        assert len(maps) == 3
        assert (predictions - expected).abs().max() < 1e-4


def test_a_file_their_train_py_retrained_for_other_classes_loads_with_its_new_head(tmp_path):
    # Their train.py --weights OURS.pt --data OTHER.yaml rebuilds from the yaml with yaml["nc"] set to the
    # new class count and a new head, and saves the yaml with our spec entry left as it was.
    ours = YOLOv5("yolov5n", nc=3).eval()
    path = write_ultralytics_checkpoint(ours, tmp_path / "ours.pt", half=False)
    content = read_checkpoint(path)
    stored = content["model"]
    stored.yaml["nc"] = 5
    stored.names = {i: f"class{i}" for i in range(5)}
    detect = stored._modules["model"]._modules[str(len(ours.model) - 1)]
    detect.nc, detect.no = 5, 10
    generator = torch.Generator().manual_seed(0)
    for conv in detect._modules["m"]._modules.values():
        weight = conv._parameters["weight"]
        conv._parameters["weight"] = torch.randn(3 * 10, weight.shape[1], 1, 1, generator=generator)
        conv._parameters["bias"] = torch.randn(3 * 10, generator=generator)
    model = network_from_checkpoint(content, path)  # what load_yolov5 does with the file's content
    assert model.nc == 5 and model.names == [f"class{i}" for i in range(5)]
    assert torch.equal(model.detect.m[0].bias, detect._modules["m"]._modules["0"]._parameters["bias"])
    assert torch.equal(model.model[0].conv.weight, ours.model[0].conv.weight)  # the backbone is the file's
