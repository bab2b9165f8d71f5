"""Fixtures of the report tests: one finished sample run, and private copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forecast.batch.pipeline import run
from forecast.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of configs/cdnow_sample.yaml (2,357 CDNOW customers, as_of 1997-09-30) in a scratch folder."""
    folder = tmp_path_factory.mktemp("report")
    config = load_config(ROOT / "configs" / "cdnow_sample.yaml")
    config = config.model_copy(update={"models_dir": str(folder / "models")})
    return run(config, output=folder / "run").output


@pytest.fixture
def run_copy(sample_run: Path, tmp_path: Path) -> Path:
    """A private copy of the sample run that a test may change."""
    copy = tmp_path / "run"
    shutil.copytree(sample_run, copy)
    return copy
