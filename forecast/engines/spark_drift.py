"""Month-over-month drift on Spark: the two runs' customers added up where they are.

The drift document is the DuckDB engine's (``forecast.batch.drift.drift_document``, through
``forecast.batch.pipeline.drift_since_previous``); what it needs of the customers, ``CustomerChanges``, is added up
here by Spark: each run's totals and segment totals, and the customers' movements between value tiers (a full outer
join of the two runs by customer id, grouped). The previous run's customers are read where its manifest says they
are (the run folder, or its ``spark.output``), whichever engine wrote them. Only those small tables reach the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from forecast.batch.drift import DRIFT_TOTALS, MISSING, MOVEMENT_KEYS, NEW, CustomerChanges, drift_segmentations
from forecast.config import RunConfig
from forecast.engines.spark_frames import in_segment_order, to_pandas
from forecast.report.run_folder import RunFolder, customers_location
from forecast.value.segments import ALL, segmentation_name

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession


def previous_customers(spark: SparkSession, previous: RunFolder) -> SparkFrame:
    """The previous run's customers.parquet as a Spark DataFrame, read where its manifest says it is (a local path
    as a ``file://`` URI, which Spark does not resolve against its default file system). Spark reads it lazily:
    failures surface in the queries (``forecast.engines.spark._changes_since`` turns them into an ArtifactError)."""
    location = customers_location(previous.path, previous.manifest)
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    return spark.read.parquet(location)


def changes_on_spark(config: RunConfig, previous: SparkFrame, current: SparkFrame, tiers: list[str]) -> CustomerChanges:
    """``CustomerChanges`` of two runs' customers on Spark (``forecast.batch.drift.customer_changes`` in memory).

    Parameters
    ----------
    previous, current
        The runs' customers: customer_id, segment (the value tier), p_alive, the totalled columns and the data's
        segment columns (a segmentation the previous run lacks is skipped, as in memory).
    tiers
        The value tiers, best first: the order of the current run's tier rows.
    """
    segmentations = drift_segmentations(config)
    previous_totals, current_totals = run_totals(previous), run_totals(current)
    return CustomerChanges(
        previous_totals,
        current_totals,
        segment_totals(previous, previous_totals, segmentations, None),
        segment_totals(current, current_totals, segmentations, tiers),
        movements(previous, current, config.drift.lapsed_p_alive),
    )


def run_totals(customers: SparkFrame) -> dict[str, float]:
    """``forecast.batch.drift.run_totals`` on Spark."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    row = customers.agg(
        F.count(F.lit(1)).alias("customers"), *[F.sum(column).alias(column) for column in DRIFT_TOTALS]
    ).first()
    assert row is not None
    return {"customers": int(row["customers"]), **{c: float(row[c] or 0.0) for c in DRIFT_TOTALS}}


def segment_totals(
    customers: SparkFrame, totals: dict[str, float], segmentations: list[str], tiers: list[str] | None
) -> pd.DataFrame:
    """``forecast.batch.drift.segment_totals`` on Spark: customers and total CLV per segment, an ``all`` row first
    (from the run's ``run_totals``), tiers in the order of ``tiers`` (None: sorted as text, as a previous run's text
    column is) and other segments sorted as text."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    frames = [
        pd.DataFrame(
            {"segmentation": [segmentation_name(None)], "segment": [ALL], "customers": [int(totals["customers"])],
             "clv_total": [totals["clv"]]}
        )
    ]  # fmt: skip
    for column in segmentations:
        if column not in customers.columns:
            continue
        table = to_pandas(
            customers.where(F.col(column).isNotNull())
            .groupBy(F.col(column).cast("string").alias("segment"))
            .agg(F.count(F.lit(1)).alias("customers"), F.sum("clv").alias("clv_total"))
        )
        table = in_segment_order(table, tiers if column == "segment" else None)
        table.insert(0, "segmentation", segmentation_name(column))
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    return table.astype({"customers": "int64", "clv_total": float})


def movements(previous: SparkFrame, current: SparkFrame, lapsed_p_alive: float) -> pd.DataFrame:
    """``forecast.batch.drift.movements`` on Spark: a full outer join of the two runs by customer id, grouped."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    before = previous.select(
        "customer_id",
        F.col("segment").cast("string").alias("from"),
        (F.col("p_alive") >= F.lit(lapsed_p_alive)).alias("was_alive"),
    )
    now = current.select(
        "customer_id",
        F.col("segment").cast("string").alias("to"),
        (F.col("p_alive") >= F.lit(lapsed_p_alive)).alias("is_alive"),
    )
    joined = before.join(now, "customer_id", "full_outer").select(
        F.coalesce(F.col("from"), F.lit(NEW)).alias("from"),
        F.coalesce(F.col("to"), F.lit(MISSING)).alias("to"),
        F.coalesce(F.col("was_alive"), F.lit(False)).alias("was_alive"),
        F.coalesce(F.col("is_alive"), F.lit(False)).alias("is_alive"),
    )
    counted = to_pandas(joined.groupBy(*MOVEMENT_KEYS).agg(F.count(F.lit(1)).alias("customers")))
    return counted.astype({"was_alive": bool, "is_alive": bool, "customers": "int64"})
