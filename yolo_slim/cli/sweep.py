"""Hydra callback that summarises a multirun: ``sweep_summary.csv``, ``sweep_summary.md`` and ``pareto.png``.

Each job writes its own ``summary.json``; this callback records every job as it ends (in
``sweep_jobs/<job>.json``, failures included) and rewrites the summary files from those records
each time. A job that fails or is killed therefore loses only itself, and a sweep
that the basic sweeper aborts after a failure (it raises before ``on_multirun_end``) still leaves
its summary. With a remote launcher ``on_job_end`` runs remotely: the files are then rebuilt from
``hydra.sweep.dir`` by ``on_multirun_end``. A job continued alone (``train resume=SWEEP/3``) that
finishes gets a new record, so its row follows.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from yolo_slim.files import write_atomically, write_text_atomically

log = logging.getLogger(__name__)
STAGES = ("train", "pruned", "finetuned")
FIGURES = ("params", "gflops", "latency_ms", "map50", "map")
RECORDS = "sweep_jobs"  # a folder of job records, <job number>.json


class SweepSummary(Callback):
    """Registered in the train and prune configs under ``hydra.callbacks``; acts in multirun mode, and on a
    single run only when it is a sweep's job continued by ``resume=``."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra = job_return.hydra_cfg.hydra if job_return.hydra_cfg is not None else None
        if hydra is None:
            return
        if str(hydra.mode) != "RunMode.MULTIRUN":
            _record_a_resumed_job(job_return, Path(hydra.runtime.output_dir))
            return
        sweep_dir = Path(hydra.sweep.dir)
        failed = job_return.status == JobStatus.FAILED
        record = {"job": int(hydra.job.num), "overrides": list(job_return.overrides or []),
                  "status": "failed" if failed else "completed",
                  "error": repr(job_return._return_value) if failed else None,
                  "output_dir": str(hydra.runtime.output_dir),
                  "ratio": _ratio(job_return.cfg)}
        write_record(sweep_dir, record)
        write_sweep_summary(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if (sweep_dir / RECORDS).is_dir():
            write_sweep_summary(sweep_dir)


def _record_a_resumed_job(job_return: JobReturn, run_dir: Path) -> None:
    """A sweep's job continued on its own (``train resume=SWEEP/3``) and finished: its row becomes completed.

    Only a completion is recorded: a resume refused or failed again leaves the job's row as it was (a finished
    job that ``resume=`` refuses stays completed).
    """
    sweep_dir = run_dir.resolve().parent
    if job_return.status != JobStatus.COMPLETED or job_return.cfg is None or job_return.cfg.get("resume") is None \
            or not (sweep_dir / RECORDS).is_dir():
        return
    mine = [record for record in _latest_records(sweep_dir).values()
            if Path(record["output_dir"]).resolve() == run_dir.resolve()]
    if not mine:
        return
    write_record(sweep_dir, {**mine[0], "status": "completed", "error": None})
    write_sweep_summary(sweep_dir)
    log.info("%s is job %s of the sweep in %s: its row there is rewritten", run_dir, mine[0]["job"], sweep_dir)


def _ratio(config: DictConfig | None) -> float | list[float] | None:
    """The job's prune.ratio: one, or an iterative prune's cumulative targets."""
    if config is None:
        return None
    value = OmegaConf.select(config, "prune.ratio", default=None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    values = list(value) if isinstance(value, ListConfig) else []
    return [float(v) for v in values] if values and all(isinstance(v, (int, float)) for v in values) else None


def write_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    """Write (or replace) job ``record["job"]``'s record.

    One file per job, replaced whole (atomically): jobs ending at once on other nodes never write one file,
    as appends to a shared file would (O_APPEND is not atomic on NFS, the file system Slurm sweeps share),
    and a job's newer record (a resume that finished it) replaces its older one.
    """
    folder = sweep_dir / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(folder / f"{int(record['job'])}.json", json.dumps(record))


def _latest_records(sweep_dir: Path) -> dict[int, dict[str, Any]]:
    """The record of each job, by job number."""
    latest: dict[int, dict[str, Any]] = {}
    for path in (sweep_dir / RECORDS).glob("*.json"):  # not a write under way (its temporary name ends .partial)
        try:
            record = json.loads(path.read_text())
            latest[int(record["job"])] = record
        except (OSError, ValueError, KeyError, TypeError):  # a damaged file: that job only is lost
            log.warning("%s is not a job record; skipped", path)
    return dict(sorted(latest.items()))


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job (the latest record of each), with its stages' figures read from its summary.json."""
    latest = _latest_records(sweep_dir)
    # A failed job's folder may hold an earlier attempt's summary (a resume=auto refused for other settings): its
    # figures would be read as this record's.
    summaries = {job: ({}, "") if latest[job]["status"] == "failed" else
                 _stages(Path(latest[job]["output_dir"]) / "summary.json") for job in sorted(latest)}
    # train, pruned, finetuned; an iterative prune's train_2, pruned_2 ... too, before finetuned (its summary's order)
    names = list(STAGES)
    for stages, _ in summaries.values():
        for name in stages:
            if name not in names:
                names.insert(names.index("finetuned"), name)
    rows = []
    for job, (stages, problem) in summaries.items():
        record = latest[job]
        row: dict[str, Any] = {"job": job, "overrides": " ".join(record["overrides"]), "status": record["status"],
                               "error": _error_line(record.get("error")), "ratio": record["ratio"]}
        if record["status"] == "completed" and not stages:
            row["status"] = problem
        for stage in names:
            for figure in FIGURES:
                row[f"{stage}_{figure}"] = stages.get(stage, {}).get(figure)
        rows.append(row)
    return rows


def _error_line(error: str | None) -> str | None:
    """A failed job's error as its one line: ``UsageError('prune.ratio must be ...')`` is recorded as the
    exception's repr; the table shows the message of a user's error, and the repr of any other."""
    match = re.fullmatch(r"UsageError\(([\"'])(.*)\1\)", error or "", flags=re.DOTALL)
    return match.group(2) if match else error


def _stages(summary_path: Path) -> tuple[dict[str, Any], str]:
    """A job's stages from its summary.json, or none and why (a killed job may leave it missing or cut short)."""
    if not summary_path.is_file():
        return {}, "no summary"
    try:
        stages = json.loads(summary_path.read_text())["stages"]
    except (ValueError, KeyError, TypeError) as error:
        log.warning("%s is unreadable (%s); its job is listed without figures", summary_path, error)
        return {}, "unreadable summary"
    # The reason is read only when no stage came back: a summary with none written yet counts as none.
    return (stages, "no summary") if isinstance(stages, dict) else ({}, "unreadable summary")


def write_sweep_summary(sweep_dir: Path) -> None:
    """Rewrite the CSV, the Markdown table and the Pareto plot from the job records."""
    rows = sweep_rows(sweep_dir)
    if not rows:
        return
    columns = list(rows[0])
    # Parallel jobs may rewrite the summary at once: each write lands whole.
    write_atomically(sweep_dir / "sweep_summary.csv", lambda file: _write_csv(file, columns, rows))
    write_text_atomically(sweep_dir / "sweep_summary.md", _markdown(columns, rows))
    try:
        from yolo_slim.slim.plots import plot_pareto

        plot_pareto(_points(rows), sweep_dir / "pareto.png")
    except Exception as error:  # a plot must never fail the sweep that it summarises
        log.warning("pareto.png not written: %s", error)


def _points(rows: list[dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    """(label, GFLOPs, mAP, is_dense) per job: its last stage, plus the model before pruning once.

    In a `prune` sweep every job prunes the same checkpoint: that is the dense model. In a `train` sweep each
    job trained its own before its prune (targeted shapes it for its ratio): the first one is shown, named so.
    """
    pruned = [row for row in rows if row["status"] == "completed" and row.get("train_gflops") is not None
              and row.get("pruned_gflops") is not None]
    points = []
    if pruned:
        shared = len({(row["train_gflops"], row["train_map"]) for row in pruned}) == 1
        first = pruned[0]
        label = "dense" if shared else f"job {first['job']} before its prune"
        points.append((label, first["train_gflops"], first["train_map"], True))
    for row in rows:
        if row["status"] != "completed":
            continue
        for stage in reversed([key[:-len("_gflops")] for key in row if key.endswith("_gflops")]):
            if row.get(f"{stage}_gflops") is not None and row.get(f"{stage}_map") is not None:
                label = f"ratio {row['ratio']}" if row["ratio"] is not None else f"job {row['job']}"
                points.append((label, row[f"{stage}_gflops"], row[f"{stage}_map"], False))
                break
    return points


def _write_csv(file: Any, columns: list[str], rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(file, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


def _markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")  # an override such as data.names='a|b' must not split the row

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"

