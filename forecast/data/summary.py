"""Per-customer RFM summary (frequency, recency, T, monetary_value), computed in DuckDB.

Definitions (Fader, Hardie & Lee 2005; docs/reference.md, "How the numbers are defined"): all of a customer's
transactions on one calendar day form one purchase whose amount is their sum; frequency = purchases - 1;
recency = last purchase - first purchase; T = observation end - first purchase; monetary_value = mean amount of
the repeat purchases (0 for one-time buyers). Times are counted in days and expressed in the model's time unit.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from forecast.data.ingest import ID_QUANTILE_STEPS, id_quantiles_sql, quote_identifier, quote_literal
from forecast.errors import DataError

Resolution = Literal["day", "exact"]

# Sums of DOUBLEs in parallel depend on the order threads combine them (last bits differ run to run);
# summing as DECIMAL is exact integer arithmetic, so identical data always gives identical bytes. Purchase
# amounts stay DECIMAL until the per-customer figures are computed (one rounding, at the end).
EXACT_AMOUNT = "CAST({} AS DECIMAL(38, 9))"

#: Logs of more transactions than this are summarised in ranges of customer ids of about this many
#: transactions, one range after the other, so that the memory of DuckDB's aggregation (which grows with the
#: purchases it holds) stays bounded; at most ``MAX_SUMMARY_PARTS`` ranges, as every range reads the whole log
#: again.
ROWS_PER_SUMMARY_PART = 6_000_000
MAX_SUMMARY_PARTS = 8

SUMMARY_COLUMNS = ["frequency", "recency", "T", "monetary_value", "revenue", "first_purchase", "last_purchase"]


def _purchases_sql(
    end_exclusive: dt.date, resolution: Resolution, segment_columns: list[str], customers: str = ""
) -> str:
    """One row per purchase up to (not including) ``end_exclusive``: its moment and its exact (DECIMAL) amount."""
    moment = "CAST(ts AS DATE)" if resolution == "day" else "ts"
    segments = "".join(f", arg_min({quote_identifier(c)}, ts) AS {quote_identifier(c)}" for c in segment_columns)
    return f"""
        SELECT customer_id, {moment} AS moment, sum({EXACT_AMOUNT.format("amount")}) AS amount{segments}
        FROM transactions
        WHERE ts < DATE '{end_exclusive.isoformat()}'{customers}
        GROUP BY customer_id, {moment}"""


def release_duckdb_buffers(con: duckdb.DuckDBPyConnection) -> None:
    """Make DuckDB hand the buffers of its finished queries back to the operating system.

    DuckDB keeps the memory of a finished aggregation for its next queries, up to its memory limit. The summary is
    the last large query of a run: the pandas frame, the fits and the scores that follow would hold their data on
    top of buffers that nothing reuses, and the run's peak memory would rise by that much. DuckDB frees cached
    buffers when its memory limit falls below them, and has no other way to ask for it, so the limit is lowered
    for a moment and the configured one restored at once; no result depends on it.
    """
    row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    if row is None:
        return
    try:
        con.execute("SET memory_limit = '64MB'")
    except duckdb.Error:
        pass  # nothing to release if DuckDB cannot go that low right now
    finally:
        con.execute(f"SET memory_limit = {quote_literal(str(row[0]))}")


def fetch_frame(con: duckdb.DuckDBPyConnection, queries: list[str]) -> pd.DataFrame:
    """Run queries one after the other and return their rows, in order, as one pandas DataFrame through Arrow.

    Arrow hands strings over without building a Python object per value, which ``.df()`` does. Dates should be
    given as TIMESTAMP: Arrow then hands them over as datetime64[us], as ``.df()`` does (a DATE would come as
    datetime64[ms], to be converted column by column). The results are joined as Arrow tables (no copy) and
    converted once.
    """
    # A relation cannot run while an earlier execute() result (e.g. a fetchone() in ingest) is unfinished.
    con.complete()
    table = pa.concat_tables([con.sql(query).to_arrow_table() for query in queries])
    release_duckdb_buffers(con)
    # self_destruct frees each Arrow column as soon as it is converted (one copy of the rows at a time).
    frame = table.to_pandas(date_as_object=False, split_blocks=True, self_destruct=True)
    del table
    # Arrow's allocator keeps freed buffers for reuse, and nothing here reuses them after the conversion.
    pa.default_memory_pool().release_unused()
    return frame


def customer_ranges(
    con: duckdb.DuckDBPyConnection,
    end_exclusive: dt.date,
    rows_at_most: int | None = None,
    quantiles: list[str] | None = None,
) -> list[str]:
    """Customer ids that cut the log before ``end_exclusive`` into ranges of about equal transactions.

    ``rows_at_most``, when known (the usable rows of the whole log), spares counting a log that fits in one range;
    with it, ``quantiles`` (``ingest.id_quantiles_sql`` of the log, taken by its checks) spare the scan that takes them.

    Returns
    -------
    list of str
        Sorted boundaries (empty when one range will do): range k holds the ids from boundary k - 1
        (inclusive) to boundary k (exclusive). They are quantiles of the rows of a fixed sample of the
        customers (``ingest.id_quantiles_sql``), the nearest to equal shares, so the ranges are only about equal;
        the summary does not depend on where they fall.
    """
    if rows_at_most is not None and rows_at_most <= ROWS_PER_SUMMARY_PART:
        return []
    if rows_at_most is None or quantiles is None:
        row = con.execute(
            f"SELECT count(*), {id_quantiles_sql()} FROM transactions WHERE ts < DATE '{end_exclusive.isoformat()}'"
        ).fetchone()
        rows_at_most, quantiles = row if row else (0, None)
    parts = min(MAX_SUMMARY_PARTS, math.ceil(rows_at_most / ROWS_PER_SUMMARY_PART))
    if parts <= 1 or not quantiles:
        return []
    return sorted({quantiles[round(k * ID_QUANTILE_STEPS / parts) - 1] for k in range(1, parts)})


def _range_condition(low: str | None, high: str | None) -> str:
    condition = f" AND customer_id >= {quote_literal(low)}" if low is not None else ""
    return condition + (f" AND customer_id < {quote_literal(high)}" if high is not None else "")


def _summary_sql(
    as_of: dt.date, days_per_unit: float, resolution: Resolution, segment_columns: list[str], customers: str
) -> str:
    """SQL of the summary's rows (``summarize``) of the customers that ``customers`` selects, sorted by id.

    ``customers`` is a condition on ``customer_id`` appended to the purchases' WHERE clause (``_range_condition``),
    empty for every customer.
    """
    end_exclusive = as_of + dt.timedelta(days=1)
    # Day resolution measures T to the as_of day; exact resolution to the end of that day.
    observation_end = as_of if resolution == "day" else end_exclusive
    end_day_number = (observation_end - dt.date(1970, 1, 1)).days
    segments = "".join(f", arg_min({quote_identifier(c)}, moment) AS {quote_identifier(c)}" for c in segment_columns)
    return f"""
        WITH purchases AS ({_purchases_sql(end_exclusive, resolution, segment_columns, customers)}),
        per_customer AS (
            SELECT customer_id, count(*) - 1 AS frequency,
                   epoch(min(moment)) / 86400.0 AS first_day, epoch(max(moment)) / 86400.0 AS last_day,
                   sum(amount) AS revenue, arg_min(amount, moment) AS first_amount,
                   CAST(CAST(min(moment) AS DATE) AS TIMESTAMP) AS first_purchase,
                   CAST(CAST(max(moment) AS DATE) AS TIMESTAMP) AS last_purchase
                   {segments}
            FROM purchases GROUP BY customer_id
        )
        SELECT customer_id, frequency,
               (last_day - first_day) / {days_per_unit!r} AS recency,
               ({end_day_number} - first_day) / {days_per_unit!r} AS "T",
               CASE WHEN frequency > 0 THEN CAST(revenue - first_amount AS DOUBLE) / frequency ELSE 0.0 END
                   AS monetary_value,
               CAST(revenue AS DOUBLE) AS revenue, first_purchase, last_purchase
               {"".join(", " + quote_identifier(c) for c in segment_columns)}
        FROM per_customer ORDER BY customer_id"""


def no_transactions_message(as_of: dt.date) -> str:
    """The error when no customer has bought on or before as_of (both engines)."""
    return (
        f"No transactions on or before as_of {as_of.isoformat()}. Choose a later as_of "
        "(the log's first and last dates are in `forecast validate`)."
    )


def check_holdout_after_calibration(calibration_end: dt.date, holdout_end: dt.date) -> None:
    """Raise a DataError unless the holdout ends after the calibration period (both engines)."""
    if holdout_end <= calibration_end:
        raise DataError(
            f"holdout_end {holdout_end} must be after calibration_end {calibration_end}. Swap or fix the dates."
        )


def summarize(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date,
    days_per_unit: float = 7.0,
    resolution: Resolution = "day",
    segment_columns: list[str] | None = None,
    rows_at_most: int | None = None,
    id_quantiles: list[str] | None = None,
) -> pd.DataFrame:
    """Build the per-customer summary of all transactions up to and including ``as_of``.

    Parameters
    ----------
    con
        DuckDB connection holding the ``transactions`` relation (see ``forecast.data.ingest``).
    as_of
        Observation end (inclusive, a calendar day). Later transactions are not counted.
    days_per_unit
        Days in one unit of model time (7 for weeks).
    resolution
        ``"day"`` merges same-day transactions into one purchase (the papers' convention);
        ``"exact"`` keeps each distinct timestamp as a purchase and measures time to the second.
    segment_columns
        Columns of the log to carry over, taken from the customer's first purchase.
    rows_at_most
        An upper bound on the transactions up to ``as_of``, when known (``DataQuality.rows_used``); a log
        that is summarised in one range is then not counted first.
    id_quantiles
        The log's ``ingest.id_quantiles_sql`` when known and no row is after ``as_of`` (``Transactions.id_quantiles``):
        with ``rows_at_most``, the ranges of customers are placed without a pass over the log.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (string), sorted, with columns frequency, recency, T (model time
        units), monetary_value, revenue (total spend to date), first_purchase, last_purchase and the
        segment columns.

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2).
    """
    segment_columns = segment_columns or []
    end_exclusive = as_of + dt.timedelta(days=1)
    bounds: list[str | None] = [None, *customer_ranges(con, end_exclusive, rows_at_most, id_quantiles), None]
    queries = [
        _summary_sql(as_of, days_per_unit, resolution, segment_columns, _range_condition(low, high))
        for low, high in itertools.pairwise(bounds)
    ]
    # The ranges are in id order and each part is sorted, so the parts put together are sorted too.
    summary = fetch_frame(con, queries)
    if summary.empty:
        raise DataError(no_transactions_message(as_of))
    summary["customer_id"] = summary["customer_id"].astype("string")
    summary["frequency"] = summary["frequency"].astype("int64")
    return summary.set_index("customer_id")


def holdout_purchases(
    con: duckdb.DuckDBPyConnection,
    calibration_end: dt.date,
    holdout_end: dt.date,
    resolution: Resolution = "day",
) -> pd.DataFrame:
    """Count each calibration customer's purchases and revenue in the holdout period.

    Only customers whose first purchase is on or before ``calibration_end`` are returned; the holdout
    period is (calibration_end, holdout_end], both calendar days.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id``, columns ``purchases_holdout`` and ``revenue_holdout``
        (0 for customers with no holdout purchase).
    """
    check_holdout_after_calibration(calibration_end, holdout_end)
    start_exclusive = calibration_end + dt.timedelta(days=1)
    query = f"""
        WITH purchases AS ({_purchases_sql(holdout_end + dt.timedelta(days=1), resolution, [])}),
        calibration_customers AS (
            SELECT DISTINCT customer_id FROM purchases WHERE moment < DATE '{start_exclusive.isoformat()}'
        )
        SELECT c.customer_id,
               count(p.customer_id) AS purchases_holdout,
               CAST(coalesce(sum(p.amount), 0) AS DOUBLE) AS revenue_holdout
        FROM calibration_customers c
        LEFT JOIN purchases p
          ON p.customer_id = c.customer_id AND p.moment >= DATE '{start_exclusive.isoformat()}'
        GROUP BY c.customer_id ORDER BY c.customer_id"""
    holdout = con.execute(query).df()
    holdout["customer_id"] = holdout["customer_id"].astype("string")
    holdout["purchases_holdout"] = holdout["purchases_holdout"].astype("int64")
    return holdout.set_index("customer_id")


#: A customer whose repeat purchases or average spend exceed this many times the 99th percentile of the repeat
#: buyers' (and at least ``EXTREME_MIN_PURCHASES`` purchases) is named as extreme; a one-time buyer's single amount
#: is judged as an average spend. Real and simulated logs stay well inside it: CDNOW's heaviest buyer has 7.4 times
#: the 99th percentile's purchases, 5.1 times its spend, and the sample's largest one-time amount under 3 times it.
EXTREME_FACTOR = 20.0
EXTREME_MIN_PURCHASES = 100

#: A customer holding more than this share of all the revenue (or of all the purchases) to as_of, and more than
#: ``EXTREME_FACTOR`` times the 99th-percentile customer's, is named as extreme too: a shared id can stay under the
#: percentile limits on either count and still dwarf everybody (a guest-checkout id with 100,000 purchases on 546
#: days beside 2,000 simulated customers holds 84% of the revenue, one amount of 1e20 all of it). Ordinary logs
#: stay inside it, as both conditions must hold: CDNOW's heaviest buyer holds at most 5.5% of the sample's revenue
#: and 0.6% of the master's (where it is 22 times the 99th percentile); in simulated logs of 200 to 2,000 customers
#: (100 seeds each) the heaviest reach 22% of the revenue or 13 times the 99th percentile, never both.
EXTREME_SHARE = 0.10

#: The rule judges logs of at least this many repeat buyers: the percentiles and shares of fewer say little.
EXTREME_MIN_REPEAT_BUYERS = 100


def extreme_customers(summary: pd.DataFrame) -> pd.DataFrame:
    """The customers whose purchases or spend lie far beyond everybody else's.

    One such customer (a shared guest-checkout account, a test account, an amount typed with extra digits) pulls
    the fitted parameters towards itself (BG/NBD's r and alpha, Gamma-Gamma's p and gamma) and can dominate the
    totals. A customer is extreme when any of these holds (``EXTREME_FACTOR``, ``EXTREME_SHARE``):

    - repeat purchases beyond ``EXTREME_FACTOR`` times the repeat buyers' 99th percentile (and at least
      ``EXTREME_MIN_PURCHASES``);
    - average spend (a one-time buyer's single amount) beyond ``EXTREME_FACTOR`` times the repeat buyers' 99th
      percentile of average spend;
    - revenue, or purchases, over ``EXTREME_SHARE`` of the whole log's and beyond ``EXTREME_FACTOR`` times the
      99th-percentile customer's.

    Logs of fewer than ``EXTREME_MIN_REPEAT_BUYERS`` repeat buyers are not judged. The work is a few passes over
    the summary's columns (no loop over customers), and only the rows of the customers found are copied.

    Returns
    -------
    pandas.DataFrame
        The summary's rows of those customers, the largest revenue first.
    """
    frequency = summary["frequency"].to_numpy()
    spend = summary["monetary_value"].to_numpy(float)
    revenue = summary["revenue"].to_numpy(float)
    repeat = frequency > 0
    if np.count_nonzero(repeat) < EXTREME_MIN_REPEAT_BUYERS:
        return summary.iloc[:0]
    extreme = _beyond_repeat_buyers(frequency, spend, revenue, repeat)
    extreme |= _large_share(revenue)
    extreme |= _large_share(frequency + 1)
    rows = np.flatnonzero(extreme)
    return summary.iloc[rows[np.argsort(-revenue[rows], kind="stable")]]


def _beyond_repeat_buyers(
    frequency: np.ndarray, spend: np.ndarray, revenue: np.ndarray, repeat: np.ndarray
) -> np.ndarray:
    """Whether each customer's repeat purchases or average spend (a one-time buyer's amount, its revenue) exceed
    ``EXTREME_FACTOR`` times the repeat buyers' 99th percentile."""
    purchases_limit = max(EXTREME_MIN_PURCHASES, EXTREME_FACTOR * np.quantile(frequency[repeat], 0.99))
    spend_limit = EXTREME_FACTOR * np.quantile(spend[repeat], 0.99)
    return (frequency > purchases_limit) | (np.where(repeat, spend, revenue) > spend_limit)


def _large_share(values: np.ndarray) -> np.ndarray:
    """Whether each customer's value is over ``EXTREME_SHARE`` of all customers' (positive) total and beyond
    ``EXTREME_FACTOR`` times the 99th-percentile customer's."""
    total = float(np.sum(values, where=values > 0))
    if total <= 0:
        return np.zeros(len(values), dtype=bool)
    limit = max(EXTREME_SHARE * total, EXTREME_FACTOR * float(np.quantile(values, 0.99)))
    return values > limit


def extreme_customers_message(summary: pd.DataFrame) -> str | None:
    """Name the customers of ``extreme_customers`` and what to do about them; None when there are none."""
    extreme = extreme_customers(summary)
    if extreme.empty:
        return None
    revenue = summary["revenue"].to_numpy(float)
    total = float(np.sum(revenue, where=revenue > 0))
    top = extreme.iloc[:5]
    frequency = top["frequency"].to_numpy()
    spend = top["monetary_value"].to_numpy(float)
    value = top["revenue"].to_numpy(float)
    named = ", ".join(
        f"{customer!r} ({_purchases_and_spend(int(frequency[i]), float(spend[i]), float(value[i]))}, "
        f"{_share(float(value[i]), total)} of all revenue)"
        for i, customer in enumerate(top.index)
    )
    more = f", and {len(extreme) - 5:,} more" if len(extreme) > 5 else ""
    return (
        f"{len(extreme):,} customer(s) lie far beyond all others (over {EXTREME_FACTOR:g} times the 99th percentile "
        "of the repeat buyers' purchases or average spend, a one-time buyer's amount counted as its average spend, "
        f"or over {EXTREME_SHARE:.0%} of all the revenue or purchases): {named}{more}. They pull the fitted "
        "parameters and the totals towards themselves; if they are shared, test or guest-checkout accounts, list "
        "their ids under data.exclude_customers, or fix their rows."
    )


def _purchases_and_spend(frequency: int, spend: float, revenue: float) -> str:
    if frequency > 0:
        return f"{frequency:,.0f} repeat purchases, average spend {_money(spend)}"
    return f"one purchase of {_money(revenue)}"


def _money(amount: float) -> str:
    """An amount with thousands separators, or in exponent form when it is too long to read (1e20)."""
    return f"{amount:,.2f}" if abs(amount) < 1e12 else f"{amount:.3g}"


def _share(value: float, total: float) -> str:
    share = value / total if total > 0 else 0.0
    return f"{share:.0%}" if share >= 0.01 else "under 1%"
