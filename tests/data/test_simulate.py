"""The simulator: its log has the contract's shape, and fitting it recovers the parameters it was drawn from."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from forecast.cli import app
from forecast.config import DataConfig
from forecast.data.ingest import read_transactions
from forecast.data.simulate import TrueParams, simulate_table, simulate_transactions, write_simulated_log
from forecast.data.summary import summarize
from forecast.models import fit_models

END = dt.date(2021, 6, 30)


def test_simulated_log_is_sorted_by_customer_and_time_within_the_window() -> None:
    log = simulate_transactions(2_000, seed=5)
    assert list(log.columns) == ["customer_id", "timestamp", "amount"]
    assert log["customer_id"].nunique() == 2_000
    ordered = log.sort_values(["customer_id", "timestamp"], kind="stable")
    assert ordered.index.equals(log.index)
    assert log["timestamp"].min() >= pd.Timestamp("2020-01-01")
    assert log["timestamp"].max() < pd.Timestamp(END + dt.timedelta(days=1))
    assert (log["amount"] > 0).all()
    # every customer's first purchase falls in the 84-day acquisition period
    first = log.groupby("customer_id")["timestamp"].min()
    assert first.max() < pd.Timestamp("2020-01-01") + pd.Timedelta(days=84)


def test_simulation_depends_only_on_its_arguments() -> None:
    one = simulate_table(500, seed=11, first_id=1_000)
    two = simulate_table(500, seed=11, first_id=1_000)
    other = simulate_table(500, seed=12, first_id=1_000)
    assert one.equals(two)
    assert not one.equals(other)
    assert one.column("customer_id")[0].as_py() == "0000001000"


def test_chunked_writer_writes_every_customer_once(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    rows = write_simulated_log(path, 2_500, seed=4, chunk_customers=1_000)
    table = pq.read_table(path)
    assert table.num_rows == rows
    ids = table.column("customer_id").to_numpy(zero_copy_only=False)
    assert len(np.unique(ids)) == 2_500
    assert ids.min() == "0000000000" and ids.max() == "0000002499"


def test_cli_simulate_writes_parquet_and_rejects_a_bad_time_unit(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "sim.parquet"
    result = runner.invoke(app, ["simulate", str(path), "--customers", "300", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert pq.read_metadata(path).num_rows > 300
    bad = runner.invoke(app, ["simulate", str(tmp_path / "x.parquet"), "--customers", "3", "--time-unit", "year"])
    assert bad.exit_code == 2
    assert not (tmp_path / "x.parquet").exists()


def test_fit_on_exact_timestamps_recovers_the_true_parameters(tmp_path: Path) -> None:
    """Every fitted parameter lies within 3 standard errors of the simulator's true value (20,000 customers)."""
    truth = TrueParams()
    path = tmp_path / "sim.parquet"
    write_simulated_log(path, 20_000, truth, end=END, seed=2026)
    transactions = read_transactions(DataConfig(path=str(path)))
    summary = summarize(transactions.connection, END, days_per_unit=7.0, resolution="exact")
    purchases, spend = fit_models(summary, "bgnbd")
    for model in (purchases, spend):
        result = model.result_
        assert result is not None
        for name, estimate in result.params.items():
            error = result.standard_errors[name]
            assert error is not None and error > 0
            assert abs(estimate - getattr(truth, name)) < 3 * error, (name, estimate, error)
