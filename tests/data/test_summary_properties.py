"""Property tests: on generated transaction logs, ingest + summary obey the definitions of docs/reference.md.

Checked for any log: recency <= T; frequency = purchase days - 1; monetary_value = mean amount of the
repeat purchase days; the summary does not depend on row order; rows after as_of never change it and
are counted in the data-quality report.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecast.config import DataConfig
from forecast.data.ingest import count_after_as_of, read_transactions
from forecast.data.summary import summarize

START = dt.datetime(2020, 1, 1)
AS_OF = dt.date(2020, 12, 31)
IDS = ["007", "7", "A", "b-1", "Клиент", "顧客", "x y", "=1+1"]

row = st.tuples(
    st.sampled_from(IDS),
    st.integers(min_value=0, max_value=365),  # day offset: 2020 has 366 days, so all on or before AS_OF
    st.integers(min_value=0, max_value=23 * 60 + 59),  # minute of the day
    st.integers(min_value=1, max_value=100_000).map(lambda cents: cents / 100),
)
late_row = st.tuples(
    st.sampled_from([*IDS, "newcomer"]),
    st.integers(min_value=366, max_value=500),  # after AS_OF
    st.integers(min_value=0, max_value=1439),
    st.integers(min_value=1, max_value=100_000).map(lambda cents: cents / 100),
)


def write(rows, folder: Path, name: str) -> Path:
    path = folder / name
    lines = ["customer_id,timestamp,amount"]
    for customer, day, minute, amount in rows:
        moment = START + dt.timedelta(days=day, minutes=minute)
        lines.append(f'"{customer}",{moment:%Y-%m-%d %H:%M:%S},{amount}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def summary_of(path: Path, as_of: dt.date = AS_OF):
    transactions = read_transactions(DataConfig(path=str(path)))
    return transactions, summarize(transactions.connection, as_of, days_per_unit=7.0)


def expected_summary(rows) -> dict[str, tuple[int, float, float, float]]:
    """frequency, recency (weeks), T (weeks), monetary_value per customer, from the definitions."""
    days: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for customer, day, _minute, amount in rows:
        days[customer][day] += amount
    end = (AS_OF - START.date()).days
    result = {}
    for customer, by_day in days.items():
        ordered = sorted(by_day)
        repeat = [by_day[d] for d in ordered[1:]]
        monetary = sum(repeat) / len(repeat) if repeat else 0.0
        result[customer] = (len(ordered) - 1, (ordered[-1] - ordered[0]) / 7, (end - ordered[0]) / 7, monetary)
    return result


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=60), late=st.lists(late_row, max_size=10), seed=st.integers(0, 99))
def test_summary_invariants_on_generated_logs(rows, late, seed):
    with tempfile.TemporaryDirectory() as folder:
        transactions, summary = summary_of(write(rows, Path(folder), "log.csv"))

        expected = expected_summary(rows)
        assert set(summary.index) == set(expected)
        for customer, (frequency, recency, T, monetary) in expected.items():
            got = summary.loc[customer]
            assert got["frequency"] == frequency
            assert got["recency"] == pytest.approx(recency, abs=1e-9)
            assert got["T"] == pytest.approx(T, abs=1e-9)
            assert got["monetary_value"] == pytest.approx(monetary, rel=1e-9, abs=1e-9)
        assert (summary["recency"] <= summary["T"]).all()
        assert (summary["recency"] >= 0).all()

        shuffled = list(rows) + list(late)
        random.Random(seed).shuffle(shuffled)
        later, summary_later = summary_of(write(shuffled, Path(folder), "shuffled_with_late_rows.csv"))
        pd.testing.assert_frame_equal(summary_later, summary, check_exact=False, rtol=1e-12)
        assert count_after_as_of(later, AS_OF).quality.after_as_of == len(late)
        assert count_after_as_of(transactions, AS_OF).quality.after_as_of == 0
