"""Transaction logs without dropout: every customer buys at a Poisson rate lambda ~ Gamma(r, alpha) for the whole
period (the NBD), with Gamma-Gamma spend. The known truth of the tests of the NBD fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The NBD the tests simulate: lambda ~ Gamma(shape r, rate alpha) purchases a week (mean 0.1 a week).
NBD_TRUTH = {"r": 0.5, "alpha": 5.0}


def nbd_transactions(customers: int = 2000, seed: int = 0, r: float = 0.5, alpha: float = 5.0) -> pd.DataFrame:
    """Simulate a log: customers acquired uniformly over 12 weeks from 2020-01-01, observed to 2021-06-30.

    Each customer's first purchase is on the acquisition day; repeat purchases fall uniformly over the days up to
    2021-06-30, their number Poisson(lambda x weeks observed). Amounts are Gamma(6, nu) with nu ~ Gamma(4, 15)
    per customer (the Gamma-Gamma model of ``forecast.data.simulate``).

    Returns
    -------
    pandas.DataFrame
        Columns customer_id (text), timestamp (YYYY-MM-DD) and amount, one row per purchase.
    """
    rng = np.random.default_rng(seed)
    start, end = pd.Timestamp("2020-01-01"), pd.Timestamp("2021-06-30")
    first = start + pd.to_timedelta(rng.integers(0, 84, customers), unit="D")
    days_observed = (end - first).days.to_numpy() + 1
    rate = rng.gamma(r, 1.0 / alpha, customers)
    repeats = rng.poisson(rate * days_observed / 7.0)
    owner = np.repeat(np.arange(customers), repeats)
    customer = np.concatenate([np.arange(customers), owner])
    day = np.concatenate([np.zeros(customers, dtype=int), rng.integers(0, days_observed[owner])])
    nu = rng.gamma(4.0, 1 / 15.0, customers)
    amount = np.round(rng.gamma(6.0, 1 / nu[customer]), 2)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in customer],
            "timestamp": (first[customer] + pd.to_timedelta(day, unit="D")).strftime("%Y-%m-%d"),
            "amount": amount,
        }
    )
