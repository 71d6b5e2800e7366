"""Hydra multirun over prune ratios: per-job summaries survive a failed job; CSV, Markdown, Pareto plot."""

import csv
import json

import pytest
from cli_support import TINY_TRAIN, run_cli, run_cli_in_process
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from yolo_slim.cli.sweep import RECORDS, SweepSummary, _points, sweep_rows, write_record, write_sweep_summary
from yolo_slim.slim.plots import pareto_front


def test_pareto_front():
    # (GFLOPs, mAP): the third is beaten by the second (cheaper and better), the last is the densest best.
    points = [(1.0, 0.2), (2.0, 0.5), (2.5, 0.4), (4.0, 0.6), (3.0, 0.5)]
    assert pareto_front(points) == [0, 1, 3]


def test_a_damaged_job_file_costs_that_job_only(tmp_path):
    # Job 0 finished; job 1 was killed while its summary.json was written; job 2's record was damaged.
    stages = {"train": {"params": 100, "gflops": 1.0, "map50": 0.5, "map": 0.3},
              "pruned": {"params": 50, "gflops": 0.5, "map50": 0.5, "map": 0.3}}
    for job in (0, 1):
        (tmp_path / str(job)).mkdir()
    (tmp_path / "0" / "summary.json").write_text(json.dumps({"stages": stages}))
    (tmp_path / "1" / "summary.json").write_text('{"stages": {"train": {"par')
    records = [{"job": job, "overrides": [f"prune.ratio=0.{job + 3}", "data.names='a|b'"], "status": "completed",
                "error": None, "output_dir": str(tmp_path / str(job)), "ratio": 0.3 + job / 10} for job in (0, 1)]
    for record in records:
        write_record(tmp_path, record)
    (tmp_path / RECORDS / "2.json").write_text('{"job": 2, "overrides": ["prune.r')
    write_sweep_summary(tmp_path)
    with open(tmp_path / "sweep_summary.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["job"], row["status"], row["pruned_params"]) for row in rows] == [
        ("0", "completed", "50"), ("1", "unreadable summary", "")]
    table = (tmp_path / "sweep_summary.md").read_text().splitlines()
    assert len(table) == 4 and all(line.count(" | ") == table[0].count(" | ") for line in table[2:])
    assert "data.names='a\\|b'" in table[2]  # escaped, so the row keeps its columns
    assert (tmp_path / "pareto.png").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "0", "1", "pareto.png", RECORDS, "sweep_summary.csv", "sweep_summary.md"]  # no partial file left


def test_a_job_whose_summary_has_no_stage_yet_is_listed_as_without_summary(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text(json.dumps({"stages": {}}))
    record = {"job": 0, "overrides": [], "status": "completed", "error": None, "output_dir": str(tmp_path / "0"),
              "ratio": None}
    write_record(tmp_path, record)
    write_sweep_summary(tmp_path)
    with open(tmp_path / "sweep_summary.csv", newline="") as file:
        assert [row["status"] for row in csv.DictReader(file)] == ["no summary"]


def test_iterative_jobs_keep_every_stage_and_each_trained_model_is_named(tmp_path):
    def stage(params, gflops, map_):
        return {"params": params, "gflops": gflops, "map50": map_, "map": map_}

    summaries = [{"train": stage(100, 1.0, 0.3), "pruned": stage(70, 0.7, 0.3), "train_2": stage(70, 0.7, 0.31),
                  "pruned_2": stage(50, 0.5, 0.3), "finetuned": stage(50, 0.5, 0.35)},
                 {"train": stage(100, 1.0, 0.32), "pruned": stage(60, 0.6, 0.3), "finetuned": stage(60, 0.6, 0.33)}]
    records = []
    for job, (stages, ratio) in enumerate(zip(summaries, ([0.3, 0.5], 0.4))):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "summary.json").write_text(json.dumps({"stages": stages}))
        records.append({"job": job, "overrides": [], "status": "completed", "error": None,
                        "output_dir": str(tmp_path / str(job)), "ratio": ratio})
    for record in records:
        write_record(tmp_path, record)
    rows = sweep_rows(tmp_path)
    stages = [key[:-len("_params")] for key in rows[0] if key.endswith("_params")]
    assert stages == ["train", "pruned", "train_2", "pruned_2", "finetuned"]
    assert rows[0]["pruned_2_params"] == 50 and rows[1]["pruned_2_params"] is None and rows[0]["ratio"] == [0.3, 0.5]
    # A train sweep: each job trained its own model before its prune, so "dense" would pick one of them unsaid.
    assert _points(rows) == [("job 0 before its prune", 1.0, 0.3, True), ("ratio [0.3, 0.5]", 0.5, 0.35, False),
                             ("ratio 0.4", 0.6, 0.33, False)]
    rows[1]["train_map"] = 0.3  # a prune sweep: one checkpoint before every prune
    assert _points(rows)[0] == ("dense", 1.0, 0.3, True)


def _job_return(run_dir, status, resume="RUN"):
    hydra = OmegaConf.create({"hydra": {"mode": "RunMode.RUN", "runtime": {"output_dir": str(run_dir)}}})
    return JobReturn(overrides=[f"resume={resume}"], cfg=OmegaConf.create({"resume": resume}), hydra_cfg=hydra,
                     status=status, _return_value=None if status == JobStatus.COMPLETED else ValueError("again"))


def test_a_sweep_job_resumed_on_its_own_rewrites_its_row(tmp_path):
    stages = {"train": {"params": 100, "gflops": 1.0, "map50": 0.5, "map": 0.3}}
    records = []
    for job in (0, 1):
        (tmp_path / str(job)).mkdir()
        records.append({"job": job, "overrides": [f"prune.ratio=0.{job + 3}"], "status": "failed" if job else
                        "completed", "error": "KeyboardInterrupt()" if job else None,
                        "output_dir": str(tmp_path / str(job)), "ratio": 0.3 + job / 10})
    (tmp_path / "0" / "summary.json").write_text(json.dumps({"stages": stages}))
    for record in records:
        write_record(tmp_path, record)

    def statuses():
        write_sweep_summary(tmp_path)
        with open(tmp_path / "sweep_summary.csv", newline="") as file:
            return [(row["job"], row["status"], row["train_params"]) for row in csv.DictReader(file)]

    assert statuses() == [("0", "completed", "100"), ("1", "failed", "")]
    # Its resume fails again, and a run that is no job of the sweep finishes: neither changes the table.
    (tmp_path / "1" / "summary.json").write_text(json.dumps({"stages": stages}))  # an earlier attempt's: not read
    SweepSummary().on_job_end(None, _job_return(tmp_path / "1", JobStatus.FAILED))
    (tmp_path / "other").mkdir()
    SweepSummary().on_job_end(None, _job_return(tmp_path / "other", JobStatus.COMPLETED))
    assert statuses() == [("0", "completed", "100"), ("1", "failed", "")]
    # `train resume=SWEEP/1` finishes the job and writes its summary.json: the sweep's row follows.
    SweepSummary().on_job_end(None, _job_return(tmp_path / "1", JobStatus.COMPLETED))
    assert statuses() == [("0", "completed", "100"), ("1", "completed", "100")]
    assert json.loads((tmp_path / RECORDS / "1.json").read_text())["overrides"] == ["prune.ratio=0.4"]
    assert sorted(path.name for path in (tmp_path / RECORDS).iterdir()) == ["0.json", "1.json"]  # replaced, not added


@pytest.mark.slow
def test_prune_sweep_from_a_sparse_only_run_with_finetune_and_a_failing_job(tmp_path, cli_environment):
    # The documented workflow: sparse training only (prune.epochs=[]), then one prune job per ratio.
    sparse_dir = tmp_path / "sparse"
    result = run_cli(["train", *TINY_TRAIN, "+prune=sparse", "prune.epochs=[]", f"hydra.run.dir={sparse_dir}"],
                     cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((sparse_dir / "summary.json").read_text())
    sparse = sparse_dir / "checkpoints" / "last.ckpt"
    assert list(summary["stages"]) == ["train"] and summary["checkpoint"] == str(sparse)
    assert summary["stages"]["train"]["params"] == 1_769_329  # trained sparse, not pruned
    assert summary["stages"]["train"]["latency_ms"] > 0
    assert (sparse_dir / "gamma_histogram.png").is_file() and (sparse_dir / "gamma_histogram_start.png").is_file()

    sweep_dir = tmp_path / "sweep"
    result = run_cli(["prune", "-m", f"ckpt={sparse}", "prune.ratio=0.3,1.5", "prune.finetune_epochs=1",
                      "data.workers=0", "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep_dir}"], cli_environment)
    assert result.returncode != 0  # the basic sweeper reports the failed job...
    with open(sweep_dir / "sweep_summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["ratio"], row["status"]) for row in rows] == [("0.3", "completed"), ("1.5", "failed")]  # ...as a row
    assert rows[1]["error"] == "prune.ratio must be in [0, 1), found 1.5" and rows[0]["error"] == ""
    assert "error: prune.ratio must be in [0, 1), found 1.5" in (sweep_dir / "1" / "prune.log").read_text()
    good = rows[0]
    assert int(good["pruned_params"]) < int(good["train_params"]) and good["finetuned_params"] == good["pruned_params"]
    assert float(good["finetuned_latency_ms"]) > 0 and 0 <= float(good["finetuned_map"]) <= 1
    assert "| 1 |" in (sweep_dir / "sweep_summary.md").read_text()
    assert (sweep_dir / "pareto.png").stat().st_size > 1000
    assert (sweep_dir / "0" / "checkpoints" / "finetuned.ckpt").is_file()
    # The prune's Trainer and the fine-tune's share one resolved trainer config: its line is logged once.
    assert (sweep_dir / "0" / "prune.log").read_text().count("trainer.precision=auto: 32-true") == 1
    for chart in ("channels.png", "gamma_histogram.png"):
        assert (sweep_dir / "0" / chart).stat().st_size > 1000, chart
    events = EventAccumulator(str(sweep_dir / "0" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"slim/channels", "slim/gamma_histogram"} <= set(events.Tags()["images"])


@pytest.mark.slow
def test_train_sweep_over_ratios(tmp_path, cli_environment):
    sweep_dir = tmp_path / "sweep"
    arguments = [a for a in TINY_TRAIN if not a.startswith("trainer.max_epochs")]
    result = run_cli(["train", "-m", "+prune=sparse", "prune.ratio=0.3,0.5", "prune.epoch=1", "trainer.max_epochs=2",
                      *arguments, f"hydra.sweep.dir={sweep_dir}"], cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep_dir / "sweep_summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert int(rows[1]["finetuned_params"]) < int(rows[0]["finetuned_params"]) < int(rows[0]["train_params"])
    assert (sweep_dir / "pareto.png").is_file() and (sweep_dir / "1" / "gamma_histogram.png").is_file()


@pytest.mark.slow
def test_prune_sweep_in_parallel_with_joblib(trained_run, tmp_path, cli_environment):
    best = trained_run / "checkpoints" / "best.ckpt"
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["prune", "-m", f"ckpt={best}", "prune.ratio=0.2,0.4", "data.workers=0", "trainer.accelerator=cpu",
                      "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}"],
                     cli_environment)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep_dir / "sweep_summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["ratio"], row["status"]) for row in rows] == [("0.2", "completed"), ("0.4", "completed")]
    assert int(rows[1]["pruned_params"]) < int(rows[0]["pruned_params"])


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["basic", "joblib"])
def test_a_failed_sweep_job_is_reported_once_with_its_overrides(tmp_path, capfd, launcher):
    # joblib runs each job in a worker process: the mark that its line was printed travels with the error.
    result = run_cli_in_process(["info", "-m", *launcher, "model=yolov5n", "imgsz=100,64",
                                 f"hydra.sweep.dir={tmp_path}"], None, capfd)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [  # the job's line, then Hydra's naming the job; not the first again
        "yolo_slim info: error: imgsz must be a positive multiple of 32, found 100",
        "Error executing job with overrides: ['model=yolov5n', 'imgsz=100']"]
    assert "1,872,157 parameters" in result.stdout  # the other job ran
