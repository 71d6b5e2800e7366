"""Shared test settings: CPU only, a per-session cache for the generated synthetic data."""

import os

import pytest


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> str:
    """A cache folder for the synthetic set, shared by the tests of one session (generated once per config)."""
    return str(tmp_path_factory.mktemp("yolo_slim_cache"))


@pytest.fixture()
def cli_environment(synthetic_cache) -> dict[str, str]:
    """Environment for CLI subprocesses: the session cache, no GPU, quiet warnings about it."""
    return {**os.environ, "YOLO_SLIM_CACHE": synthetic_cache, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
