"""Which sparsity method makes pruning free? Whole runs, one at a time, and the table that decides.

    python benchmarks/sparsity_methods.py run --protocol scratch --method targeted --ratio 0.5 [--seed 0] [--data shapes|small1]
    python benchmarks/sparsity_methods.py run --protocol pretrained --method l1 --ratio 0.5
    python benchmarks/sparsity_methods.py run --protocol scratch --method dense      # the reference rows
    python benchmarks/sparsity_methods.py table                                       # prints the table

Each ``run`` is one ``python -m yolo_slim train`` subprocess (a user's command line), its figures read
back from the run's ``summary.json`` and ``separation.csv``, and appended as one JSON line to
``--results`` (default ``benchmarks/results/sparsity_methods.jsonl``), so that a series of runs can be
spread over sessions and the table printed from all of them. Runs go one after another: never run two
at once on a 2-core machine.

Protocols:

* ``scratch``: the default demo's budget: 30 epochs on the data, pruned at the start of epoch 20.
* ``pretrained``: from one dense run's checkpoint (20 epochs, trained once and reused by every row),
  10 sparse epochs, prune, 5 fine-tune epochs.

Data: ``shapes`` is the built-in set (4 classes, 160 px); ``small1`` is generated here from the same
generator with another look: one class, 4 to 16 small objects per image (6 to 24 px), any colour.

The ``dense`` method runs the same protocol without pruning; the table compares each pruned run's
mAP just before its prune with the dense run's at the same epoch (from its TensorBoard log) and its
fine-tuned mAP with the dense run's at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sparsity_methods.jsonl"
WORK = Path("/tmp/yolo_slim_sparsity_methods")
PROTOCOLS = {"scratch": {"epochs": 30, "prune_epoch": 20},
             "pretrained": {"epochs": 15, "prune_epoch": 10, "dense_epochs": 20}}


def small_one_class_data(cache: Path) -> Path:
    """A one-class set of small objects (the built-in generator, relabelled), written once under ``cache``."""
    from yolo_slim.data.synthetic import SyntheticConfig, ensure_synthetic_dataset

    config = SyntheticConfig(seed=7, min_objects=4, max_objects=16, min_object_size_fraction=0.04,
                             max_object_size_fraction=0.15, random_colour_fraction=1.0, max_distractors=6)
    target = cache / "small1"
    if (target / "data.yaml").exists():
        return target / "data.yaml"
    source = ensure_synthetic_dataset(config, cache / "generator").parent  # it returns the data.yaml
    staging = cache / "small1.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    for label in (staging / "labels").rglob("*.txt"):  # every shape is "object"
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
        label.write_text("".join(" ".join(["0", *row[1:]]) + "\n" for row in rows))
    (staging / "data.yaml").write_text(f"path: {target}\ntrain: images/train\nval: images/val\nnames:\n  0: object\n")
    for stale in staging.glob("manifest.json"):
        stale.unlink()
    staging.rename(target)
    return target / "data.yaml"


def data_overrides(data: str) -> list[str]:
    if data == "shapes":
        return []
    return [f"data.path={small_one_class_data(WORK / 'data')}", "data.imgsz=160"]


def dense_checkpoint(data: str, seed: int) -> Path:
    """The pretrained protocol's starting point: one dense run, trained once per data set and seed."""
    folder = WORK / f"dense-start-{data}-{seed}"
    checkpoint = folder / "checkpoints" / "last.ckpt"
    if not checkpoint.exists():
        _train(folder, [f"trainer.max_epochs={PROTOCOLS['pretrained']['dense_epochs']}", f"seed={seed}",
                        *data_overrides(data)])
    return checkpoint


def _train(folder: Path, overrides: list[str]) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "yolo_slim", "train", f"hydra.run.dir={folder}",
               "trainer.enable_progress_bar=false", *overrides]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return time.perf_counter() - start


def val_map_by_epoch(folder: Path) -> dict[int, float]:
    """``val/map`` after each epoch, from the run's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    epochs = {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in events.Tags()["scalars"] else {}
    return {epochs.get(e.step, -1): float(e.value) for e in events.Scalars("val/map")}


def run(args: argparse.Namespace) -> None:
    protocol = PROTOCOLS[args.protocol]
    name = f"{args.protocol}-{args.data}-{args.method}-{args.ratio}-s{args.seed}"
    if args.sparsity is not None:
        name += f"-sp{args.sparsity}"
    if args.extra:
        name += "-" + "-".join(e.removeprefix("prune.").replace("=", "") for e in args.extra)
    folder = WORK / name
    overrides = [f"trainer.max_epochs={protocol['epochs']}", f"seed={args.seed}", *data_overrides(args.data)]
    if args.protocol == "pretrained":
        overrides.append(f"model.weights={dense_checkpoint(args.data, args.seed)}")
    if args.method != "dense":
        overrides += ["+prune=sparse", f"prune.method={args.method}", f"prune.ratio={args.ratio}",
                      f"prune.epoch={protocol['prune_epoch']}"]
        if args.sparsity is not None:
            overrides.append(f"prune.sparsity={args.sparsity}")
    overrides += args.extra
    wall = _train(folder, overrides)
    summary = json.loads((folder / "summary.json").read_text())
    record = {"protocol": args.protocol, "data": args.data, "method": args.method, "ratio": args.ratio,
              "seed": args.seed, "sparsity": args.sparsity, "extra": args.extra, "wall_s": round(wall, 1),
              "stages": summary["stages"], "prune": summary.get("prune"),
              "val_map_by_epoch": val_map_by_epoch(folder)}
    separation_csv = folder / "separation.csv"
    if separation_csv.exists():
        record["separation"] = list(csv.DictReader(separation_csv.open()))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in ("protocol", "data", "method", "ratio", "seed", "wall_s")}),
          json.dumps(record["stages"]), flush=True)


def table(args: argparse.Namespace) -> None:
    records = [json.loads(line) for path in args.results or [RESULTS]
               for line in path.read_text().splitlines() if line.strip()]
    dense = {(r["protocol"], r["data"], r["seed"]): r for r in records if r["method"] == "dense"}
    print("| protocol | data | method | strength | ratio | seed | mAP before prune (dense same epoch) | right after "
          "| after/before | fine-tuned (dense) | channels <1e-2 / removed at prune | BN γ <1e-2 | removed mass "
          "| params | GFLOPs | wall |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in records:
        stages = r["stages"]
        reference = dense.get((r["protocol"], r["data"], r["seed"]))
        if r["method"] == "dense":
            final = stages["train"]
            print(f"| {r['protocol']} | {r['data']} | dense | | | {r['seed']} | | | | {final['map']:.3f} | | | | "
                  f"{final['params']:,} | {final['gflops']:.3f} | {r['wall_s'] / 60:.1f} min |")
            continue
        before, after, tuned = stages["train"], stages["pruned"], stages["finetuned"]
        epoch = PROTOCOLS[r["protocol"]]["prune_epoch"] - 1
        dense_then = reference["val_map_by_epoch"].get(str(epoch)) if reference else None
        dense_end = reference["stages"]["train"]["map"] if reference else None
        # The strength in force, as the run's summary.json recorded it (defaults resolved).
        settings = r.get("prune") or {}
        strength = settings.get("strength", r["sparsity"] if r["sparsity"] is not None else "default")
        if r["method"] == "targeted" and "warmup" in settings:  # its phases in force (given or resolved)
            start = f" ({settings['start']} start)" if settings.get("start") else ""
            strength = f"{strength}, warmup {settings['warmup']:g} hold {settings['hold']:g}{start}"
        elif r.get("extra"):
            strength = f"{strength}, {' '.join(e.removeprefix('prune.') for e in r['extra'])}"
        if r.get("probe"):  # a run of benchmarks/probes/targeted_choice_and_distillation.patch
            strength = f"{strength}; probe {r['probe']}"
        print(f"| {r['protocol']} | {r['data']} | {r['method']} | {strength} | {r['ratio']} | {r['seed']} | "
              f"{before['map']:.3f} ({_fmt(dense_then)}) | {after['map']:.3f} | "
              f"{after['map'] / before['map'] if before['map'] else 0:.2f} | {tuned['map']:.3f} ({_fmt(dense_end)}) | "
              f"{_fmt(after.get('channels_below_0_01'), 2)} / {after['removed_channels'] / after['total_channels']:.2f} | "
              f"{after['gamma_below_0_01']:.2f} | {after['removed_output_mass']:.1e} | "
              f"{after['params']:,} | {after['gflops']:.3f} | {r['wall_s'] / 60:.1f} min |")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run", help="one whole run, appended to the results")
    one.add_argument("--protocol", choices=sorted(PROTOCOLS), default="scratch")
    one.add_argument("--method", choices=["dense", "l1", "targeted", "polarize"], required=True)
    one.add_argument("--ratio", type=float, default=0.5)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--sparsity", type=float, default=None, help="the method's strength (default: its default)")
    one.add_argument("--data", choices=["shapes", "small1"], default="shapes")
    one.add_argument("--results", type=Path, default=RESULTS)
    one.add_argument("extra", nargs="*", help="further overrides, passed on as they are")
    printed = commands.add_parser("table", help="print the table of every recorded run")
    printed.add_argument("--results", type=Path, action="append",
                         help="a results file; repeat it to print several as one table (default: the main one)")
    args = parser.parse_args()
    run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
