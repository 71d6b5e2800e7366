"""Host reads of tensor values per training step, by the line that makes them: each one waits for the GPU.

On a GPU, reading a tensor's value on the host (``.item()``, ``float()``, ``bool()``, ``.tolist()``, an
``if`` on a tensor, a boolean-mask index or ``nonzero``, whose result size depends on the data) stops
the CPU until every kernel queued before it has run, so the CPU cannot queue the next kernels ahead
of the GPU. This counts them on the CPU, where they cost nothing, through a ``TorchFunctionMode``
around each training step of the real ``train`` job (built from the CLI's config, callbacks
included), optionally with ``+prune=sparse``. Copies from host memory to the GPU (``torch.tensor(...,
device=cuda)``, ``.to(cuda)``) also wait, and cannot be seen on a CPU: the loss and the EMA make none.

    python benchmarks/host_syncs.py [--steps 12] [--sparse] [-- extra train overrides]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import traceback
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.overrides import TorchFunctionMode

from yolo_slim.cli import config_dir
from yolo_slim.cli.schemas import register_schemas
from yolo_slim.cli.train import build_job

# Tensor methods that hand a value to Python (and so wait for the device), and those whose output
# size depends on the data (they wait too, to allocate it).
READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "masked_select", "unique"}
# Frames that name no caller worth fixing: torch itself, a generic helper, this script.
SKIPPED_FRAMES = (os.sep + "torch" + os.sep, os.sep + "lightning_utilities" + os.sep,
                  os.sep + "benchmarks" + os.sep + "host_syncs.py")


class ReadCounter(TorchFunctionMode):
    """Counts READS (and boolean-mask indexing) by the first frame outside torch itself."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        name = getattr(func, "__name__", "")
        masked = name == "__getitem__" and len(args) > 1 and _has_bool_tensor(args[1])
        if name in READS or masked:
            self.sites[f"{_site()} ({'mask index' if masked else name})"] += 1
        return func(*args, **(kwargs or {}))


def _has_bool_tensor(index: object) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(item, torch.Tensor) and item.dtype == torch.bool for item in items)


def _site() -> str:
    for frame in reversed(traceback.extract_stack()[:-3]):
        if not any(part in frame.filename for part in SKIPPED_FRAMES):
            path = Path(frame.filename)
            for root in ("yolo_slim", "lightning", "torchmetrics"):
                if root in path.parts:
                    return f"{'/'.join(path.parts[path.parts.index(root):])}:{frame.lineno}"
            return f"{path.name}:{frame.lineno}"
    return "?"


class CountSteps(L.Callback):
    """Counts from one batch's start to the next one's (hooks, logging and the progress bar included),
    after ``skip`` batches (the first ones set things up)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.counted, self.counter, self._active = skip, 0, ReadCounter(), False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001 - Lightning's hook
        self._stop()
        if trainer.global_step >= self.skip or batch_idx >= self.skip:
            self.counter.__enter__()
            self._active = True
            self.counted += 1

    def on_train_epoch_end(self, trainer, pl_module):  # noqa: ANN001 - Lightning's hook
        self._stop()

    def _stop(self) -> None:
        if self._active:
            self.counter.__exit__(None, None, None)
            self._active = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="batches counted, after 4 set-up batches")
    parser.add_argument("--sparse", action="store_true", help="with +prune=sparse prune.epochs=[] (its penalty)")
    parser.add_argument("overrides", nargs="*", help="train overrides (after --)")
    arguments = parser.parse_args()
    skip = 4
    overrides = ["data.synthetic.num_train=128", "data.synthetic.num_val=8", "data.synthetic.image_size=96",
                 "data.imgsz=96", "data.batch_size=8", "data.workers=0", "trainer.max_epochs=1",
                 f"+trainer.limit_train_batches={skip + arguments.steps}", "+trainer.limit_val_batches=0",
                 # one optimizer step per batch, as a GPU batch of 64 makes
                 "trainer.accumulate_grad_batches=1", "trainer.accelerator=cpu", "model.autoanchor=false"]
    if arguments.sparse:
        overrides += ["+prune=sparse", "prune.epochs=[]"]  # the sparse phase: its penalty at every step
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        config = compose(config_name="train", overrides=[*overrides, *arguments.overrides])
    with tempfile.TemporaryDirectory() as folder:
        job = build_job(config, Path(folder))
        counter = CountSteps(skip)
        job.trainer.callbacks.insert(0, counter)
        job.trainer.fit(job.module, datamodule=job.datamodule)
    steps = max(counter.counted, 1)
    total = sum(counter.counter.sites.values())
    print(f"\nhost reads per training batch, over {counter.counted} batches "
          f"({'+prune=sparse, ' if arguments.sparse else ''}accumulate {job.trainer.accumulate_grad_batches}):")
    print(f"| {'line':<72} | per batch |")
    print(f"|{'-' * 74}|----------:|")
    for site, count in counter.counter.sites.most_common():
        print(f"| {site:<72} | {count / steps:9.2f} |")
    print(f"| {'total':<72} | {total / steps:9.2f} |")


if __name__ == "__main__":
    sys.exit(main())
