"""The questions the backtest and the model selection ask of the transaction log, behind one small interface.

Everything after these answers (fits, predictions, scores, the selection's likelihoods, backtest.json and its
pictures) is the same code for every engine; each engine answers the questions where its log is: ``DuckDBLog``
with SQL on the ``transactions`` relation, ``forecast.engines.spark_log.SparkLog`` with Spark. The answers are small
(compressed window counts, a day-by-day series) but for the per-customer summary and holdout counts the backtest
scores customer by customer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import duckdb
import pandas as pd

from forecast.config import RunConfig
from forecast.data.summary import Resolution, holdout_purchases, summarize
from forecast.errors import DataError
from forecast.evaluation.selection import Window, WindowCounts, window_counts

#: The error when the log has no rows to span (both engines).
EMPTY_LOG = "The transaction log has no rows, so there is nothing to backtest."


class LogQueries(Protocol):
    """The log as the backtest and the model selection read it, in the run's time unit and resolution."""

    def span(self) -> tuple[dt.date, dt.date]:
        """First and last calendar day of the log (DataError when it has no rows)."""
        ...

    def first_day_through(self, cutoff: dt.date) -> dt.date | None:
        """The log's first day if it is on or before ``cutoff``, else None."""
        ...

    def summary(self, as_of: dt.date) -> pd.DataFrame:
        """``forecast.data.summary.summarize`` as of a day, indexed by customer_id in its order."""
        ...

    def holdout(self, calibration_end: dt.date, holdout_end: dt.date) -> pd.DataFrame:
        """``forecast.data.summary.holdout_purchases``: every customer of the calibration period with its purchases
        and revenue in (calibration_end, holdout_end]."""
        ...

    def window_counts(self, window: Window, max_customers: int) -> WindowCounts:
        """A validation window's compressed customers (``forecast.evaluation.selection.window_counts``)."""
        ...

    def repeat_purchases_by_day(self, acquired_by: dt.date, end: dt.date) -> pd.DataFrame:
        """Per day up to ``end``, the repeat purchases (a customer's first purchase moment left out) of the customers
        whose first purchase is on or before ``acquired_by``: columns day (date) and purchases, in day order."""
        ...


@dataclass(frozen=True)
class DuckDBLog:
    """``LogQueries`` answered by DuckDB from a connection's ``transactions`` relation."""

    con: duckdb.DuckDBPyConnection
    days_per_unit: float = 7.0
    resolution: Resolution = "day"

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection, config: RunConfig) -> DuckDBLog:
        """The log of ``con`` in ``config``'s time unit and resolution."""
        return cls(con, config.days_per_unit, config.resolution)

    def span(self) -> tuple[dt.date, dt.date]:
        row = self.con.execute("SELECT CAST(min(ts) AS DATE), CAST(max(ts) AS DATE) FROM transactions").fetchone()
        if row is None or row[0] is None:
            raise DataError(EMPTY_LOG)
        return row[0], row[1]

    def first_day_through(self, cutoff: dt.date) -> dt.date | None:
        end_exclusive = (cutoff + dt.timedelta(days=1)).isoformat()
        row = self.con.execute(
            f"SELECT CAST(min(ts) AS DATE) FROM transactions WHERE ts < DATE '{end_exclusive}'"
        ).fetchone()
        return row[0] if row and row[0] else None

    def summary(self, as_of: dt.date) -> pd.DataFrame:
        return summarize(self.con, as_of, self.days_per_unit, self.resolution)

    def holdout(self, calibration_end: dt.date, holdout_end: dt.date) -> pd.DataFrame:
        return holdout_purchases(self.con, calibration_end, holdout_end, self.resolution)

    def window_counts(self, window: Window, max_customers: int) -> WindowCounts:
        return window_counts(self.con, window, self.days_per_unit, self.resolution, max_customers)

    def repeat_purchases_by_day(self, acquired_by: dt.date, end: dt.date) -> pd.DataFrame:
        moment = "CAST(ts AS DATE)" if self.resolution == "day" else "ts"
        return self.con.execute(
            f"""
            WITH purchases AS (
                SELECT customer_id, {moment} AS moment FROM transactions
                WHERE ts < DATE '{(end + dt.timedelta(days=1)).isoformat()}'
                GROUP BY customer_id, {moment}
            ), ranked AS (
                SELECT customer_id, moment, min(moment) OVER (PARTITION BY customer_id) AS first_moment
                FROM purchases
            )
            SELECT CAST(moment AS DATE) AS day, count(*) AS purchases FROM ranked
            WHERE moment > first_moment
              AND first_moment < DATE '{(acquired_by + dt.timedelta(days=1)).isoformat()}'
            GROUP BY 1 ORDER BY 1"""
        ).df()
