"""Shared by the evaluation tests: the CDNOW sample's config and transactions, and a connection holding given rows."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from forecast.config import RunConfig, load_config
from forecast.data.ingest import read_transactions
from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def sample_config() -> RunConfig:
    return load_config(CONFIGS / "cdnow_sample.yaml")


@pytest.fixture(scope="module")
def sample_log(sample_config: RunConfig) -> pd.DataFrame:
    """The CDNOW sample's normalised transactions (customer_id, ts, amount) as a frame."""
    con = read_transactions(sample_config.data).connection
    return con.execute("SELECT customer_id, ts, amount FROM transactions").df()


def connection_for(log: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose ``transactions`` table holds exactly these rows, in this order.

    One thread: DuckDB's parallel sums differ in the last bits from run to run (their order varies), which would
    hide whether a difference comes from the data or from the summation order.
    """
    con = duckdb.connect(config={"threads": 1})
    con.register("log_frame", log)
    con.execute("CREATE TABLE transactions AS SELECT customer_id, ts, amount FROM log_frame")
    con.unregister("log_frame")
    return con
