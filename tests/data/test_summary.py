"""The per-customer summary on hand-built logs with exact answers (the definitions in docs/reference.md)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pytest

from forecast.config import DataConfig
from forecast.data import summary as summary_module
from forecast.data.ingest import read_transactions
from forecast.data.summary import holdout_purchases, summarize

AS_OF = dt.date(2020, 3, 31)
ROWS = [
    ("A", "2020-01-01 09:00:00", 10.0),
    ("A", "2020-01-01 17:30:00", 5.0),  # same day: one purchase of 15
    ("A", "2020-01-15 12:00:00", 20.0),
    ("A", "2020-02-12 12:00:00", 30.0),
    ("B", "2020-03-01 08:00:00", 7.0),  # one-time buyer
    ("C", "2020-02-01 10:00:00", 10.0),
    ("C", "2020-04-05 10:00:00", 100.0),  # after as_of: not counted
    ("D", "2020-04-02 10:00:00", 55.0),  # only after as_of: not a customer yet
    ("E", "2020-01-10 10:00:00", 50.0),
    ("E", "2020-01-20 10:00:00", 40.0),
    ("E", "2020-01-20 11:00:00", -10.0),  # a return, netted into its day
    ("007", "2020-03-31 23:59:00", 12.5),  # leading zeros kept; last minute of as_of counts
]


@pytest.fixture
def transactions(write_log):
    return read_transactions(DataConfig(path=str(write_log(ROWS))))


def test_summary_of_hand_built_log_is_exact(transactions):
    """Same-day merge, one-time buyers, rows after as_of, returns netted, ids as given."""
    summary = summarize(transactions.connection, AS_OF, days_per_unit=7.0)
    assert list(summary.index) == ["007", "A", "B", "C", "E"]
    a = summary.loc["A"]
    assert a["frequency"] == 2
    assert a["recency"] == pytest.approx(42 / 7)
    assert a["T"] == pytest.approx(90 / 7)
    assert a["monetary_value"] == pytest.approx(25.0)
    assert a["revenue"] == pytest.approx(65.0)
    b = summary.loc["B"]
    assert (b["frequency"], b["recency"], b["T"], b["monetary_value"]) == (0, 0.0, pytest.approx(30 / 7), 0.0)
    c = summary.loc["C"]
    assert c["frequency"] == 0
    assert c["revenue"] == pytest.approx(10.0)
    e = summary.loc["E"]
    assert e["frequency"] == 1
    assert e["monetary_value"] == pytest.approx(30.0)
    assert summary.loc["007", "T"] == 0.0


def test_summary_time_unit_only_rescales(transactions):
    """recency and T are days divided by the unit's length (recency 30.43 weeks = 213 days / 7)."""
    days = summarize(transactions.connection, AS_OF, days_per_unit=1.0)
    weeks = summarize(transactions.connection, AS_OF, days_per_unit=7.0)
    assert days.loc["A", "recency"] == 42
    assert (days["T"] / 7).to_numpy() == pytest.approx(weeks["T"].to_numpy())


def test_exact_resolution_keeps_same_day_purchases_apart(transactions):
    summary = summarize(transactions.connection, AS_OF, days_per_unit=1.0, resolution="exact")
    a = summary.loc["A"]
    assert a["frequency"] == 3
    assert a["recency"] == pytest.approx(
        (dt.datetime(2020, 2, 12, 12) - dt.datetime(2020, 1, 1, 9)).total_seconds() / 86400
    )
    assert a["T"] == pytest.approx((dt.datetime(2020, 4, 1) - dt.datetime(2020, 1, 1, 9)).total_seconds() / 86400)
    assert a["monetary_value"] == pytest.approx((5 + 20 + 30) / 3)


def test_as_of_before_every_transaction_is_a_clear_error(transactions):
    from forecast.errors import DataError

    with pytest.raises(DataError, match="No transactions on or before as_of 2019-12-31"):
        summarize(transactions.connection, dt.date(2019, 12, 31))


def test_holdout_counts_purchase_days_of_calibration_customers_only(transactions):
    holdout = holdout_purchases(transactions.connection, dt.date(2020, 1, 31), dt.date(2020, 4, 30))
    assert list(holdout.index) == ["A", "E"]
    assert holdout.loc["A", "purchases_holdout"] == 1
    assert holdout.loc["A", "revenue_holdout"] == pytest.approx(30.0)
    assert holdout.loc["E", "purchases_holdout"] == 0


def test_cdnow_sample_summary_matches_published_cohort(sample_config_path):
    """CDNOW sample: 2,357 customers, 2,457 repeat purchases in weeks 1-39 (recomputed, tests/reference.py);
    customer 1 has x=2, t_x=30.43, T=38.86 (Fader, Hardie & Lee 2005, lifetimes' cdnow_customers_summary.csv)."""
    from forecast.config import load_config
    from tests.reference import CDNOW_SAMPLE_CALIBRATION_REPEAT_PURCHASES

    config = load_config(sample_config_path)
    transactions = read_transactions(config.data)
    summary = summarize(transactions.connection, dt.date(1997, 9, 30), 7.0)
    assert len(summary) == 2357
    assert summary["frequency"].sum() == CDNOW_SAMPLE_CALIBRATION_REPEAT_PURCHASES
    first = summary.loc["0001"]
    assert (first["frequency"], round(first["recency"], 2), round(first["T"], 2)) == (2, 30.43, 38.86)


def test_csv_parquet_glob_and_folder_give_the_same_summary(tmp_path):
    """One log split over files, as CSV, Parquet, a glob or a folder: identical summaries."""
    from forecast.data.simulate import simulate_transactions

    log = simulate_transactions(300, end=dt.date(2020, 12, 31), seed=5)
    (tmp_path / "csv").mkdir()
    (tmp_path / "pq").mkdir()
    halves = {"a": log.iloc[: len(log) // 2], "b": log.iloc[len(log) // 2 :]}
    for name, part in halves.items():
        part.to_csv(tmp_path / "csv" / f"{name}.csv", index=False)
        part.to_parquet(tmp_path / "pq" / f"{name}.parquet", index=False)
    paths = [
        str(tmp_path / "csv"),
        str(tmp_path / "csv" / "*.csv"),
        str(tmp_path / "pq"),
        str(tmp_path / "pq/*.parquet"),
    ]
    summaries = [
        summarize(read_transactions(DataConfig(path=path)).connection, dt.date(2020, 12, 31)) for path in paths
    ]
    assert len(summaries[0]) == 300
    for other in summaries[1:]:
        assert other.index.equals(summaries[0].index)
        assert other[["frequency", "recency", "T"]].equals(summaries[0][["frequency", "recency", "T"]])
        assert other["monetary_value"].to_numpy() == pytest.approx(summaries[0]["monetary_value"].to_numpy())


def test_a_log_summarised_in_ranges_of_customers_gives_the_same_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large logs are summarised one range of customer ids at a time; the summary must not change."""
    config = DataConfig(
        path="lifetimes:CDNOW_master.txt", format="whitespace", header=True,
        columns=["customer_id", "date", "number_of_cds", "dollar_value"], timestamp="date",
        timestamp_format="%Y%m%d", amount="dollar_value",
    )  # fmt: skip
    transactions = read_transactions(config)
    con = transactions.connection
    whole = summary_module.summarize(con, dt.date(1998, 6, 30))
    monkeypatch.setattr(summary_module, "ROWS_PER_SUMMARY_PART", 10_000)
    ranges = summary_module.customer_ranges(con, dt.date(1998, 7, 1))
    assert len(ranges) == 6  # 69,659 rows: 7 ranges (at most 8)
    # A known bound on the rows decides without counting: one range when it fits, else counted as before.
    assert summary_module.customer_ranges(con, dt.date(1998, 7, 1), rows_at_most=10_000) == []
    assert summary_module.customer_ranges(con, dt.date(1998, 7, 1), rows_at_most=69_659) == ranges
    # The id quantiles that the checks took from the whole (clean) log place the same ranges without a pass
    # (asked of a connection that has no log).
    assert transactions.id_quantiles is not None
    elsewhere = duckdb.connect()
    assert summary_module.customer_ranges(elsewhere, dt.date(1998, 7, 1), 69_659, transactions.id_quantiles) == ranges
    in_ranges = summary_module.summarize(con, dt.date(1998, 6, 30))
    pd.testing.assert_frame_equal(in_ranges, whole)
    assert in_ranges.index.is_monotonic_increasing and in_ranges.index.is_unique
