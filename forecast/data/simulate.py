"""Simulate transaction logs from the BG/NBD process with Gamma-Gamma spend (known truth for tests).

Per customer: lambda ~ Gamma(r, rate alpha) purchases per time unit, p ~ Beta(a, b) dropout after each
repeat purchase, Poisson purchases while alive; spend nu ~ Gamma(q, rate gamma) per customer and
z ~ Gamma(p, rate nu) per purchase. Customers are acquired uniformly over an acquisition period and
observed until the end date; timestamps are exact (to the second).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forecast.config import DAYS_PER_UNIT

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class TrueParams:
    """The process's parameters: BG/NBD (r, alpha, a, b) with alpha per time unit; Gamma-Gamma (p, q, gamma)."""

    r: float = 0.25
    alpha: float = 4.0
    a: float = 0.8
    b: float = 2.5
    p: float = 6.0
    q: float = 4.0
    gamma: float = 15.0


def simulate_transactions(
    customers: int,
    params: TrueParams = TrueParams(),
    start: dt.date = dt.date(2020, 1, 1),
    end: dt.date = dt.date(2021, 6, 30),
    acquisition_days: int = 84,
    time_unit: str = "week",
    seed: int = 0,
    first_id: int = 0,
) -> pd.DataFrame:
    """Simulate one transaction log.

    Parameters
    ----------
    customers
        Number of customers.
    params
        True parameters; ``alpha`` is per ``time_unit``.
    start, end
        First acquisition day and observation end (inclusive).
    acquisition_days
        Customers are acquired uniformly over [start, start + acquisition_days).
    time_unit
        Unit of the purchase rate (day, week, month).
    seed
        Seed of the random generator (the result depends only on the arguments).
    first_id
        Number of the first customer id (ids are zero-padded to 10 digits).

    Returns
    -------
    pandas.DataFrame
        Columns customer_id (string), timestamp (datetime64[s]), amount (float), sorted by customer and time.
    """
    table = simulate_table(customers, params, start, end, acquisition_days, time_unit, seed, first_id)
    return pd.DataFrame(
        {
            "customer_id": pd.array(table.column("customer_id").to_numpy(zero_copy_only=False), dtype="string"),
            "timestamp": table.column("timestamp").to_numpy(),
            "amount": table.column("amount").to_numpy(),
        }
    )


def simulate_table(
    customers: int,
    params: TrueParams = TrueParams(),
    start: dt.date = dt.date(2020, 1, 1),
    end: dt.date = dt.date(2021, 6, 30),
    acquisition_days: int = 84,
    time_unit: str = "week",
    seed: int = 0,
    first_id: int = 0,
) -> pa.Table:
    """Simulate one transaction log as an Arrow table (same arguments and rows as ``simulate_transactions``).

    Everything is vectorised and no step sorts all rows: the Poisson event times are sorted within each
    customer by sorting ``customer + uniform`` keys, and rows are placed by arithmetic on the per-customer
    counts, so the work grows linearly with the rows.

    Returns
    -------
    pyarrow.Table
        Columns customer_id (string, zero-padded to 10 digits), timestamp (timestamp[s]), amount (float64),
        sorted by customer and time.
    """
    rng = np.random.default_rng(seed)
    unit_seconds = DAYS_PER_UNIT[time_unit] * SECONDS_PER_DAY
    window_seconds = ((end - start).days + 1) * SECONDS_PER_DAY
    acquired = rng.uniform(0, acquisition_days * SECONDS_PER_DAY, customers)
    rate = rng.gamma(params.r, 1.0 / params.alpha, customers) / unit_seconds
    dropout = rng.beta(params.a, params.b, customers)
    # Repeat purchases while alive: the customer dies right after the K-th repeat purchase.
    lifetime_purchases = rng.geometric(dropout)
    observed = window_seconds - acquired
    poisson = rng.poisson(rate * observed)
    repeats = np.minimum(poisson, lifetime_purchases)
    del rate, dropout, lifetime_purchases
    # Given N Poisson events in the window, their times are uniform; the first `repeats` of them happen.
    # Sorting owner + u (u in [0, 1)) orders the events by customer, then by time, without a lexsort.
    owner = np.repeat(np.arange(customers, dtype=np.int64), poisson)
    keys = owner + rng.uniform(0, 1, len(owner))
    keys.sort()
    fraction = keys - owner
    del keys
    starts = np.cumsum(poisson) - poisson
    rank = np.arange(len(owner)) - np.repeat(starts, poisson)
    kept = rank < repeats[owner]
    repeat_owner = owner[kept]
    repeat_rank = rank[kept]
    repeat_seconds = acquired[repeat_owner] + fraction[kept] * observed[repeat_owner]
    del owner, fraction, rank, kept, starts
    nu = rng.gamma(params.q, 1.0 / params.gamma, customers)
    # Amounts are drawn for the first purchases, then the repeats (the order of the draws fixes the stream).
    amount_drawn = rng.gamma(params.p, 1.0 / np.concatenate([nu, nu[repeat_owner]]))
    # Row of each purchase: a customer's first purchase, then its repeats in time order.
    first_row = np.cumsum(repeats + 1) - (repeats + 1)
    rows = customers + len(repeat_owner)
    position = np.concatenate([first_row, first_row[repeat_owner] + 1 + repeat_rank])
    seconds = np.empty(rows)
    seconds[position] = np.concatenate([acquired, repeat_seconds])
    amount = np.empty(rows)
    amount[position] = amount_drawn
    ids = np.repeat(np.arange(first_id, first_id + customers, dtype=np.int64), repeats + 1)
    id_text = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), width=10, padding="0")
    base = np.datetime64(start.isoformat(), "s")
    timestamps = base + seconds.astype("int64").astype("timedelta64[s]")
    return pa.table(
        {"customer_id": id_text, "timestamp": pa.array(timestamps), "amount": pa.array(np.round(amount, 2))}
    )


def write_simulated_log(
    path: str | Path,
    customers: int,
    params: TrueParams = TrueParams(),
    start: dt.date = dt.date(2020, 1, 1),
    end: dt.date = dt.date(2021, 6, 30),
    acquisition_days: int = 84,
    time_unit: str = "week",
    seed: int = 0,
    chunk_customers: int = 1_000_000,
) -> int:
    """Simulate a log in chunks of customers and write it as one Parquet file; return the rows written.

    Each chunk uses its own seed derived from ``seed``, so memory stays bounded at any size. The file is written
    beside ``path`` and renamed onto it once complete: an existing file is replaced whole or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    seeds = np.random.SeedSequence(seed).spawn((customers + chunk_customers - 1) // chunk_customers)
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for index, child in enumerate(seeds):
            size = min(chunk_customers, customers - index * chunk_customers)
            table = simulate_table(
                size, params, start, end, acquisition_days, time_unit,
                seed=int(child.generate_state(1)[0]), first_id=index * chunk_customers,
            )  # fmt: skip
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
            writer = None
        os.replace(partial, path)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return rows
