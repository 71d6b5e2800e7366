"""Command-line entry: ``python -m yolo_slim <command> [overrides]``; the only place Hydra lives.

Hydra parses ``sys.argv`` itself and would take a bare ``train`` for a malformed override, so
the dispatcher pops the command word first. An argument list without a command means ``train``:
Lightning's DDP launcher re-runs ``sys.argv[1:]`` (already without the command) in its child
processes, and they must land in the same command.
"""

from __future__ import annotations

import importlib
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
    """Return (command, remaining arguments); no leading command word means ``train``."""
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        known = ", ".join(COMMANDS)
        raise SystemExit(f"yolo_slim: unknown command {argv[0]!r}; commands: {known}")
    return DEFAULT_COMMAND, argv


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the command's Hydra app; ``argv`` defaults to ``sys.argv[1:]``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] in (["-h"], ["--help"]) or arguments[:1] == ["help"]:
        print(_USAGE + "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items()))
        print("\nHydra's own help for a command: python -m yolo_slim <command> --help")
        return
    command, rest = split_command(arguments)
    import hydra  # deferred: `import yolo_slim` must not pull Hydra in

    task = importlib.import_module(f"yolo_slim.cli.{command}").run
    sys.argv = [sys.argv[0], *rest]
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=command)(task)()
