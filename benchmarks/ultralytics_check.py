"""Does ultralytics' own, unmodified code load what ``export format=ultralytics`` writes? A check that prints a table.

Not part of the test suite (yolo_slim must not depend on ultralytics): run it in a scratch environment
that has both packages, set up as for ``benchmarks/compare_reference.py``::

    python -m venv --system-site-packages /tmp/refenv
    /tmp/refenv/bin/pip install --no-deps yolov5==7.0.14 thop
    /tmp/refenv/bin/pip install pandas seaborn opencv-python-headless psutil onnxscript "numpy<2.4"
    # offline stand-ins for its online-only imports (ultralytics' check_requirements, the Hugging Face
    # Hub, Roboflow, pkg_resources where missing) and the font its plots download:
    python benchmarks/ultralytics_stubs.py /tmp/ultralytics-stubs
    PYTHONPATH=/tmp/ultralytics-stubs:. /tmp/refenv/bin/python benchmarks/ultralytics_check.py \
        [--dense A.ckpt --pruned B.ckpt]

Their v7.0 code predates numpy 2.4 (``np.trapz``) and torch's dynamo ONNX exporter (which needs
onnxscript), hence the two extra pins above.

What it checks:

1. Predictions: for a dense and a pruned model of both generations (yolov5n, yolov5n-v5) and of the hub
   layouts with blocks of their own (LeakyReLU, ghost, transformer, yolov3-tiny, yolov3 narrowed; the pruned
   ones cut with uneven random γ so every group loses a different share), the fp32 file loaded by
   their ``attempt_load`` gives the predictions of yolo_slim's model (unfused, and fused as their
   detect/val run it).
2. ``val.py`` and ``export.py --include onnx torchscript``, their scripts run as subprocesses on
   the fp16 files ``python -m yolo_slim export ckpt=... format=ultralytics`` writes from two trained
   yolo_slim checkpoints (``--dense``, ``--pruned``; skipped without them), on the built-in
   synthetic validation set in YOLO layout; yolo_slim's own ``val`` on the same files and data beside
   their mAP.
3. Their ``detect.py`` and ``val.py`` on the ONNX file ``python -m yolo_slim export ckpt=... format=onnx
   half=false`` writes (their ``DetectMultiBackend`` reads its stride and class names from the file's
   metadata; fp32, since their CPU path feeds fp32 images).

torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``, which refuses every whole-model
``.pt``, ultralytics' own releases included; their v7.0 code predates that, so it runs here with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, as users of it on a recent torch must.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # before torch is imported anywhere

import torch  # noqa: E402

from yolo_slim import YOLOv5  # noqa: E402
from yolo_slim.models import count_parameters, load_model_yaml  # noqa: E402
from yolo_slim.models.testing import randomize_norms  # noqa: E402
from yolo_slim.models.ultralytics_format import write_ultralytics_checkpoint  # noqa: E402
from yolo_slim.slim import compact, plan_pruning  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
THEIRS = Path(sysconfig.get_paths()["purelib"]) / "yolov5"  # the scripts of the PyPI package, unchanged


def _pruned(cfg: str | dict) -> YOLOv5:
    torch.manual_seed(0)
    model = randomize_norms(YOLOv5(cfg, nc=3))
    return compact(model, plan_pruning(model, ratio=0.5, round_to=8, min_channels=8)).eval()


def _narrowed(name: str, width: float) -> dict:
    """A shipped layout at another width multiple (yolov3's 62M parameters are slow to write and run on CPU)."""
    data = load_model_yaml(name)
    data["width_multiple"] = width
    return data


# Both generations, and the hub layouts whose blocks only they use: the activation key, Ghost and
# transformer blocks, MaxPool2d / ZeroPad2d rows, repeated Bottleneck rows.
LAYOUTS = {"yolov5n": "yolov5n", "yolov5n-v5": "yolov5n-v5", "yolov5s-LeakyReLU": "yolov5s-LeakyReLU",
           "yolov5s-ghost": "yolov5s-ghost", "yolov5s-transformer": "yolov5s-transformer", "yolov3-tiny": "yolov3-tiny"}


def predictions(folder: Path) -> None:
    from yolov5.models.experimental import attempt_load

    from yolov5.models.yolo import DetectionModel

    print("| model | params | their attempt_load + forward vs ours, max abs (fuse=False) | (fuse=True, as detect/val "
          "load it) | Conv layers their fuse() folded | their DetectionModel(ckpt['model'].yaml), as train.py "
          "--weights and the TF exports rebuild it |")
    print("|---|---:|---:|---:|---:|---|")
    layouts: dict[str, str | dict] = {**LAYOUTS, "yolov3 (width 0.25)": _narrowed("yolov3", 0.25)}
    for label, cfg in layouts.items():
        for kind in ("dense", "pruned"):
            torch.manual_seed(1)
            ours = YOLOv5(cfg, nc=3).eval() if kind == "dense" else _pruned(cfg)
            path = write_ultralytics_checkpoint(ours, folder / f"{label.split()[0]}-{kind}.pt", half=False)
            image = torch.rand(2, 3, 320, 256, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                expected = ours(image)
                unfused = attempt_load(str(path), device="cpu", fuse=False)(image)[0]
                fused_model = attempt_load(str(path), device="cpu", fuse=True)
                fused = fused_model(image)[0]
            # Their fuse() folds only the Conv class its own module imported: the PyPI package imports
            # yolov5.models.common, a file naming models.common (as their releases do) is run unfolded.
            convs = [m for m in fused_model.modules() if type(m).__name__ == "Conv"]
            folded = sum(not hasattr(m, "bn") for m in convs)
            try:
                rebuilt = DetectionModel(unfused_model_yaml(path), nc=3)
                shapes = {k: v.shape for k, v in rebuilt.state_dict().items()}
                same = shapes == {k: v.shape for k, v in ours.state_dict().items()}
                rebuild = "builds the same architecture" if same else "builds ANOTHER architecture"
            except Exception as error:  # noqa: BLE001 - what their code raises is the figure
                rebuild = f"refused: {type(error).__name__}: {error}"
            print(f"| {label} {kind} | {count_parameters(ours):,} | {(unfused - expected).abs().max():.1e} | "
                  f"{(fused - expected).abs().max():.1e} | {folded} of {len(convs)} | {rebuild} |", flush=True)


def unfused_model_yaml(path: Path) -> dict:
    """The ``yaml`` attribute of the model pickled in ``path``, as their loader sees it."""
    return torch.load(path, map_location="cpu", weights_only=False)["model"].yaml


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # yolo_slim first, then the caller's path (the stubs for their online-only imports live there).
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": path})


def their_tools(checkpoints: dict[str, Path], data: Path, imgsz: int, folder: Path) -> None:
    print("\n| checkpoint | exported .pt | their detect.py --save-txt on the val images | their val.py mAP50 / "
          "mAP50-95 | yolo_slim val on the .pt | their export.py --include onnx torchscript | our .onnx: their "
          "detect.py | our .onnx: their val.py mAP50 / mAP50-95 |")
    print("|---|---|---|---:|---:|---|---|---:|")
    for kind, checkpoint in checkpoints.items():
        exported = folder / f"{kind}.pt"
        result = _run([sys.executable, "-m", "yolo_slim", "export", f"ckpt={checkpoint}", "format=ultralytics",
                       f"output={exported}"], ROOT)
        if result.returncode:
            raise SystemExit(f"yolo_slim export failed:\n{result.stderr[-3000:]}")
        detect_text = _their_detect(exported, data, imgsz, folder, kind)
        theirs = _their_val(exported, data, imgsz, folder, kind)
        ours_run = _run([sys.executable, "-m", "yolo_slim", "val", f"ckpt={exported}", f"data.path={data}",
                         f"data.imgsz={imgsz}", "data.workers=0"], folder)
        ours = json.loads(ours_run.stdout[ours_run.stdout.index("{"):]) if ours_run.returncode == 0 else None
        ours_text = f"{ours['map50']:.3f} / {ours['map']:.3f}" if ours else f"failed ({ours_run.stderr[-200:]})"
        export = _run([sys.executable, str(THEIRS / "export.py"), "--weights", str(exported), "--include", "onnx",
                       "torchscript", "--imgsz", str(imgsz), "--device", "cpu"], folder)
        written = [suffix for suffix in (".onnx", ".torchscript") if exported.with_suffix(suffix).is_file()]
        # Their export.py reports a format's failure in its log and still exits 0: name the missing files
        # and quote its own failure line.
        log_lines = (export.stderr + export.stdout).splitlines()
        failures = [line.split("export failure")[-1].strip(" ❌") for line in log_lines if "export failure" in line]
        missing = [suffix for suffix in (".onnx", ".torchscript") if suffix not in written]
        export_text = ("succeeded: " + ", ".join(written)) if export.returncode == 0 and not missing else \
            f"failed (exit {export.returncode}, no {', '.join(missing) or 'file missing'}): " \
            f"{'; '.join(failures) or (export.stderr or export.stdout).strip().splitlines()[-1]}"
        onnx_file = folder / f"{kind}-ours.onnx"
        result = _run([sys.executable, "-m", "yolo_slim", "export", f"ckpt={checkpoint}", "format=onnx", "half=false",
                       f"imgsz={imgsz}", f"output={onnx_file}"], ROOT)
        if result.returncode:
            onnx_detect = onnx_val = f"yolo_slim export failed: {result.stderr.strip().splitlines()[-1]}"
        else:
            onnx_detect = _their_detect(onnx_file, data, imgsz, folder, f"{kind}-onnx")
            onnx_val = _their_val(onnx_file, data, imgsz, folder, f"{kind}-onnx")
        print(f"| {checkpoint} ({kind}) | {exported.stat().st_size / 1e6:.2f} MB fp16 | {detect_text} | {theirs} | "
              f"{ours_text} | {export_text} | {onnx_detect} | {onnx_val} |", flush=True)


def _their_detect(weights: Path, data: Path, imgsz: int, folder: Path, name: str) -> str:
    """Their detect.py --save-txt on the validation images: how many images got boxes, and how many boxes."""
    detect = _run([sys.executable, str(THEIRS / "detect.py"), "--weights", str(weights), "--source",
                   str(Path(data).parent / "images" / "val"), "--imgsz", str(imgsz), "--device", "cpu",
                   "--save-txt", "--nosave", "--project", str(folder / "detect"), "--name", name], folder)
    labels = list((folder / "detect" / name / "labels").glob("*.txt"))
    boxes = sum(len(label.read_text().splitlines()) for label in labels)
    return f"{len(labels)} images with boxes, {boxes} boxes" if detect.returncode == 0 else \
        f"failed: {(detect.stderr or detect.stdout).strip().splitlines()[-1]}"


def _their_val(weights: Path, data: Path, imgsz: int, folder: Path, name: str) -> str:
    """Their val.py's mAP50 / mAP50-95 line on ``data``."""
    val = _run([sys.executable, str(THEIRS / "val.py"), "--weights", str(weights), "--data", str(data),
                "--imgsz", str(imgsz), "--batch-size", "16", "--device", "cpu", "--workers", "0",
                "--project", str(folder / "val"), "--name", name], folder)
    row = re.search(r"^\s+all\s+\d+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", val.stdout + val.stderr,
                    re.MULTILINE)
    return f"{float(row.group(3)):.3f} / {float(row.group(4)):.3f}" if row else \
        f"failed: {(val.stderr or val.stdout).strip().splitlines()[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=Path, help="a trained dense yolo_slim checkpoint")
    parser.add_argument("--pruned", type=Path, help="a trained pruned yolo_slim checkpoint")
    parser.add_argument("--data", type=Path, help="data.yaml (default: the built-in synthetic set)")
    parser.add_argument("--imgsz", type=int, default=160)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        predictions(folder)
        checkpoints = {kind: path for kind, path in (("dense", args.dense), ("pruned", args.pruned)) if path}
        if checkpoints:
            from yolo_slim.data.synthetic import ensure_synthetic_dataset

            their_tools(checkpoints, args.data or ensure_synthetic_dataset(), args.imgsz, folder)


if __name__ == "__main__":
    main()
