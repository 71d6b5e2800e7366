"""Our callbacks' INFO lines reach the console in a script that set up no logging, as Lightning's do."""

import logging
from types import SimpleNamespace

import pytest

from yolo_slim.lit import AutoAnchor, SlimCallback, TrainingSpeed


def _start(callback) -> None:
    """The hook each callback shows its lines from, with nothing it would go on to read."""
    if isinstance(callback, AutoAnchor):
        callback.on_fit_start(SimpleNamespace(ckpt_path="resumed.ckpt"), None)  # returns right after
    else:
        callback.setup(None, None, "validate")


def _no_logging_set_up(monkeypatch) -> logging.Logger:
    """The logging of a plain `python script.py`: no handler anywhere. Called in the test's body, since pytest
    adds its own handlers to the root logger after the fixtures are set up."""
    package = logging.getLogger("yolo_slim")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "propagate", True)
    return package


@pytest.fixture(autouse=True)
def _package_level_put_back():
    """setLevel, not an attribute's restore: it also clears the loggers' cached "is INFO enabled" answers."""
    package = logging.getLogger("yolo_slim")
    saved = package.level
    yield
    package.setLevel(saved)


@pytest.mark.parametrize("make", [SlimCallback, TrainingSpeed, AutoAnchor], ids=lambda make: make.__name__)
def test_a_script_without_logging_set_up_sees_the_info_lines(monkeypatch, capsys, make):
    _no_logging_set_up(monkeypatch)
    _start(make())
    logging.getLogger("yolo_slim.lit.slim_callback").info("pruned at epoch 3: 10 of 20 channels removed")
    assert "pruned at epoch 3: 10 of 20 channels removed" in capsys.readouterr().err
    _start(make())  # a second fit adds no second handler
    logging.getLogger("yolo_slim.lit.speed").info("epoch 4: 100.0 training images/s")
    assert capsys.readouterr().err.count("epoch 4: 100.0 training images/s") == 1


def test_a_program_that_configured_logging_keeps_it(monkeypatch):
    package = _no_logging_set_up(monkeypatch)
    logging.getLogger().addHandler(logging.NullHandler())  # e.g. logging.basicConfig, Hydra's job logging
    _start(SlimCallback())
    assert package.handlers == [] and package.propagate and package.level == logging.NOTSET


def test_a_level_chosen_for_yolo_slim_is_kept(monkeypatch, capsys):
    package = _no_logging_set_up(monkeypatch)
    package.setLevel(logging.WARNING)  # the program wants yolo_slim's warnings only
    _start(SlimCallback())
    logging.getLogger("yolo_slim.lit.slim_callback").info("pruned at epoch 3: 10 of 20 channels removed")
    logging.getLogger("yolo_slim.lit.slim_callback").warning("a warning")
    assert package.level == logging.WARNING and capsys.readouterr().err == "a warning\n"
