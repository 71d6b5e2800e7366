"""``python -m yolo_slim train resume=RUN``: continue a run that died, in its own folder, with its own config.

``RUN`` is a train run folder (``outputs/train/<date_time>``) or its ``checkpoints/last.ckpt``. The
run's saved config (``RUN/.hydra/config.yaml``, what Hydra wrote when it started) is composed again,
with the Hydra settings of ``conf/train.yaml`` pointed at ``RUN``, and ``resume`` set to the
checkpoint: ``cli/train.py`` then hands it to ``Trainer.fit(ckpt_path=...)``, which restores the
weights, optimizer, LR schedule, EMA, epoch and every callback's state (SlimCallback's prunes and
stages included), and the TensorBoard log and ``summary.json`` carry on in the same folder.
``prune resume=RUN`` does the same for a ``prune`` run's fine-tune (``prune.finetune_epochs``), from its
``checkpoints/finetuned.ckpt``, which also holds what the prune measured before it (``cli/prune.py``).

What the run computes cannot change on resume; where it runs can: :data:`RESUMABLE` lists the
settings that may be given beside ``resume=``, and Hydra's own ``hydra.*``. Not ``-m``: a multirun writes
into a new sweep folder (``hydra.sweep.dir``), and its launchers (``hydra/launcher=``) act only there.
``resume=auto`` is different: a fresh run that continues from its own folder's ``last.ckpt`` when
there is one (what a Slurm job requeued after preemption needs; see the README).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from yolo_slim.files import remove_abandoned_partials, write_text_atomically

log = logging.getLogger(__name__)

RESUMABLE = ("trainer.devices", "trainer.accelerator", "trainer.num_nodes", "trainer.strategy", "data.workers",
             "data.cache", "data.cache_dir")
"""Settings a resumed run may change: the machine it runs on, not what it computes."""

AUTO = "auto"
MULTIRUN = ("-m", "--multirun")
# `resume=` as users write it; `++resume=` as this module rewrites it, which is what Lightning's DDP launcher
# passes on to its child processes (their sys.argv), so that they too compose the run's own config.
PREFIXES = ("resume=", "++resume=", "+resume=")
LAST = Path("checkpoints") / "last.ckpt"
FINETUNED = Path("checkpoints") / "finetuned.ckpt"  # a prune's fine-tune: rewritten at each of its epochs' ends
RESUMED_CHECKPOINT = {"train": LAST, "prune": FINETUNED}
"""The commands whose runs can be continued, and the checkpoint in the run folder each continues from."""
RESUME_CONFIG = "resume"  # RUN/.hydra/resume.yaml: the composition a resume runs
PATH_SETTINGS = ("data.path", "data.cache_dir", "model.weights", "model.cfg", "ckpt")
"""Settings that name files. The run's config holds them as they were typed, and with ``hydra.job.chdir``
false a relative one meant the folder the run was started from (Hydra records it in ``.hydra/hydra.yaml``
as ``hydra.runtime.cwd``): a resume started elsewhere is given them from there."""


def resume_arguments(arguments: list[str], command: str = "train") -> tuple[str, str, list[str]]:
    """(config path, config name, overrides) of the Hydra app that continues the ``command`` run ``resume=``
    names (one of :data:`RESUMED_CHECKPOINT`).

    Raises:
        UsageError: not a run folder or checkpoint, no ``last.ckpt`` yet, or an override that a resume
            cannot change.
    """
    from omegaconf import OmegaConf

    from yolo_slim.cli import config_dir
    from yolo_slim.cli.errors import UsageError

    target = _unquoted(next(argument.split("=", 1)[1] for argument in arguments if is_resume(argument)))
    if target in (AUTO, "null", ""):
        return str(config_dir()), command, arguments  # resolved by the run itself (cli/train.py, cli/prune.py)
    run, checkpoint = locate_run(Path(target), command)
    # What an earlier call made of the relative paths comes back in a DDP child's argv: not the user's.
    start_paths = _paths_from_the_start_folder(run)
    others = [argument for argument in arguments if not is_resume(argument) and argument not in start_paths.values()]
    given = {_key(argument) for argument in others}  # a data.cache_dir given now wins
    from_start = [override for setting, override in start_paths.items() if setting not in given]
    sweeping = [argument for argument in others if argument in MULTIRUN or _key(argument) == "hydra/launcher"]
    if sweeping:
        raise UsageError(f"resume={target} continues that run in its own folder, so {' '.join(sweeping)} cannot be "
                         f"given (a multirun writes into a new sweep folder); to continue a sweep's jobs where they "
                         f"are, run the sweep's command again with resume=auto and the same hydra.sweep.dir")
    moved = [argument for argument in others if _key(argument) == "hydra.run.dir" and _elsewhere(argument, run)]
    if moved:
        raise UsageError(f"resume={target} continues that run in its own folder ({run}), so {' '.join(moved)} "
                         f"cannot be given (the run would be split between two folders)")
    refused = [argument for argument in others if not _resumable(argument)]
    if refused:
        raise UsageError(f"resume={target} continues that run with its own config, so {' '.join(refused)} cannot "
                         f"be given; allowed beside resume=: {', '.join(RESUMABLE)} and hydra.*")
    hydra_settings = OmegaConf.load(config_dir() / f"{command}.yaml").hydra
    hydra_settings.run.dir = str(run)
    hydra_settings.output_subdir = ".hydra/resumed"  # .hydra/config.yaml stays the run's own, for a later resume
    composition = OmegaConf.create({"defaults": ["config", "_self_"], "hydra": hydra_settings})
    text = (f"# written by `python -m yolo_slim {command} resume=...`: the run's saved config.yaml, continued in "
            f"place\n"
            + OmegaConf.to_yaml(composition))
    path = run / ".hydra" / f"{RESUME_CONFIG}.yaml"
    if not path.is_file() or path.read_text() != text:  # DDP children come here too: never half-written
        write_text_atomically(path, text)
    # Quoted: a run folder named by Hydra's override_dirname (`prune.ratio=0.3`) or a copy (`run (2)`) would
    # otherwise not parse as an override.
    return str(run / ".hydra"), RESUME_CONFIG, [*others, *from_start, f"++resume={_quoted(str(checkpoint))}"]


def _paths_from_the_start_folder(run: Path) -> dict[str, str]:
    """``++SETTING=ABSOLUTE_PATH`` for each of :data:`PATH_SETTINGS` that the run's config gives as a relative
    path to something in the folder the run was started from, when this resume runs in another folder."""
    from omegaconf import OmegaConf

    hydra_file = run / ".hydra" / "hydra.yaml"
    start = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") if hydra_file.is_file() else None
    if start is None or Path(start).resolve() == Path.cwd().resolve():
        return {}
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    overrides = {}
    for setting in PATH_SETTINGS:
        value = OmegaConf.select(saved, setting)
        if value is None or Path(str(value)).is_absolute():
            continue
        candidate = Path(start) / str(value)
        if candidate.exists():  # else a shipped model name (model.cfg=yolov5s), or a path gone since
            overrides[setting] = f"++{setting}={_quoted(str(candidate))}"
    return overrides


def _quoted(value: str) -> str:
    """``value`` as a Hydra override value: quoted, so that spaces, commas or ``=`` in a path stay in it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unquoted(value: str) -> str:
    """A ``resume=`` value as the path it names: the quoted form this module writes (what a DDP child finds in
    its argv) read back with Hydra's own override parser; a user's bare path as typed."""
    if not value.startswith(("'", '"')):
        return value
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return str(OverridesParser.create().parse_override(f"resume={value}").value())


def locate_run(target: Path, command: str = "train") -> tuple[Path, Path]:
    """The run folder and the checkpoint to continue from, for a ``command`` run's folder or a checkpoint inside
    one."""
    from yolo_slim.cli.errors import UsageError

    own = RESUMED_CHECKPOINT[command]
    if target.is_file():
        checkpoint = target
        run = target.parent.parent if target.parent.name == "checkpoints" else target.parent
    elif target.is_dir():
        run, checkpoint = target, target / own
        jobs = sorted(child.name for child in target.iterdir() if (child / ".hydra" / "config.yaml").is_file())
        if not checkpoint.is_file() and jobs:
            raise UsageError(f"resume={target} is a sweep folder; give one of its jobs ({', '.join(jobs[:5])}"
                             f"{', ...' if len(jobs) > 5 else ''}), or run the sweep's command again with resume=auto")
    else:
        raise UsageError(f"resume={target} does not exist; give a {command} run folder (outputs/{command}/<run>) or "
                         f"its {own.as_posix()}")
    if not (run / ".hydra" / "config.yaml").is_file():
        raise UsageError(f"resume={target}: {run} is not a {command} run folder (no .hydra/config.yaml); give the "
                         f"folder a `{command}` run wrote (outputs/{command}/<run>)")
    maker = _command_of(run)
    if maker not in (None, command):
        again = (f"continue it with `python -m yolo_slim {maker} resume={target}`" if maker in RESUMED_CHECKPOINT
                 else f"run the `{maker}` command again")
        raise UsageError(f"resume={target}: {run} is the folder of a `{maker}` run; `{command} resume=` continues "
                         f"`{command}` runs ({again})")
    if not checkpoint.is_file():
        why = ("the prune had no fine-tune (prune.finetune_epochs=0), or it stopped before the fine-tune's first "
               "epoch ended: run the prune again") if command == "prune" else \
            "the run stopped before its first epoch ended: start it again"
        raise UsageError(f"resume={target}: {checkpoint} does not exist ({why})")
    return run.resolve(), checkpoint.resolve()


def _elsewhere(argument: str, run: Path) -> bool:
    """Whether a ``hydra.run.dir=`` override names another folder than ``run`` (Lightning's DDP launcher gives
    each child process the parent's own run folder, quoted)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(argument).value()
    return Path(str(value)).resolve() != run.resolve()


def _command_of(run: Path) -> str | None:
    """The command that made a run folder, as Hydra recorded its job name (yolo_slim's task modules are
    named after their commands); ``None`` when ``.hydra/hydra.yaml`` does not say."""
    from omegaconf import OmegaConf

    hydra_file = run / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return None
    name = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.name")
    # Lightning's DDP children run as train_ddp_process_<rank>; their folder is the parent's.
    return None if name is None else str(name).split("_ddp_process_")[0]


STARTED_WITH = Path(".hydra") / "started_with.yaml"
"""The config a run was started with, written by its fresh start. Hydra rewrites ``.hydra/config.yaml`` at every
launch, a requeued ``resume=auto`` job's too, before any of yolo_slim's code runs: this copy is what that job's
settings are checked against."""


def record_start(run_dir: Path) -> None:
    """Keep a copy of the config Hydra saved for a run starting fresh."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():  # hydra.output_subdir=null: no saved config, and no resume either
        return
    text = saved.read_text()
    path = run_dir / STARTED_WITH
    if not path.is_file() or path.read_text() != text:  # DDP children come here too: never half-written
        write_text_atomically(path, text)


def refuse_other_settings(run_dir: Path, config: Any, command: str = "train") -> None:
    """``resume=auto`` found ``last.ckpt``: the run must go on with the settings it was started with (but where it
    runs, :data:`RESUMABLE`), as ``resume=RUN`` does. Else its folder would hold one run's checkpoint under another
    run's config, and a sweep's table would show one ratio's figures under another.

    Raises:
        UsageError: a setting differs; Hydra's ``.hydra/config.yaml``, rewritten by this launch, is put back.
    """
    from omegaconf import OmegaConf

    from yolo_slim.cli.errors import UsageError

    path = run_dir / STARTED_WITH
    if not path.is_file():  # a run from before this record: nothing to compare with
        return
    unset = "(not set)"
    started = dict(_leaves(OmegaConf.to_container(OmegaConf.load(path), resolve=True)))
    now = dict(_leaves(OmegaConf.to_container(config, resolve=True)))
    changed = [key for key in sorted(set(started) | set(now)) if key != "resume" and key not in RESUMABLE
               and started.get(key, unset) != now.get(key, unset)]
    if not changed:
        return
    write_text_atomically(run_dir / ".hydra" / "config.yaml", path.read_text())
    shown = "; ".join(f"{key}: {started.get(key, unset)} there, {now.get(key, unset)} now"
                      for key in changed[:4]) + ("; ..." if len(changed) > 4 else "")
    raise UsageError(f"resume=auto found {run_dir / RESUMED_CHECKPOINT[command]}, from a run started with other "
                     f"settings ({shown}); it "
                     f"continues only with its own: give the command it was started with, or another folder "
                     f"(hydra.sweep.dir= / hydra.run.dir=)")


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a plain config tree; a list is one value."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), tree


def own_checkpoint(run_dir: Path, command: str = "train") -> Path | None:
    """``resume=auto``: the run folder's own checkpoint (:data:`RESUMED_CHECKPOINT`), when an earlier attempt
    left one."""
    checkpoint = run_dir / RESUMED_CHECKPOINT[command]
    return checkpoint if checkpoint.is_file() else None


def continue_hint(run_dir: Path, command: str, nothing_saved: str) -> str:
    """How to go on with a ``command`` run stopped before its end: resume from its own checkpoint, once one is
    saved; ``nothing_saved`` before that."""
    checkpoint = own_checkpoint(run_dir, command)
    if checkpoint is None:
        return nothing_saved
    return (f"continue it from its last finished epoch ({checkpoint}) with `python -m yolo_slim {command} "
            f"resume={run_dir}`, or the same command with resume=auto")


def starting_point(config: Any, run_dir: Path, command: str, epochs_setting: str,
                   longer: str) -> tuple[str | None, bool]:
    """Where a ``command`` run in ``run_dir`` starts: (the checkpoint its fit continues from, None for a fresh
    start; whether it has nothing left to do).

    ``config.resume`` is null (a fresh run), ``auto`` (the folder's own checkpoint if an earlier attempt left
    one, continued only with the settings it was started with), or the checkpoint :func:`resume_arguments`
    found for ``resume=RUN``. A fresh start keeps a copy of its config (:func:`record_start`). A run that
    finished its epochs (the setting ``epochs_setting``) and wrote its summary is not continued: ``resume=auto`` (a
    requeued job) has nothing to do, ``resume=RUN`` is refused with ``longer``, how to go further (a
    template of ``{checkpoint}``).
    First the files an attempt killed while writing them left in the folder are removed.

    Raises:
        ValueError: the checkpoint is missing, or the run had finished (``resume=RUN``).
        UsageError: ``resume=auto`` found the checkpoint of a run started with other settings.
    """
    from yolo_slim.models.checkpoint import check_archive

    for folder in (run_dir, run_dir / "checkpoints"):  # before this run's first write there
        for path in remove_abandoned_partials(folder):
            log.info("removed %s, which an earlier attempt was writing when it was killed", path)
    resume = config.get("resume")
    own = RESUMED_CHECKPOINT[command]
    if resume is None:
        checkpoint = None
    elif resume == AUTO:
        found = own_checkpoint(run_dir, command)
        if found is None:  # said, as an earlier attempt killed before its first epoch ended starts over too
            log.info("resume=auto: %s holds no %s yet, so the run starts from the beginning", run_dir, own.as_posix())
        checkpoint = None if found is None else str(found)
    else:
        if not Path(str(resume)).is_file():
            raise ValueError(f"resume={resume} does not exist; give a {command} run folder or its {own.as_posix()}")
        check_archive(Path(str(resume)))  # a truncated or foreign file is named now, not deep inside Lightning
        checkpoint = str(resume)
    if checkpoint is None:
        record_start(run_dir)
        return None, False
    if resume == AUTO:
        refuse_other_settings(run_dir, config, command)
    # summary.json is written when a run ends, so only then is the checkpoint read here (Lightning reads it
    # again). One killed after its last epoch but before its summary resumes into an empty fit, then writes it.
    from omegaconf import OmegaConf

    summary = run_dir / "summary.json"
    epochs = OmegaConf.select(config, epochs_setting)
    if not summary.is_file() or not _finished(checkpoint, epochs):
        return checkpoint, False
    if resume == AUTO:
        log.info("%s finished its %s epochs already (%s): nothing to do", run_dir, epochs, summary)
        return checkpoint, True
    raise ValueError(f"resume={run_dir} finished its {epochs_setting}={epochs} epochs and wrote {summary.name}: "
                     f"there is nothing to continue; {longer.format(checkpoint=checkpoint)}")


def _finished(checkpoint: str, epochs: object) -> bool:
    """Whether ``checkpoint`` was saved at the end of the fit's last epoch (the resumed checkpoints are written
    at each epoch's end, ``epoch`` counting from 0). Lightning would resume such a run into a fit with nothing
    in it."""
    from yolo_slim.models.checkpoint import read_checkpoint

    if not isinstance(epochs, int) or epochs < 0:  # -1 / null: no epoch limit
        return False
    epoch = read_checkpoint(checkpoint).get("epoch")
    return isinstance(epoch, int) and epoch + 1 >= epochs


def is_resume(argument: str) -> bool:
    """Whether a command-line argument sets ``resume``."""
    return argument.startswith(PREFIXES)


def _key(argument: str) -> str:
    return argument.split("=", 1)[0].lstrip("+~")


def _resumable(argument: str) -> bool:
    key = _key(argument)
    return key in RESUMABLE or key.startswith("hydra.")
