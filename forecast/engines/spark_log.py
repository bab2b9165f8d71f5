"""The log's answers to the backtest and the model selection, computed by Spark (``LogQueries``).

``forecast.evaluation.log_queries.DuckDBLog`` answers the same questions with SQL; the backtest and the model
selection run the same code on either. The validation windows come back compressed; the backtest's calibration
summary and holdout counts come back one row per customer (the backtest scores customer by customer), so a Spark run
with a backtest section holds those rows on its driver, as the DuckDB engine does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from forecast.config import RunConfig
from forecast.data.summary import Resolution, check_holdout_after_calibration, no_transactions_message
from forecast.engines.spark_frames import to_pandas, utc_midnight
from forecast.errors import DataError
from forecast.evaluation.log_queries import EMPTY_LOG
from forecast.evaluation.selection import SAMPLE_DIGITS, Window, WindowCounts, sample_below, sample_share

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql import DataFrame as SparkFrame


def exact_amount() -> Column:
    """The amount as DuckDB sums it (``forecast.data.summary.EXACT_AMOUNT``): a decimal of 9 places, so that sums do
    not depend on the order Spark adds rows in (a recomputed partition gives the same monetary values) and equal
    DuckDB's to the last bit."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    return F.col("amount").cast("decimal(38,9)")


def summarize(
    log: SparkFrame,
    as_of: dt.date,
    days_per_unit: float = 7.0,
    resolution: str = "day",
    segment_columns: list[str] | None = None,
) -> SparkFrame:
    """The per-customer summary on Spark, with the definitions of ``forecast.data.summary.summarize``.

    Returns
    -------
    pyspark.sql.DataFrame
        customer_id, frequency, recency, T, monetary_value, revenue, first_purchase, last_purchase and
        the segment columns (taken from the customer's first purchase).
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    segment_columns = segment_columns or []
    end_exclusive = as_of + dt.timedelta(days=1)
    observation_end = as_of if resolution == "day" else end_exclusive
    end_day_number = float((observation_end - dt.date(1970, 1, 1)).days)
    if resolution == "day":
        moment = F.to_date("ts")
        day_number = F.datediff(F.col("moment"), F.lit(dt.date(1970, 1, 1))).cast("double")
    else:
        moment = F.col("ts")
        day_number = F.unix_micros(F.col("moment")) / 1e6 / 86400.0
    purchases = (
        log.where(F.col("ts") < utc_midnight(end_exclusive))
        .withColumn("moment", moment)
        .groupBy("customer_id", "moment")
        .agg(F.sum(exact_amount()).alias("amount"), *[F.min_by(c, "ts").alias(c) for c in segment_columns])
        .withColumn("day_number", day_number)
    )
    per_customer = purchases.groupBy("customer_id").agg(
        (F.count(F.lit(1)) - 1).alias("frequency"),
        F.min("day_number").alias("first_day"),
        F.max("day_number").alias("last_day"),
        F.sum("amount").alias("revenue"),
        F.min_by("amount", "moment").alias("first_amount"),
        F.to_date(F.min("moment")).alias("first_purchase"),
        F.to_date(F.max("moment")).alias("last_purchase"),
        *[F.min_by(c, "moment").alias(c) for c in segment_columns],
    )
    frequency = F.col("frequency")
    return per_customer.select(
        "customer_id",
        frequency.cast("long").alias("frequency"),
        ((F.col("last_day") - F.col("first_day")) / days_per_unit).alias("recency"),
        ((F.lit(end_day_number) - F.col("first_day")) / days_per_unit).alias("T"),
        F.when(frequency > 0, (F.col("revenue") - F.col("first_amount")).cast("double") / frequency)
        .otherwise(F.lit(0.0))
        .alias("monetary_value"),
        F.col("revenue").cast("double").alias("revenue"),
        "first_purchase",
        "last_purchase",
        *segment_columns,
    )


@dataclass(frozen=True)
class SparkLog:
    """``forecast.evaluation.log_queries.LogQueries`` answered by Spark from the typed log (``typed_log``)."""

    log: SparkFrame
    days_per_unit: float = 7.0
    resolution: Resolution = "day"

    @classmethod
    def of(cls, log: SparkFrame, config: RunConfig) -> SparkLog:
        """The log in ``config``'s time unit and resolution."""
        return cls(log, config.days_per_unit, config.resolution)

    def span(self) -> tuple[dt.date, dt.date]:
        from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

        row = self.log.agg(F.to_date(F.min("ts")).alias("first"), F.to_date(F.max("ts")).alias("last")).first()
        if row is None or row["first"] is None:
            raise DataError(EMPTY_LOG)
        return row["first"], row["last"]

    def first_day_through(self, cutoff: dt.date) -> dt.date | None:
        from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

        row = (
            self.log.where(F.col("ts") < utc_midnight(cutoff + dt.timedelta(days=1)))
            .agg(F.to_date(F.min("ts")))
            .first()
        )
        return row[0] if row is not None else None

    def summary(self, as_of: dt.date) -> pd.DataFrame:
        frame = to_pandas(summarize(self.log, as_of, self.days_per_unit, self.resolution))
        if frame.empty:
            raise DataError(no_transactions_message(as_of))
        frame["customer_id"] = frame["customer_id"].astype("string")
        for name in ("first_purchase", "last_purchase"):
            frame[name] = pd.to_datetime(frame[name]).astype("datetime64[us]")
        frame["frequency"] = frame["frequency"].astype("int64")
        return frame.set_index("customer_id").sort_index()

    def holdout(self, calibration_end: dt.date, holdout_end: dt.date) -> pd.DataFrame:
        from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

        check_holdout_after_calibration(calibration_end, holdout_end)
        start = utc_midnight(calibration_end + dt.timedelta(days=1))
        purchases = self._purchases(holdout_end)
        calibration = purchases.where(F.col("moment") < start).select("customer_id").distinct()
        later = purchases.where(F.col("moment") >= start)
        counted = (
            calibration.join(later, "customer_id", "left")
            .groupBy("customer_id")
            .agg(
                F.count("moment").alias("purchases_holdout"),
                F.coalesce(F.sum("amount").cast("double"), F.lit(0.0)).alias("revenue_holdout"),
            )
        )
        frame = to_pandas(counted)
        frame["customer_id"] = frame["customer_id"].astype("string")
        frame["purchases_holdout"] = frame["purchases_holdout"].astype("int64")
        return frame.set_index("customer_id").sort_index()

    def window_counts(self, window: Window, max_customers: int) -> WindowCounts:
        return window_counts(self.log, window, self.days_per_unit, self.resolution, max_customers)

    def repeat_purchases_by_day(self, acquired_by: dt.date, end: dt.date) -> pd.DataFrame:
        from pyspark.sql import Window as Over
        from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

        first_moment = F.min("moment").over(Over.partitionBy("customer_id"))
        purchases = self._purchases(end).withColumn("first_moment", first_moment)
        repeats = purchases.where(
            (F.col("moment") > F.col("first_moment"))
            & (F.col("first_moment") < utc_midnight(acquired_by + dt.timedelta(days=1)))
        )
        days = to_pandas(repeats.groupBy(F.to_date("moment").alias("day")).agg(F.count(F.lit(1)).alias("purchases")))
        days["purchases"] = days["purchases"].astype("int64")
        return days.sort_values("day", ignore_index=True)

    def _purchases(self, through: dt.date) -> SparkFrame:
        """One row per purchase moment (a day, or a timestamp with ``exact``) up to ``through``, with its amount
        (the DuckDB engine's ``_purchases_sql``)."""
        from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

        moment = F.to_date("ts") if self.resolution == "day" else F.col("ts")
        return (
            self.log.where(F.col("ts") < utc_midnight(through + dt.timedelta(days=1)))
            .groupBy("customer_id", moment.alias("moment"))
            .agg(F.sum(exact_amount()).alias("amount"))
        )


def window_counts(
    log: SparkFrame, window: Window, days_per_unit: float, resolution: str, max_customers: int
) -> WindowCounts:
    """A validation window's compressed customers (``forecast.evaluation.selection.window_counts``) on Spark.

    The summary as of the window's origin, each customer's purchases in (origin, end], grouped by (frequency,
    recency, T, n). Above ``max_customers`` customers at the origin, the sample DuckDB takes (``sample_below``).
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    end_exclusive = utc_midnight(window.end + dt.timedelta(days=1))
    origin_end = utc_midnight(window.origin + dt.timedelta(days=1))
    at_origin_summary = summarize(log, window.origin, days_per_unit, resolution)
    at_origin = at_origin_summary.count()
    share = sample_share(at_origin, max_customers)
    if share < 1.0:
        hashed = F.substring(F.md5(F.col("customer_id")), 1, SAMPLE_DIGITS)
        at_origin_summary = at_origin_summary.where(hashed < F.lit(sample_below(share)))
    moment = F.to_date("ts") if resolution == "day" else F.col("ts")
    later = (
        log.where((F.col("ts") >= origin_end) & (F.col("ts") < end_exclusive))
        .select("customer_id", moment.alias("moment"))
        .distinct()
        .groupBy("customer_id")
        .agg(F.count(F.lit(1)).alias("n"))
    )
    joined = at_origin_summary.join(later, "customer_id", "left").fillna(0, subset=["n"])
    grouped = joined.groupBy("frequency", "recency", "T", "n").agg(F.count(F.lit(1)).alias("customers"))
    rows = to_pandas(grouped).astype(float).sort_values(["frequency", "recency", "T", "n"], ignore_index=True)
    return WindowCounts(window, rows[["frequency", "recency", "T", "n", "customers"]], at_origin)
