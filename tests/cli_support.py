"""Helpers for tests that run the CLI as a subprocess or in this process (pytest puts tests/ on sys.path)."""

import subprocess
import sys


TINY_TRAIN = ["model=yolov5n", "data.synthetic.num_train=24", "data.synthetic.num_val=8",
              "data.synthetic.image_size=96", "data.imgsz=96", "data.batch_size=8", "data.workers=0",
              "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.log_every_n_steps=1"]


def run_cli(arguments: list[str], environment: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yolo_slim", *arguments], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def run_cli_in_process(arguments: list[str], environment: dict[str, str] | None,
                       capture) -> subprocess.CompletedProcess:
    """``run_cli`` inside this process, for the cases that stop before any long work: it saves the seconds
    a fresh interpreter spends importing torch and Lightning. ``capture`` is pytest's ``capfd``; of
    ``environment`` only the data cache is taken (this process has its own GPU settings and warnings), and
    None leaves the cache as it is, for commands that read no data (``info``).
    The dispatcher's environment variables, ``sys.argv`` and Hydra's logging set-up are put back after it.
    A few cases of each kind stay subprocesses (run_cli), as users meet them."""
    import logging
    import os

    from yolo_slim.cli import main

    saved_environment, saved_argv = dict(os.environ), list(sys.argv)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    # Hydra's dictConfig disables and re-levels the loggers that exist; caplog in later tests needs them back.
    saved_loggers = {name: (logger.disabled, logger.propagate, logger.level)
                     for name, logger in logging.Logger.manager.loggerDict.items()
                     if isinstance(logger, logging.Logger)}
    if environment is not None:
        os.environ["YOLO_SLIM_CACHE"] = environment["YOLO_SLIM_CACHE"]
    capture.readouterr()
    code = 0
    try:
        main(list(arguments))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)
        sys.argv = saved_argv
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, (disabled, propagate, level) in saved_loggers.items():
            logger = logging.getLogger(name)
            logger.disabled, logger.propagate = disabled, propagate
            logger.setLevel(level)
    output = capture.readouterr()
    return subprocess.CompletedProcess(["yolo_slim", *arguments], code, output.out, output.err)
