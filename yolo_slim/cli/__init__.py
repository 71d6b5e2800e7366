"""Command-line entry: ``python -m yolo_slim <command> [overrides]``; the only place Hydra lives.

Hydra parses ``sys.argv`` itself and would take a bare ``train`` for a malformed override, so
the dispatcher pops the command word first. An argument list without a command means ``train``,
except in the child processes Lightning's DDP launcher starts: it re-runs ``sys.argv[1:]`` (already
without the command) with ``hydra.job.name=train_ddp_process_<rank>`` added, and such a child takes
the command its parent ran from the environment (``YOLO_SLIM_COMMAND``), so that ``val`` or
``prune`` on several devices runs ``val`` or ``prune`` on each. ``train resume=RUN`` (and ``prune resume=RUN``)
is rewritten here into a Hydra run of that folder's own saved config (:mod:`yolo_slim.cli.resume`). Errors
the user caused come out as one line and exit status 2 (:mod:`yolo_slim.cli.errors`).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

COMMANDS: dict[str, str] = {
    "train": "train a YOLOv5 (built-in data by default)",
    "val": "mAP of a trained checkpoint",
    "prune": "one-shot pruning of a checkpoint: plan, compact, evaluate before and after",
    "info": "per-layer table, parameters and GFLOPs of a model",
    "predict": "detections on your images: annotated pictures, labels, COCO json; compare= two models",
    "export": "deployable file of a checkpoint: ONNX, ultralytics .pt or TorchScript, each checked",
}
DEFAULT_COMMAND = "train"
# The command of the running dispatcher, for the DDP child processes Lightning starts (see above).
COMMAND_VARIABLE = "YOLO_SLIM_COMMAND"
_DDP_CHILD_MARK = "hydra.job.name=train_ddp_process_"  # what Lightning's launcher adds to a child's argv
_USAGE = "usage: python -m yolo_slim <command> [key=value ...]\n\ncommands:\n"


def config_dir() -> Path:
    """Folder of the Hydra configs: inside the package for a wheel, ``conf/`` at the repo root otherwise."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "info.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"yolo_slim's Hydra configs are missing (looked in {package / 'conf'} and "
                            f"{package.parent / 'conf'}); reinstall the package")


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """Return (command, remaining arguments); no leading command word means ``train``.

    Raises:
        UsageError: an unknown command word.
    """
    from yolo_slim.cli.errors import UsageError

    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        raise UsageError(f"unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}")
    inherited = os.environ.get(COMMAND_VARIABLE)
    if inherited in COMMANDS and any(argument.startswith(_DDP_CHILD_MARK) for argument in argv):
        return inherited, argv
    return DEFAULT_COMMAND, argv


# Hydra re-raises a job's exception only when HYDRA_FULL_ERROR is set; yolo_slim sets it to print user
# errors itself, and marks that it did, so that a user's own HYDRA_FULL_ERROR=1 (full tracebacks for
# every error) is told apart, in child processes too.
_SET_BY_US = "YOLO_SLIM_SET_HYDRA_FULL_ERROR"
_REPORTED = "yolo_slim_reported"  # set on a sweep job's error whose line the job printed


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the command's Hydra app; ``argv`` defaults to ``sys.argv[1:]``."""
    from yolo_slim.cli.errors import (EXIT_USAGE, UsageError, describe_hydra_error, one_line,
                                      refuse_unread_additions, report)

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] in (["-h"], ["--help"]) or arguments[:1] == ["help"]:
        print(_USAGE + "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items()))
        print("\nHydra's own help for a command: python -m yolo_slim <command> --help")
        return
    tracebacks = os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_SET_BY_US) != "1"
    if not tracebacks:
        os.environ.update({"HYDRA_FULL_ERROR": "1", _SET_BY_US: "1"})
    command, overrides = "", arguments
    try:
        command, rest = split_command(arguments)
        import hydra  # deferred: `import yolo_slim` must not pull Hydra in

        task_module = f"yolo_slim.cli.{command}"  # imported by the job: a config error skips the command's imports
        config_path, config_name, overrides = str(config_dir()), command, rest
        from yolo_slim.cli.resume import RESUMED_CHECKPOINT, is_resume, resume_arguments

        refuse_unread_additions(command, rest)  # `+key=value` that nothing would read
        if command in RESUMED_CHECKPOINT and any(is_resume(argument) for argument in rest):
            config_path, config_name, overrides = resume_arguments(rest, command)
        from yolo_slim.cli.schemas import register_schemas

        register_schemas()  # the dataclasses behind the yaml files' `- /schema/...` defaults
        sys.argv = [sys.argv[0], *overrides]
        os.environ[COMMAND_VARIABLE] = command  # inherited by Lightning's DDP children (split_command)
        failed: list[str] = []
        started: list[bool] = []  # whether Hydra got as far as the job (past making its run folder and log file)
        sweep = bool({"-m", "--multirun"} & set(overrides))

        def job(config: object) -> None:
            from yolo_slim.data.dataset_config import DataConfigError

            started.append(True)
            try:
                importlib.import_module(task_module).run(config)
            # The data's own faults are the user's wherever they surface: a split is scanned in the
            # datamodule's setup, inside the fit, after the command's set-up has passed.
            except (UsageError, DataConfigError) as error:
                if tracebacks:
                    raise  # HYDRA_FULL_ERROR=1 wants the traceback
                message = one_line(str(error))
                report(command, message)  # here, inside the job, its log file is still open
                if sweep:
                    # Marked on the error itself, which survives the pickling of a joblib worker's result.
                    setattr(error, _REPORTED, True)
                    raise  # a sweep records the failed job (sweep_summary's `error`) and goes on
                failed.append(message)

        # Hydra names the job (and its log file) after the task function's module, read as a name only.
        job.__module__, job.__name__, job.__qualname__ = task_module, "run", "run"
        hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(job)()
        if failed:
            raise SystemExit(EXIT_USAGE)
    except Exception as error:
        if tracebacks:
            raise
        if getattr(error, _REPORTED, False):
            # Hydra re-raises the sweep's first failure once every job has run, after printing the overrides of
            # its job ("Error executing job with overrides: [...]"); its line was printed by the job already.
            raise SystemExit(EXIT_USAGE) from None
        message = str(error) if isinstance(error, UsageError) else describe_hydra_error(error, command, overrides)
        if message is None and isinstance(error, OSError) and not started:
            # Hydra makes the run folder and opens its log file before the job: a folder that cannot be made
            message = (f"cannot write the run folder: {error.strerror} ({error.filename}); give hydra.run.dir= "
                       f"(hydra.sweep.dir= with -m) a folder you can write to")
        if message is None:
            raise
        report(command, message)
        raise SystemExit(EXIT_USAGE) from None
