"""The Lightning DataModule: data.yaml (or the built-in synthetic set) -> scanned splits -> loaders."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning
from torch.utils.data import DataLoader

from yolo_slim.data.augment import AugmentConfig, jitter_hsv_batch
from yolo_slim.data.dataset import YOLODataset, collate
from yolo_slim.data.dataset_config import DataConfigError, DatasetConfig, load_dataset_config
from yolo_slim.data.image_cache import AUTO_RAM_LIMIT_BYTES, CACHE_MODES
from yolo_slim.data.labels import DataReport, default_cache_path, scan_split

if TYPE_CHECKING:
    from yolo_slim.data.synthetic import SyntheticConfig

log = logging.getLogger(__name__)

# Which splits each Lightning stage reads; None (all stages) reads every split in the yaml.
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}


class YOLODataModule(lightning.LightningDataModule):
    """Loaders for a YOLO dataset described by an ultralytics data.yaml.

    Args:
        data: The data.yaml; None for the built-in synthetic dataset (generated once, cached).
        imgsz: Square training/validation size; a multiple of 32, YOLOv5's largest stride.
        batch_size: Images per batch (train, val and test).
        workers: DataLoader worker processes; 0 loads in the training process.
        augment: Training augmentations; None trains on letterboxed images only.
        synthetic: Settings of the synthetic dataset when ``data`` is None (default settings
            when None).
        cache_dir: Where the synthetic dataset is generated; its module's default when None.
        cache: Keep the decoded images in RAM, resized to ``imgsz`` (ultralytics' ``--cache
            ram``), so that each is decoded once per run instead of once per sample: "ram",
            "none", or "auto" for RAM when a split's resized images take less than 1 GiB. The
            cache is built in ``setup``, before the loader workers start, which then share it.

    ``nc``, ``names`` and ``dataset_config`` can be read before a Trainer exists (the model is
    built from ``nc``): they load the yaml on first use.
    """

    def __init__(self, data: str | Path | None = None, imgsz: int = 640, batch_size: int = 16, workers: int = 2,
                 augment: AugmentConfig | None = AugmentConfig(), synthetic: SyntheticConfig | None = None,
                 cache_dir: Path | None = None, cache: str = "auto") -> None:
        super().__init__()
        # 32 is models.spec.STRIDE_UNIT, written out: data/ is an input pipeline that does not import the models.
        _check_int("imgsz", imgsz, 1, "a positive multiple of 32 (YOLOv5's largest stride)")
        if imgsz % 32:
            raise ValueError(f"YOLODataModule: imgsz must be a positive multiple of 32 (YOLOv5's largest stride); "
                             f"found {imgsz}. Try {max(32, round(imgsz / 32) * 32)}.")
        _check_int("batch_size", batch_size, 1, "an integer >= 1")
        _check_int("workers", workers, 0, "an integer >= 0 (0 loads in the main process)")
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise TypeError(f"YOLODataModule: augment must be an AugmentConfig or None; found {type(augment).__name__}")
        if cache not in CACHE_MODES:
            raise ValueError(f"YOLODataModule: cache (data.cache) must be one of {', '.join(CACHE_MODES)} "
                             f"(auto: RAM when a split's resized images take less than 1 GiB); found {cache!r}")
        self.data = Path(data) if data is not None else None
        self.imgsz = imgsz
        self.batch_size = batch_size
        self.workers = workers
        self.augment = augment
        self.synthetic = synthetic
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache = cache
        self.reports: dict[str, DataReport] = {}
        self.datasets: dict[str, YOLODataset] = {}
        self._data_yaml: Path | None = None
        self._dataset_config: DatasetConfig | None = None

    @property
    def data_yaml(self) -> Path:
        """The data.yaml in use; generates the synthetic dataset first if ``data`` is None."""
        if self._data_yaml is None:
            self._data_yaml = self.data if self.data is not None else self._ensure_synthetic()
        return self._data_yaml

    @property
    def dataset_config(self) -> DatasetConfig:
        if self._dataset_config is None:
            self._dataset_config = load_dataset_config(self.data_yaml)
        return self._dataset_config

    @property
    def names(self) -> list[str]:
        return self.dataset_config.names

    @property
    def nc(self) -> int:
        return self.dataset_config.nc

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node: the place to write the synthetic set.
        if self.data is None:
            self._data_yaml = self._ensure_synthetic()

    def setup(self, stage: str | None = None) -> None:
        """Scan (and, per ``cache``, cache) the splits the stage needs, all of them for None; each
        split once, logged once."""
        if self.data is None and self._data_yaml is None:
            self._data_yaml = self._ensure_synthetic()  # idempotent; covers setup() without prepare_data()
        all_splits = tuple(self.dataset_config.splits)
        for split in all_splits if stage is None else _STAGE_SPLITS.get(stage, all_splits):
            if split in self.dataset_config.splits and split not in self.datasets:
                self.datasets[split] = self._build(split)

    def train_dataloader(self) -> DataLoader:
        if self.workers == 0:
            self._separate_rank_draws()
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _build(self, split: str) -> YOLODataset:
        config = self.dataset_config
        images = config.splits[split]
        records, report = scan_split(images, config.nc, default_cache_path(images, split))
        self.reports[split] = report
        if self._is_global_zero():  # one report per run, not one per DDP rank
            report.log(log, title=f"{split} split of {config.yaml_path}")
        if not records:
            raise DataConfigError(f"data.yaml {str(config.yaml_path)!r}: split '{split}' has no usable image "
                                  f"(all {report.images} were skipped):\n{report.summary(split)}")
        if split == "train" and report.missing_labels == len(records):
            # ultralytics refuses this too ("No labels found"): training on backgrounds alone teaches nothing.
            raise DataConfigError(f"data.yaml {str(config.yaml_path)!r}: no image of split 'train' has a label "
                                  f"file; e.g. {report.missing_label_example} does not exist (labels are looked "
                                  f"for where the last '/images/' of the image path becomes '/labels/', else "
                                  f"beside the image)")
        if split == "train" and report.objects == 0:
            # Label files there, but every row skipped (boxes in pixels, a common export slip) or every file
            # empty: the whole schedule would train towards mAP 0, and ultralytics refuses it as well.
            raise DataConfigError(f"data.yaml {str(config.yaml_path)!r}: split 'train' has no object to learn "
                                  f"from (every label row was skipped, or the label files are empty):\n"
                                  f"{report.summary(split)}")
        dataset = YOLODataset(records, self.imgsz, self.augment if split == "train" else None)
        # Training on a GPU, the HSV jitter (the dearest step of a sample: 3.7 of the 7.6 ms of CPU a
        # loader worker spends on it at 640 px, benchmarks/loader_cost.py) is left to
        # on_after_batch_transfer, on the GPU; the pixels are the same.
        dataset.defer_hsv = dataset.augment is not None and self._on_gpu()
        self._cache_images(split, dataset)
        return dataset

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply a batch's deferred HSV jitter (``YOLODataset.defer_hsv``) on the device it now lives on.

        Lightning calls one ``on_after_batch_transfer``: this one, even where the LightningModule
        overrides the hook too (it warns then); such a module should call this one from its own."""
        if isinstance(batch, dict) and "hsv" in batch:
            batch["images"] = jitter_hsv_batch(batch["images"], batch.pop("hsv"))
        return batch

    def _cache_images(self, split: str, dataset: YOLODataset) -> None:
        resized_bytes = dataset.resized_bytes  # from the scanned sizes: nothing decoded yet
        size = _format_bytes(resized_bytes)
        if self.cache == "none" or (self.cache == "auto" and resized_bytes >= AUTO_RAM_LIMIT_BYTES):
            if self._is_global_zero():
                reason = ("data.cache=none" if self.cache == "none" else
                          f"data.cache=auto caches below {_format_bytes(AUTO_RAM_LIMIT_BYTES)}; ram forces it")
                log.info("%s split: images decoded on every sample, not cached (%s at imgsz %d; %s)",
                         split, size, self.imgsz, reason)
            return
        shortfall = self._memory_shortfall(split, resized_bytes)
        if shortfall is not None:
            if self.cache == "ram":  # the kernel would kill the run partway through caching, without a word
                raise DataConfigError(f"data.cache=ram: {shortfall}; use data.cache=auto or none")
            if self._is_global_zero():
                log.info("%s split: images decoded on every sample, not cached (data.cache=auto: %s)", split, shortfall)
            return
        start = time.perf_counter()
        dataset.cache_images()
        if self._is_global_zero():
            log.info("%s split: %d images cached in RAM, %s at imgsz %d (data.cache=%s), in %.1f s",
                     split, len(dataset), size, self.imgsz, self.cache, time.perf_counter() - start)

    def _memory_shortfall(self, split: str, resized_bytes: int) -> str | None:
        """What caching ``split`` would need beyond the memory available, or None when it fits."""
        available = available_memory_bytes()
        trainer = getattr(self, "trainer", None)
        # Each process on this machine caches its own copy.
        processes = max(getattr(trainer, "world_size", 1) // max(getattr(trainer, "num_nodes", 1), 1), 1)
        if available is None or resized_bytes * processes <= available:
            return None
        copies = f" x {processes} processes" if processes > 1 else ""
        return (f"the {split} split needs {_format_bytes(resized_bytes)}{copies} at imgsz {self.imgsz}, but "
                f"{_format_bytes(available)} of memory is available")

    def _separate_rank_draws(self) -> None:
        """Give each DDP rank its own augmentation draws when the training process loads the data itself.

        Augmentation draws from the ``random`` module (:mod:`yolo_slim.data.augment`), which
        ``seed_everything`` seeds alike in every rank: with workers=0 every rank drew the same mosaic
        partners, flips and jitters for its batch positions. (Loader workers are told apart by
        Lightning's worker seeding, which mixes in the rank.) One process is left as it is.
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or getattr(trainer, "world_size", 1) <= 1:
            return
        # From the current state, so that a seeded run stays reproducible, plus the rank.
        random.seed(random.getrandbits(64) + trainer.global_rank)

    def _is_global_zero(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.dataset_config.splits:
            raise DataConfigError(f"data.yaml {str(self.dataset_config.yaml_path)!r} has no '{split}' split; "
                                  f"it has {', '.join(self.dataset_config.splits)}")
        if split not in self.datasets:
            self.datasets[split] = self._build(split)  # a loader requested without setup()
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.workers, persistent_workers=self.workers > 0,
                          pin_memory=self._on_gpu(), collate_fn=collate, drop_last=False)

    def _on_gpu(self) -> bool:
        # Pinned host memory only speeds up copies to a CUDA device; elsewhere it costs memory.
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _ensure_synthetic(self) -> Path:
        # Imported here: the synthetic generator is only needed when no data.yaml is given.
        from yolo_slim.data.synthetic import SyntheticConfig, ensure_synthetic_dataset

        return Path(ensure_synthetic_dataset(self.synthetic or SyntheticConfig(), self.cache_dir))


def available_memory_bytes(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory this process can still take: the kernel's ``MemAvailable``, or less under a container's
    memory limit (cgroup v2 or v1), whose overrun kills the process; ``None`` when neither can be read.
    (psutil would give the first; it is not a dependency, and it does not see the second.)"""
    candidates = [_meminfo_available(), _cgroup_headroom(cgroup_root)]
    known = [value for value in candidates if value is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


# A cgroup without a limit reports "max" (v2) or a number near 2^63 (v1).
_NO_LIMIT = 1 << 60


def _cgroup_headroom(root: Path) -> int | None:
    """The limit minus the working set (usage less the inactive file cache, which the kernel reclaims
    before it kills: the figure Kubernetes evicts on), for the first cgroup layout found."""
    for limit_file, usage_file, inactive_key in (("memory.max", "memory.current", "inactive_file"),
                                                 ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                                  "total_inactive_file")):
        try:
            limit_text = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _NO_LIMIT:
            return None
        stat = (root / limit_file).with_name("memory.stat")
        inactive = 0
        try:
            for line in stat.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == inactive_key:
                    inactive = int(value)
        except (OSError, ValueError):
            pass
        return max(int(limit_text) - (usage - inactive), 0)
    return None


def _format_bytes(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _check_int(name: str, value: object, minimum: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"YOLODataModule: {name} must be {allowed}; found {value!r}")
