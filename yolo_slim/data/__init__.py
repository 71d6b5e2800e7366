"""Data: data.yaml parsing, label scanning, augmentations, the dataset and the DataModule.

``SyntheticConfig`` and ``ensure_synthetic_dataset`` are imported on first use (PEP 562), so
that the rest of the package does not depend on the synthetic generator being importable.
"""

from __future__ import annotations

from typing import Any

from yolo_slim.data.augment import AugmentConfig
from yolo_slim.data.datamodule import YOLODataModule
from yolo_slim.data.dataset import YOLODataset, collate
from yolo_slim.data.dataset_config import DataConfigError, DatasetConfig, load_dataset_config
from yolo_slim.data.labels import DataReport, ImageRecord, scan_split

_SYNTHETIC_NAMES = ("SyntheticConfig", "ensure_synthetic_dataset")

__all__ = [
    "AugmentConfig",
    "DataConfigError",
    "DataReport",
    "DatasetConfig",
    "ImageRecord",
    "SyntheticConfig",
    "YOLODataModule",
    "YOLODataset",
    "collate",
    "ensure_synthetic_dataset",
    "load_dataset_config",
    "scan_split",
]


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC_NAMES:
        from yolo_slim.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
