"""`train resume=RUN` continues a run killed with SIGKILL: same folder, same config, no second prune, the
epochs going on where they stopped, summary.json complete (subprocesses, tiny settings)."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_support import TINY_TRAIN, run_cli, run_cli_in_process

FOUR_EPOCHS = [a for a in TINY_TRAIN if not a.startswith("trainer.max_epochs=")] + ["trainer.max_epochs=4"]


def _train_until_killed(arguments, run_dir, environment, ready, timeout=300, command="train", name="last.ckpt"):
    """Start `command` (train), SIGKILL it once its checkpoint ``name`` satisfies ``ready``; the checkpoint it was
    killed after."""
    process = subprocess.Popen([sys.executable, "-m", "yolo_slim", command, *arguments, f"hydra.run.dir={run_dir}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    last = run_dir / "checkpoints" / name
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the run ended (status {process.returncode}) before it could be killed")
            if last.is_file():
                checkpoint = torch.load(last, map_location="cpu", weights_only=False)  # whole: saves are atomic
                if ready(checkpoint):
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return checkpoint
            time.sleep(0.05)
        pytest.fail("the run did not reach the state to kill it in")
    finally:
        if process.poll() is None:
            process.kill()


def _resume(target, environment):
    result = run_cli(["train", f"resume={target}"], environment, 300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_pruned_run_killed_after_its_prune_resumes_without_a_second_prune(tmp_path, cli_environment):
    run_dir = tmp_path / "run"
    killed = _train_until_killed([*FOUR_EPOCHS, "+prune=sparse", "prune.epoch=1"], run_dir, cli_environment,
                                 ready=lambda checkpoint: bool(checkpoint["yolo_slim"]["plans"]))
    assert len(killed["yolo_slim"]["plans"]) == 1 and not (run_dir / "summary.json").exists()
    result = _resume(run_dir / "checkpoints" / "last.ckpt", cli_environment)  # the checkpoint works as the folder does
    output = result.stdout + result.stderr  # the progress bar writes to stdout
    assert "Restored all states from the checkpoint" in output
    # The epochs go on after the one the kill followed; none is trained twice.
    assert f"Epoch {killed['epoch']}:" not in output and "Epoch 3:" in output
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["epoch"] == 3 and len(final["yolo_slim"]["plans"]) == 1  # one prune only
    assert final["yolo_slim"]["spec"] == killed["yolo_slim"]["spec"]  # the pruned architecture, kept
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["train", "pruned", "finetuned"]  # including the stages before the kill
    assert summary["stages"]["pruned"]["params"] < summary["stages"]["train"]["params"]
    assert summary["stages"]["finetuned"]["params"] == summary["stages"]["pruned"]["params"]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) >= 2  # the log goes on in place
    assert (run_dir / ".hydra" / "resumed" / "config.yaml").is_file()
    assert (run_dir / "predictions.png").stat().st_size > 1000  # dense detections from before the kill, kept


@pytest.mark.slow
def test_a_prune_killed_in_its_fine_tune_resumes_it_without_pruning_again(trained_run, tmp_path, cli_environment,
                                                                          capfd):
    run_dir = tmp_path / "pruned"
    arguments = [f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", "prune.ratio=0.3", "prune.finetune_epochs=3",
                 "data.workers=0", "trainer.accelerator=cpu", "+trainer.log_every_n_steps=1"]
    killed = _train_until_killed(arguments, run_dir, cli_environment, ready=lambda checkpoint: checkpoint["epoch"] >= 0,
                                 command="prune", name="finetuned.ckpt")
    assert not (run_dir / "summary.json").exists()
    record = killed["callbacks"]["PruneRecord"]  # what the prune measured, kept in the fine-tune's checkpoint
    assert list(record["stages"]) == ["train", "pruned"] and record["settings"]["finetune_epochs"] == 3
    result = run_cli(["prune", f"resume={run_dir}"], cli_environment, 300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Restored all states from the checkpoint" in output and "pruned " in result.stdout
    assert f"Epoch {killed['epoch']}:" not in output and "Epoch 2:" in output  # no epoch fine-tuned twice
    final = torch.load(run_dir / "checkpoints" / "finetuned.ckpt", map_location="cpu", weights_only=False)
    assert final["epoch"] == 2 and final["yolo_slim"]["spec"] == killed["yolo_slim"]["spec"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["train", "pruned", "finetuned"]
    # The stages before the kill are the killed attempt's: nothing was pruned or measured again.
    assert {name: summary["stages"][name] for name in ("train", "pruned")} == record["stages"]
    assert summary["stages"]["finetuned"]["params"] == summary["stages"]["pruned"]["params"]
    assert summary["prune"] == record["settings"]
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "finetuned.ckpt")
    assert (run_dir / "predictions.png").stat().st_size > 1000  # dense (from the record) | fine-tuned
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    steps = [event.step for event in events.Scalars("val/map")]
    assert steps == sorted(set(steps)) and len(steps) >= 3, steps  # each epoch's, none drawn twice
    # A fine-tune that finished is not continued.
    result = run_cli_in_process(["prune", f"resume={run_dir}"], cli_environment, capfd)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "finished its prune.finetune_epochs=3 epochs and wrote summary.json: there is nothing to continue" in \
        result.stderr
    # resume=auto, a requeued job of that prune: nothing to do, and nothing rewritten.
    written = (run_dir / "summary.json").read_text()
    result = run_cli_in_process(["prune", *arguments, "resume=auto", f"hydra.run.dir={run_dir}"], cli_environment,
                                capfd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished its 3 epochs already" in result.stdout + result.stderr
    assert (run_dir / "summary.json").read_text() == written


@pytest.mark.slow
def test_a_plain_run_killed_mid_epoch_resumes_itself_with_resume_auto(tmp_path, cli_environment):
    run_dir = tmp_path / "run"
    # resume=auto, as a requeued Slurm job runs it: the same command, continued from the folder's own last.ckpt.
    again = [*FOUR_EPOCHS, "resume=auto"]
    killed = _train_until_killed(again, run_dir, cli_environment,
                                 ready=lambda checkpoint: checkpoint["epoch"] >= 0)  # in epoch 1, after epoch 0's save
    result = run_cli(["train", *again, f"hydra.run.dir={run_dir}"], cli_environment, 300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"Epoch {killed['epoch']}:" not in output and "Epoch 3:" in output
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["train"] and summary["checkpoint"].endswith("best.ckpt")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))  # both attempts' files, as TensorBoard reads them
    events.Reload()
    for tag in ("train/box_step", "val/map"):
        steps = [event.step for event in events.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)  # no step drawn twice: no curve folds back
    assert len(events.Scalars("val/map")) >= 4  # one per epoch, the killed attempt's epoch 0 included


@pytest.mark.slow
def test_a_run_resumes_on_two_processes(tmp_path, cli_environment):
    # Lightning's DDP launcher re-runs the rewritten command line in its child process: the child must
    # compose the run's own config as well (it finds `++resume=` there), not the defaults.
    run_dir = tmp_path / "run"
    _train_until_killed(FOUR_EPOCHS, run_dir, cli_environment, ready=lambda checkpoint: checkpoint["epoch"] >= 0)
    result = run_cli(["train", f"resume={run_dir}", "trainer.devices=2", "trainer.strategy=ddp"], cli_environment, 300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output and "Restored all states from the checkpoint" in output
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["epoch"] == 3 and final["hyper_parameters"]["imgsz"] == 96  # the run's own settings, not defaults


@pytest.mark.slow
def test_resume_refuses_what_would_change_the_run(tmp_path, cli_environment):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    result = run_cli(["train", f"resume={tmp_path / 'run'}"], cli_environment, 120)
    assert result.returncode == 2 and "is not a train run folder (no .hydra/config.yaml)" in result.stderr
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    result = run_cli(["train", f"resume={tmp_path / 'run'}"], cli_environment, 120)
    assert result.returncode == 2 and "last.ckpt does not exist" in result.stderr
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    result = run_cli(["train", f"resume={tmp_path / 'run'}", "trainer.max_epochs=9", "data.workers=0"],
                     cli_environment, 120)
    assert result.returncode == 2 and "trainer.max_epochs=9 cannot be given" in result.stderr
    assert "data.workers" in result.stderr  # named among what may change
    # A last.ckpt that is not a checkpoint (here: empty, as a crash of another tool could leave it) is named.
    result = run_cli(["train", f"resume={tmp_path / 'run'}"], cli_environment, 120)
    assert result.returncode == 2 and f"{tmp_path / 'run' / 'checkpoints' / 'last.ckpt'} is empty (0 bytes)" in \
        result.stderr.strip().splitlines()[0]


def test_relative_paths_are_found_from_the_folder_the_run_started_in(tmp_path, monkeypatch):
    from yolo_slim.cli.resume import resume_arguments

    start, run, elsewhere = tmp_path / "project", tmp_path / "project" / "outputs" / "run", tmp_path / "elsewhere"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    elsewhere.mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    (start / "my data").mkdir()
    (start / "my data" / "data.yaml").write_text("nc: 1\n")
    (start / "yolov5s.pt").write_bytes(b"weights")
    (run / ".hydra" / "config.yaml").write_text("data:\n  path: my data/data.yaml\n  cache_dir: null\n"
                                                "model:\n  cfg: yolov5s\n  weights: yolov5s.pt\n")
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {start}\n")
    monkeypatch.chdir(elsewhere)
    _, _, overrides = resume_arguments([f"resume={run}", "data.workers=0"])
    assert overrides == ["data.workers=0", f"++data.path='{start / 'my data' / 'data.yaml'}'",
                         f"++model.weights='{start / 'yolov5s.pt'}'",  # model.cfg=yolov5s is a shipped name
                         f"++resume='{run / 'checkpoints' / 'last.ckpt'}'"]
    # A DDP child runs with what the parent made of its argv: the same, and not refused as a change of the run.
    assert resume_arguments(overrides)[2] == overrides
    monkeypatch.chdir(start)  # where the run started: the paths are right as they are
    assert resume_arguments([f"resume={run}"])[2] == [f"++resume='{run / 'checkpoints' / 'last.ckpt'}'"]


def _fake_run(folder):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return folder


@pytest.mark.parametrize("name", ["prune.ratio=0.3,round_to=8", "run (2)", "it's"])
def test_a_run_folder_hydra_would_split_resumes_by_its_whole_path(tmp_path, monkeypatch, name):
    # Hydra's override_dirname names sweep jobs `key=value,key=value`; copies get ` (2)`.
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from yolo_slim.cli.resume import resume_arguments

    run = _fake_run(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    overrides = resume_arguments([f"resume={run}", "data.cache=none"])[2]  # data.cache: where images live
    parsed = OverridesParser.create().parse_overrides(overrides)  # what Hydra does with them next
    assert [(o.key_or_group, o.value()) for o in parsed] == [("data.cache", "none"),
                                                              ("resume", str(run / "checkpoints" / "last.ckpt"))]
    assert resume_arguments(overrides)[2] == overrides  # a DDP child reads its quoted path back


@pytest.mark.parametrize("extra", [["-m"], ["--multirun"], ["hydra/launcher=joblib"]])
def test_resume_refuses_a_multirun_which_would_write_into_a_new_folder(tmp_path, extra):
    from yolo_slim.cli.errors import UsageError
    from yolo_slim.cli.resume import resume_arguments

    run = _fake_run(tmp_path / "run")
    with pytest.raises(UsageError, match=f"so {extra[0]} cannot be given .*resume=auto"):
        resume_arguments([f"resume={run}", *extra])


def test_resume_of_a_sweep_folder_names_its_jobs(tmp_path):
    from yolo_slim.cli.errors import UsageError
    from yolo_slim.cli.resume import resume_arguments

    for job in ("0", "1"):
        _fake_run(tmp_path / "sweep" / job)
    with pytest.raises(UsageError, match=r"is a sweep folder; give one of its jobs \(0, 1\)"):
        resume_arguments([f"resume={tmp_path / 'sweep'}"])


def test_resume_names_folders_that_are_not_train_runs(tmp_path):
    from yolo_slim.cli.errors import UsageError
    from yolo_slim.cli.resume import resume_arguments

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(UsageError, match=r"images is not a train run folder \(no .hydra/config.yaml\)"):
        resume_arguments([f"resume={tmp_path / 'images'}"])
    pruned = _fake_run(tmp_path / "pruned")  # a `prune` run's folder: it has no last.ckpt of its own
    (pruned / "checkpoints" / "last.ckpt").unlink()
    (pruned / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: prune\n")
    with pytest.raises(UsageError, match=r"is the folder of a `prune` run; `train resume=` continues `train` runs "
                                         r"\(continue it with `python -m yolo_slim prune resume="):
        resume_arguments([f"resume={pruned}"])
    # prune resume= continues a prune's fine-tune, from its own finetuned.ckpt; a train run is named as such.
    with pytest.raises(UsageError, match=r"finetuned.ckpt does not exist \(the prune had no fine-tune "
                                         r"\(prune.finetune_epochs=0\), or it stopped before"):
        resume_arguments([f"resume={pruned}"], "prune")
    (pruned / "checkpoints" / "finetuned.ckpt").write_bytes(b"checkpoint")
    config_path, config_name, overrides = resume_arguments([f"resume={pruned}", "data.workers=0"], "prune")
    assert (config_path, config_name) == (str(pruned / ".hydra"), "resume")
    assert overrides == ["data.workers=0", f"++resume='{pruned / 'checkpoints' / 'finetuned.ckpt'}'"]
    assert "prune resume=" in (pruned / ".hydra" / "resume.yaml").read_text()
    trained = _fake_run(tmp_path / "trained")
    (trained / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: train\n")
    with pytest.raises(UsageError, match=r"is the folder of a `train` run; `prune resume=` continues `prune` runs "
                                         r"\(continue it with `python -m yolo_slim train resume="):
        resume_arguments([f"resume={trained}"], "prune")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / ".hydra").mkdir()
    (tmp_path / "val" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "val" / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: val\n")
    with pytest.raises(UsageError, match=r"is the folder of a `val` run; .*\(run the `val` command again\)"):
        resume_arguments([f"resume={tmp_path / 'val'}"])


def test_resume_refuses_another_run_folder_but_takes_its_own(tmp_path):
    from yolo_slim.cli.errors import UsageError
    from yolo_slim.cli.resume import resume_arguments

    run = _fake_run(tmp_path / "run")
    with pytest.raises(UsageError, match="so hydra.run.dir=.*other cannot be given"):
        resume_arguments([f"resume={run}", f"hydra.run.dir={tmp_path / 'other'}"])
    # What Lightning's DDP launcher adds to each child's argv: the parent's own folder, quoted.
    child = [f'hydra.run.dir="{run}"', "hydra.output_subdir=null"]
    assert resume_arguments([f"resume={run}", *child])[2][:2] == child


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_trains_nothing(trained_run, tmp_path, cli_environment, capfd):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    last = (run / "checkpoints" / "last.ckpt").read_bytes()
    # The two refusals run in this process; the resume=auto that exits 0 is a subprocess, as a requeued job.
    result = run_cli_in_process(["train", f"resume={run}"], cli_environment, capfd)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "finished its trainer.max_epochs=2 epochs and wrote summary.json: there is nothing to continue" in \
        result.stderr
    # resume=auto, a requeued job of a run that had finished: nothing to do, and nothing rewritten.
    summary = (run / "summary.json").read_text()
    result = run_cli(["train", *TINY_TRAIN, "resume=auto", f"hydra.run.dir={run}"], cli_environment, 120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished its 2 epochs already" in result.stdout + result.stderr and "Epoch " not in result.stderr
    assert (run / "summary.json").read_text() == summary and (run / "checkpoints" / "last.ckpt").read_bytes() == last
    # resume=auto with other settings (a sweep rerun with another ratio, say): refused, and Hydra's config.yaml, which
    # this launch rewrote, is the run's own again: the one it started with.
    config = (trained_run / ".hydra" / "config.yaml").read_text()
    longer = [("trainer.max_epochs=3" if setting == "trainer.max_epochs=2" else setting) for setting in TINY_TRAIN]
    result = run_cli_in_process(["train", *longer, "resume=auto", f"hydra.run.dir={run}"], cli_environment, capfd)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "from a run started with other settings (trainer.max_epochs: 2 there, 3 now); it continues only with " \
           "its own" in result.stderr and "Epoch " not in result.stderr
    assert (run / ".hydra" / "config.yaml").read_text() == config
    assert (run / "summary.json").read_text() == summary and (run / "checkpoints" / "last.ckpt").read_bytes() == last


def test_resume_auto_takes_only_where_the_run_runs_from_a_new_command(tmp_path):
    import re

    from omegaconf import OmegaConf

    from yolo_slim.cli.errors import UsageError
    from yolo_slim.cli.resume import record_start, refuse_other_settings

    (tmp_path / ".hydra").mkdir()
    started = {"resume": "auto", "prune": {"ratio": 0.3}, "trainer": {"devices": 1, "max_epochs": 2},
               "data": {"workers": 8, "path": None}}
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(started))
    record_start(tmp_path)
    moved = OmegaConf.create({**started, "trainer": {"devices": 2, "max_epochs": 2}, "data": {"workers": 16,
                                                                                           "path": None}})
    refuse_other_settings(tmp_path, moved)  # another machine: the same run
    other = OmegaConf.create({**started, "prune": {"ratio": 0.7}, "seed": 1})
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(other))  # as Hydra rewrote it
    with pytest.raises(UsageError, match=re.escape("other settings (prune.ratio: 0.3 there, 0.7 now; seed: (not set) "
                                                   "there, 1 now)")):
        refuse_other_settings(tmp_path, other)
    assert OmegaConf.load(tmp_path / ".hydra" / "config.yaml").prune.ratio == 0.3  # the run's own again


def test_resume_auto_without_a_checkpoint_says_it_starts_from_the_beginning(tmp_path, caplog):
    from omegaconf import OmegaConf

    from yolo_slim.cli.resume import starting_point

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"")  # an attempt killed in its first epoch saved no last
    with caplog.at_level("INFO", logger="yolo_slim.cli.resume"):
        assert starting_point(OmegaConf.create({"resume": "auto"}), tmp_path, "train", "trainer.max_epochs",
                              longer="") == (None, False)
    assert f"resume=auto: {tmp_path} holds no checkpoints/last.ckpt yet, so the run starts from the beginning" \
        in caplog.text


@pytest.mark.parametrize("resumed", [True, False], ids=["resumed", "fresh"])
def test_a_resumed_log_hides_what_the_killed_attempt_wrote_after_its_checkpoint(tmp_path, resumed):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from yolo_slim.cli.settings import logged_step, tensorboard_logger

    killed = SummaryWriter(log_dir=str(tmp_path / "tensorboard"))  # the attempt: steps 0-7, checkpoint at 6
    for step in range(8):
        killed.add_scalar("train/box_step", float(step), step)
    killed.close()
    checkpoint = {"global_step": 6, "loops": {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": 6}}}}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    assert logged_step(checkpoint) == 6 and logged_step({"global_step": 4}) == 4
    time.sleep(1.1)  # event files are named by the second they were opened in, and read in that order
    logger = tensorboard_logger(tmp_path, str(tmp_path / "last.ckpt") if resumed else None)
    for step in (6, 7, 8):  # what the resumed fit logs again, and on
        logger.log_metrics({"train/box_step": 10.0 + step}, step=step)
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    shown = [(event.step, event.value) for event in events.Scalars("train/box_step")]
    if resumed:  # one value per step, the resumed fit's from the checkpoint on
        assert shown == [*((step, float(step)) for step in range(6)), (6, 16.0), (7, 17.0), (8, 18.0)]
    else:  # what TensorBoard draws without purge_step: both attempts' steps 6 and 7, the curve folding back
        assert [step for step, _ in shown] == [0, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8], shown
