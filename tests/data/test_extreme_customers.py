"""The extreme-customer rule (``forecast.data.summary.extreme_customers``) on real and simulated logs.

A shared guest-checkout id or one amount typed with extra digits must be named, with the policy that leaves it out
(``data.exclude_customers``); ordinary logs, whose heaviest customers are merely heavy, must not be.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.api import summarize
from forecast.data.simulate import TrueParams, simulate_transactions
from forecast.data.summary import (
    EXTREME_FACTOR,
    EXTREME_SHARE,
    extreme_customers,
    extreme_customers_message,
)

END = dt.date(2021, 6, 30)


def simulated(customers: int = 2_000, seed: int = 0, alpha: float = 4.0, gamma: float = 15.0) -> pd.DataFrame:
    """A simulated log (BG/NBD purchases, Gamma-Gamma spend) from 2020-01-01 to ``END``."""
    return simulate_transactions(customers, TrueParams(alpha=alpha, gamma=gamma), end=END, seed=seed)


def guest_checkout(purchases: int = 100_000) -> pd.DataFrame:
    """A shared guest-checkout id: ``purchases`` purchases of 12.50 spread over each of the log's 546 days."""
    k = np.arange(purchases)
    moments = pd.Timestamp("2020-01-01") + pd.to_timedelta(k % 546, unit="D") + pd.to_timedelta(k % 86_400, unit="s")
    return pd.DataFrame({"customer_id": "guest", "timestamp": moments.astype("datetime64[s]"), "amount": 12.5})


def with_rows(log: pd.DataFrame, *extra: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([log, *extra], ignore_index=True)


def summary_of(log: pd.DataFrame, as_of: dt.date = END) -> pd.DataFrame:
    return summarize(log, as_of=as_of, time_unit="week")


def test_a_guest_checkout_id_within_the_percentile_limits_is_named_by_its_share_of_revenue():
    """The audit's case: 100,000 purchases on 546 days beside 2,000 customers whose repeat buyers' 99th percentiles
    are 32 repeat purchases and an average spend of 130: the id's 545 repeat purchases and average spend of 2,289
    stay under 20 times them, yet it holds 84% of the revenue (and 93% of the run's CLV). It is named, with
    data.exclude_customers."""
    summary = summary_of(with_rows(simulated(alpha=3.0, gamma=18.0), guest_checkout()))
    guest = summary.loc["guest"]
    repeat = summary[summary["frequency"] > 0]
    assert guest["frequency"] == 545
    assert guest["frequency"] < EXTREME_FACTOR * repeat["frequency"].quantile(0.99)
    assert guest["monetary_value"] < EXTREME_FACTOR * repeat["monetary_value"].quantile(0.99)
    assert guest["revenue"] > 0.8 * summary["revenue"].sum()

    assert list(extreme_customers(summary).index) == ["guest"]
    message = extreme_customers_message(summary)
    assert message is not None
    assert "'guest' (545 repeat purchases, average spend 2,289" in message
    assert "of all revenue" in message and "data.exclude_customers" in message


@pytest.mark.parametrize("amount", [1e20, 10_000.0])
def test_a_one_time_buyer_with_an_absurd_amount_is_named(amount):
    """One purchase of 1e20 holds all the revenue; one of 10,000 only 5% of it, but is over 20 times the repeat
    buyers' 99th-percentile average spend: a one-time buyer's amount is judged as an average spend."""
    typo = pd.DataFrame({"customer_id": ["typo"], "timestamp": [pd.Timestamp("2021-03-03 10:00")], "amount": [amount]})
    summary = summary_of(with_rows(simulated(), typo.astype({"timestamp": "datetime64[s]"})))
    assert summary.loc["typo", "frequency"] == 0

    assert list(extreme_customers(summary).index) == ["typo"]
    message = extreme_customers_message(summary)
    assert message is not None
    assert "'typo' (one purchase of" in message and "data.exclude_customers" in message


def test_a_heavy_customer_is_named_only_if_it_holds_a_large_share_of_the_log():
    """Revenue far beyond the 99th-percentile customer's is not enough on its own (CDNOW's heaviest buyers reach 22
    times it): the customer must also hold over EXTREME_SHARE of the revenue."""
    summary = pd.DataFrame(
        {
            "frequency": np.r_[np.arange(1_000) % 5, 4],
            "monetary_value": np.r_[np.full(1_000, 20.0), 20.0],
            "revenue": np.r_[np.full(1_000, 100.0), 0.0],
        },
        index=pd.Index([f"c{i}" for i in range(1_001)], name="customer_id"),
    )
    below = EXTREME_SHARE * 0.9 * 100_000 / (1 - EXTREME_SHARE * 0.9)
    summary.loc["c1000", "revenue"] = below
    assert extreme_customers(summary).empty
    summary.loc["c1000", "revenue"] = 2 * below
    assert list(extreme_customers(summary).index) == ["c1000"]


def cdnow(name: str) -> pd.DataFrame:
    """One of the CDNOW logs lifetimes ships, as (customer_id, timestamp, amount)."""
    spec = importlib.util.find_spec("lifetimes")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "datasets" / name
    # The sample has no header and a first column of master ids; the master has a header line.
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, skiprows=int(name == "CDNOW_master.txt"))
    raw = raw.iloc[:, -4:].set_axis(["customer_id", "date", "cds", "amount"], axis=1)
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d").astype("datetime64[s]"),
            "amount": raw["amount"].astype(float),
        }
    )


@pytest.mark.parametrize(
    ("name", "as_of"),
    [
        ("CDNOW_sample.txt", dt.date(1997, 3, 31)),
        ("CDNOW_sample.txt", dt.date(1997, 9, 30)),
        ("CDNOW_sample.txt", dt.date(1998, 6, 30)),
        ("CDNOW_master.txt", dt.date(1997, 3, 31)),  # its heaviest buyer: 22x the 99th percentile, 0.6% of revenue
        ("CDNOW_master.txt", dt.date(1998, 6, 30)),
    ],
)
def test_the_cdnow_logs_name_nobody(name, as_of):
    summary = summary_of(cdnow(name), as_of)
    assert extreme_customers(summary).empty
    assert extreme_customers_message(summary) is None


@pytest.mark.parametrize(("seed", "alpha", "gamma"), [(0, 4.0, 15.0), (1, 4.0, 15.0), (2, 4.0, 15.0), (0, 3.0, 18.0)])
def test_simulated_logs_of_2000_customers_name_nobody(seed, alpha, gamma):
    summary = summary_of(simulated(seed=seed, alpha=alpha, gamma=gamma))
    assert extreme_customers(summary).empty
