"""Shared fixtures: paths, configs, and a writable scratch folder for every test."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import settings

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))

# Property tests draw the same examples on every run (derandomized): a failure is reproducible, never a flake.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.load_profile("deterministic")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture
def sample_config_path() -> Path:
    """configs/cdnow_sample.yaml: the 2,357-customer CDNOW cohort, as_of 1997-09-30, weeks."""
    return CONFIGS / "cdnow_sample.yaml"


@pytest.fixture
def write_log(tmp_path: Path):
    """Write a small CSV transaction log from rows of (customer_id, timestamp, amount)."""

    def write(rows: list[tuple[str, str, float | str]], name: str = "log.csv") -> Path:
        path = tmp_path / name
        lines = ["customer_id,timestamp,amount"] + [",".join(str(v) for v in row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def cdnow_sample_summary():
    """Summary of the CDNOW sample at the end of week 39 (1997-09-30), in weeks."""
    import datetime as dt

    from forecast.config import load_config
    from forecast.data.ingest import read_transactions
    from forecast.data.summary import summarize

    config = load_config(CONFIGS / "cdnow_sample.yaml")
    transactions = read_transactions(config.data)
    return summarize(transactions.connection, dt.date(1997, 9, 30), 7.0)


def model_with_params(model_class, params: dict[str, float]):
    """A fitted model of ``model_class`` with the given parameters and no standard errors or covariance."""
    return model_class.from_dict(
        {
            "name": model_class.name,
            "params": params,
            "standard_errors": dict.fromkeys(params),
            "covariance_log_params": None,
            "log_likelihood": 0.0,
            "converged": True,
            "customers": 0,
            "unique_rows": 0,
        }
    )


@pytest.fixture(scope="session")
def cdnow_sample() -> pd.DataFrame:
    """The CDNOW sample as (customer_id, timestamp, amount) rows, customer ids with their leading zeros."""
    spec = importlib.util.find_spec("lifetimes")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "datasets" / "CDNOW_sample.txt"
    raw = pd.read_csv(
        path, sep=r"\s+", header=None, names=["master", "customer_id", "date", "cds", "amount"], dtype=str
    )
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d").dt.strftime("%Y-%m-%d"),
            "amount": raw["amount"],
        }
    )
