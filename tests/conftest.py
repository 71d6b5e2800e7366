"""Shared test settings: CPU only, a per-session cache for the generated synthetic data."""

import os
from pathlib import Path

import pytest
from cli_support import TINY_TRAIN, run_cli


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> str:
    """A cache folder for the synthetic set, shared by the tests of one session (generated once per config)."""
    return str(tmp_path_factory.mktemp("yolo_slim_cache"))


@pytest.fixture()
def cli_environment(synthetic_cache) -> dict[str, str]:
    """Environment for CLI subprocesses: the session cache, no GPU, quiet warnings about it."""
    return {**os.environ, "YOLO_SLIM_CACHE": synthetic_cache, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_cache) -> Path:
    """A 2-epoch `train` run on a tiny generated set, shared by the CLI tests (it costs ~20 s)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    environment = {**os.environ, "YOLO_SLIM_CACHE": synthetic_cache, "CUDA_VISIBLE_DEVICES": "",
                   "PYTHONWARNINGS": "ignore"}
    result = run_cli(["train", *TINY_TRAIN, f"hydra.run.dir={run_dir}"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
