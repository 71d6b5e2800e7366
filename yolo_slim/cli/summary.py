"""``summary.json``: what a run produced, per stage (train, later pruned and finetuned)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

from yolo_slim.files import write_text_atomically
from yolo_slim.lit.module import YOLOv5Module
from yolo_slim.models.info import count_gflops, count_parameters


def stage_metrics(trainer: L.Trainer, module: YOLOv5Module, datamodule: L.LightningDataModule, imgsz: int,
                  ckpt_path: str | None = None) -> dict[str, Any]:
    """Validate (the given checkpoint's weights, or the module's) and measure the network's size."""
    results = trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0]
    network = module.inference_model
    return {"map50": float(results["val/map50"]), "map": float(results["val/map"]),
            "params": count_parameters(network), "gflops": round(count_gflops(network, imgsz), 4)}


def write_summary(run_dir: Path, *, model: str, imgsz: int, data: str, stages: dict[str, dict[str, Any]],
                  checkpoint: str | None, prune: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/summary.json`` and return its path.

    ``prune``: the slimming settings in force (SlimCallback's, defaults resolved), when there were any.
    """
    path = Path(run_dir) / "summary.json"
    content = {"model": model, "imgsz": imgsz, "data": data, "stages": stages, "checkpoint": checkpoint}
    if prune is not None:
        content["prune"] = prune
    write_text_atomically(path, json.dumps(content, indent=2) + "\n")  # a sweep reads it as the job ends
    return path
