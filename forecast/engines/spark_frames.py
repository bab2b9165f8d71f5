"""Small tables from Spark to the driver: collected without pandas 3's warnings, put in the segment tables' order."""

from __future__ import annotations

import datetime as dt
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.data.compress import label_codes

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql import DataFrame as SparkFrame


def to_pandas(frame: SparkFrame) -> pd.DataFrame:
    """``frame.toPandas()`` without pandas 3's deprecation warning about pyspark's ``copy=`` keyword.

    pyspark 4 still passes ``copy=`` to pandas; the warning is harmless but, raised as an error
    (pytest's ``filterwarnings = error``), it aborts the Arrow transfer half way.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The copy keyword is deprecated")
        return frame.toPandas()


def in_segment_order(table: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """One segmentation's rows (one per label in ``segment``, in any order) in the order of the DuckDB engine's
    segment tables (``forecast.value.segments.SegmentCells.index``), found by the same function,
    ``forecast.data.compress.label_codes``: labels of an ordered categorical there (the value tiers, the RFM groups:
    ``order`` given) in that order, other labels sorted as text.

    Raises
    ------
    ValueError
        A label is not one of ``order``.
    """
    labels = table["segment"].astype(str)
    if order is not None:
        unknown = sorted(set(labels) - set(order))
        if unknown:
            raise ValueError(f"Segments {unknown} are not among the configured ones {order}.")
        labels = pd.Series(pd.Categorical(labels, categories=order, ordered=True))
    codes, _ = label_codes(labels)
    return table.iloc[np.argsort(codes, kind="stable")].reset_index(drop=True)


def utc_instant(moment: dt.datetime) -> Column:
    """A timestamp literal of ``moment`` read as UTC, the session's time zone. pyspark turns a naive datetime into an
    instant with the time zone of this Python process: on a driver in New York, as_of's midnight would be 05:00 UTC
    and the next day's purchases before it would count."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    return F.lit(moment.replace(tzinfo=dt.UTC))


def utc_midnight(day: dt.date) -> Column:
    """The start of ``day`` in UTC, as a timestamp literal (``utc_instant``)."""
    return utc_instant(dt.datetime.combine(day, dt.time()))


def is_spark_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of Spark itself: pyspark's, py4j's (the JVM bridge) or grpc's (Spark Connect)."""
    return type(exc).__module__.startswith(("pyspark", "py4j", "grpc"))


def spark_error_line(exc: BaseException, limit: int) -> str:
    """The first line of a Spark failure's message (Spark follows it with a long stack trace), at most ``limit``
    characters; the exception's type when the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__
