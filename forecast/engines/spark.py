"""The Spark engine: the monthly run, ``forecast budget`` and ``forecast backtest`` with the log on a Spark cluster.

``engine: spark`` in the config (or ``--engine spark``) reads the log where it lives (Parquet or CSV files on shared
storage, or a table with ``data.path: "table:db.name"``), checks it and applies the data policies as the DuckDB
engine does, builds the per-customer summary with the same definitions as ``forecast.data.summary.summarize``
(``forecast.engines.spark_log``), and brings back to the driver only the compressed summary: the unique (frequency,
recency, T) rows and the unique (frequency, monetary_value) rows with their customer counts. The models are fitted
on the driver with the DuckDB engine's code; the executors score every customer with the DuckDB engine's function
(``mapInPandas`` with ``forecast.batch.pipeline.scored_columns``), add the interval figures
(``forecast.engines.spark_intervals``) and write the per-customer Parquet; Spark adds up the segment table, the
totals and the drift (``forecast.engines.spark_drift``); the backtest asks its questions of the log through
``SparkLog``. Everything after those sums is the DuckDB engine's code.

pyspark is an optional dependency (``pip install 'clv-forecast[spark]'``) and is imported lazily.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import json
import math
import os
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecast.batch.drift import CustomerChanges
from forecast.batch.outputs import csv_wanted, frame_to_csv, parquet_to_csv
from forecast.batch.pipeline import (
    CUSTOMER_COLUMNS,
    INTERVALS_LEFT_EMPTY,
    TOTALLED_COLUMNS,
    BacktestRun,
    BudgetForecast,
    backtest_for_run,
    backtest_on,
    backtest_record,
    choose_purchase_model,
    copy_models,
    drift_since_previous,
    input_record,
    interval_kind,
    intervals_record,
    intervals_wanted,
    logged,
    models_record,
    run_log,
    run_models_sha256,
    scored_columns,
    segment_figures,
    totals_record,
    with_cac,
    write_backtest,
    write_run_log,
)
from forecast.batch.publish import atomic_folders, month_lock
from forecast.batch.registry import (
    check_replaceable,
    check_runs_apart_from_models,
    last_complete_month_end,
    paths_never_replaced,
    run_folder,
)
from forecast.config import URI_SCHEME, DataConfig, RunConfig, SparkConfig
from forecast.data.compress import Histories, SpendHistories
from forecast.data.fingerprints import input_files_sha256
from forecast.data.ingest import (
    AMOUNT_LIMIT,
    FLOAT_ID_LIMIT,
    WHOLE_FLOAT_TEXT,
    Netting,
    empty_ids_message,
    float_ids_message,
    float_text_ids_message,
    negative_amounts_message,
    range_text,
    resolve_files,
    timestamp_range,
    zero_amounts_message,
)
from forecast.data.summary import no_transactions_message
from forecast.engines.spark_drift import changes_on_spark, previous_customers
from forecast.engines.spark_frames import (
    in_segment_order,
    is_spark_error,
    spark_error_line,
    to_pandas,
    utc_instant,
    utc_midnight,
)
from forecast.engines.spark_intervals import (
    BOUNDS,
    FigureLayout,
    at_risk_name,
    draws_of_sums,
    with_history_figures,
)
from forecast.engines.spark_log import SparkLog, summarize
from forecast.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    EngineError,
    FitError,
    ForecastWarning,
    OutputError,
    collected_warnings,
)
from forecast.evaluation.selection import Selection
from forecast.models import GammaGamma, PurchaseModel, fit_purchase_model, fit_spend_model, mean_amount_of
from forecast.models.artifacts import library_versions, model_artifact, write_json
from forecast.report.build import build_report
from forecast.report.digest import CustomerDigest
from forecast.report.run_folder import MODEL_FILES, RUN_MODELS, RunFolder
from forecast.value.budget import budget_sums_of
from forecast.value.clv import churn_window, lifespan_from_churn
from forecast.value.comparison import COMPARISON_SUMS, comparison_record
from forecast.value.segments import (
    ALL,
    OPTIONAL_SUMMED_COLUMNS,
    RFM_GROUPS,
    SUMMED_COLUMNS,
    RfmCuts,
    segmentation_name,
)
from forecast.value.uncertainty import HistoryFigures, history_figures
from forecast.value.valuation import Valuation

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession
    from pyspark.sql import DataFrame as SparkFrame

Progress = Callable[[str], None]

#: strptime codes and their Spark datetime-pattern equivalents.
STRPTIME_TO_SPARK = {
    "%Y": "yyyy", "%y": "yy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss", "%f": "SSSSSS",
    "%b": "MMM", "%B": "MMMM", "%j": "DDD", "%%": "%",
}  # fmt: skip
#: The dates DuckDB casts without data.timestamp_format: year, month and day separated by '-', '/', ' ' or '\'
#: (the same twice), alone or followed by 'T' or spaces and a time of at least hours and minutes. Spark's cast
#: separates the date's fields by '-' only and the time by one space, and also reads '2024', '2024-01' and
#: '2024-01-31 10', which DuckDB refuses.
TEXT_DATE = r"^\s*\d+([-/ \\])\d{1,2}\1\d{1,2}(?:(?:T| +)\d{1,2}:\d|$)"
#: A UTC offset after a space ('10:00:00 +02:00'): Spark's cast reads it, DuckDB's does not.
SPACED_OFFSET = r"\d\s+[+-]\d"
#: The numeric codes that strptime reads with or without leading zeros ('1/2/2024' by '%m/%d/%Y'), and the Spark
#: letters that do too. Next to another code ('%Y%m%d') the fixed width separates the fields, so it is kept.
UNPADDED = {"%m": "M", "%d": "d", "%H": "H", "%M": "m", "%S": "s", "%j": "D"}
#: The internal column of ``_typed_columns`` that holds the raw timestamp as text.
RAW_TIMESTAMP = "__clv_ts_raw"
#: The master when neither the config, MASTER nor spark-defaults.conf names one.
DEFAULT_MASTER = "local[*]"
#: Shuffle partitions on a local master: Spark's default 200, sized for clusters, costs seconds of task overhead.
LOCAL_SHUFFLE_PARTITIONS = str(2 * (os.cpu_count() or 1))


def spark_remote(settings: SparkConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The Spark Connect server to run on: ``spark.remote`` from the config, else the ``SPARK_REMOTE`` environment
    variable (as pyspark reads it); None runs classic Spark on ``spark_master``."""
    if settings.master:
        return None
    return settings.remote or environ.get("SPARK_REMOTE") or None


def spark_master(settings: SparkConfig, environ: Mapping[str, str] = os.environ) -> str:
    """The master to run on, as Spark users expect: ``spark.master`` from the config, else the ``MASTER``
    environment variable, else ``spark.master`` in ``spark-defaults.conf`` (in ``SPARK_CONF_DIR``, else
    ``SPARK_HOME/conf``), else ``local[*]``. With Spark Connect (``spark_remote``), the server's address."""
    remote = spark_remote(settings, environ)
    if remote:
        return remote
    if settings.master:
        return settings.master
    if environ.get("MASTER"):
        return environ["MASTER"]
    return spark_default("spark.master", environ) or DEFAULT_MASTER


def spark_where(settings: SparkConfig) -> str:
    """Where the run goes, as messages name it: ``spark.master X``, or ``spark.remote X`` with Spark Connect."""
    remote = spark_remote(settings)
    return f"spark.remote {remote}" if remote else f"spark.master {spark_master(settings)}"


def spark_default(key: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """A setting of ``spark-defaults.conf`` (in ``SPARK_CONF_DIR``, else ``SPARK_HOME/conf``), or None."""
    folder = environ.get("SPARK_CONF_DIR") or (
        str(Path(environ["SPARK_HOME"], "conf")) if "SPARK_HOME" in environ else ""
    )
    defaults = Path(folder, "spark-defaults.conf") if folder else None
    if defaults is not None and defaults.is_file():
        for line in defaults.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(None, 1)  # "key value", separated by spaces or tabs; "#" starts a comment
            if len(parts) == 2 and parts[0] == key:
                return parts[1].strip()
    return None


def driver_memory_set(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user has sized the driver already: ``spark.driver.memory`` in ``spark-defaults.conf``,
    ``SPARK_DRIVER_MEMORY``, or ``--driver-memory`` in ``PYSPARK_SUBMIT_ARGS``."""
    return (
        spark_default("spark.driver.memory", environ) is not None
        or bool(environ.get("SPARK_DRIVER_MEMORY"))
        or "--driver-memory" in environ.get("PYSPARK_SUBMIT_ARGS", "")
    )


def local_driver_memory() -> str:
    """The heap of a local master's one JVM (driver and executors): a quarter of this machine's memory, between
    Spark's own default of 1 GB and 16 GB. With 1 GB a log of 10M transactions runs out of heap while its
    per-customer Parquet is written."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "1g"
    return f"{min(max(total // 4 // 2**30, 1), 16)}g"


def spark_session(settings: SparkConfig) -> SparkSession:
    """Get or create the SparkSession for the configured master, or a Spark Connect session for the configured
    server (``spark_remote``: ``sc://host:port``, or ``local[N]`` for a server started here), with the settings of
    ``session_conf`` (a Connect server's own static settings cannot be changed from here).

    Spark started here (a local master, a local Connect server) binds to 127.0.0.1 (``SPARK_LOCAL_IP``) unless that
    is already set. Python workers that this process starts (any master, a local Connect server) run
    ``spark.pyspark.python`` from the config's ``spark.conf`` if given, else ``PYSPARK_PYTHON`` if set, else this
    interpreter (on a cluster, the same path must hold the same environment on every node): Spark would otherwise
    start the ``python3`` on PATH, which a console script run from a venv that is not activated (as cron runs it)
    does not have the project in.

    Raises
    ------
    ConfigError
        pyspark is not installed.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError(
            "engine: spark needs pyspark, which is not installed. Install it with "
            "pip install 'clv-forecast[spark]' (Java 17 is needed), or set engine: duckdb."
        ) from None
    remote = spark_remote(settings)
    target = spark_master(settings)  # the server's address with Spark Connect
    local = target.startswith("local")
    if local or not remote:  # the Python workers start from this environment
        _choose_workers_python(settings)
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf: dict[str, Any] = session_conf(settings, local)
    if remote:
        return SparkSession.builder.remote(remote).config(map=conf).getOrCreate()
    builder = (
        SparkSession.builder.master(target)
        .appName(settings.app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
    )
    return builder.config(map=conf).getOrCreate()


#: Settings of every session (the config's ``spark.conf`` overrides them): UTC session time, and adaptive execution
#: allowed to coalesce the partitions of the stages that read a cached frame (the summary and the scores). Spark
#: otherwise keeps ``spark.sql.shuffle.partitions`` there, 200 by default: a 2,000-customer run on a local master
#: with 200 shuffle partitions took 63 s, and 18 s with this setting.
SESSION_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
}


def session_conf(settings: SparkConfig, local: bool) -> dict[str, str]:
    """The settings a session starts with: ``SESSION_DEFAULTS``; on this machine (``local``) fewer shuffle
    partitions and, unless the user sized it, more driver memory; then the config's ``spark.conf``."""
    conf = dict(SESSION_DEFAULTS)
    if local:
        conf["spark.sql.shuffle.partitions"] = LOCAL_SHUFFLE_PARTITIONS
        if not driver_memory_set():
            conf["spark.driver.memory"] = local_driver_memory()
    return conf | settings.conf


def _choose_workers_python(settings: SparkConfig) -> None:
    """Have Spark start its Python workers with ``spark.pyspark.python`` from the config, else ``PYSPARK_PYTHON``,
    else this interpreter: the environment the SparkContext (or a local Connect server) reads when it starts."""
    if "spark.pyspark.python" in settings.conf:
        os.environ["PYSPARK_PYTHON"] = settings.conf["spark.pyspark.python"]
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect session (no SparkContext on this side)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def ship_package(spark: SparkSession) -> None:
    """Send this forecast package to the executors (as a zip on their path), so they score with the same code.

    The zip is built once per driver process and added once per SparkContext (classic Spark) or session (Spark
    Connect, as an artifact).
    """
    if is_connect(spark):
        if not getattr(spark, "_forecast_package_shipped", False):
            spark.addArtifacts(str(_package_zip()), pyfile=True)
            spark._forecast_package_shipped = True  # type: ignore[attr-defined]
        return
    context = spark.sparkContext
    if getattr(context, "_forecast_package_shipped", False):
        return
    context.addPyFile(str(_package_zip()))
    context._forecast_package_shipped = True  # type: ignore[attr-defined]


@functools.cache
def _package_zip() -> Path:
    package = Path(__file__).resolve().parents[1]
    archive = Path(tempfile.mkdtemp(prefix="forecast-pkg-")) / "forecast.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(package.rglob("*.py")):
            bundle.write(path, Path("forecast") / path.relative_to(package))
    return archive


def _spark_pattern(strptime_format: str) -> str:
    pattern, i, after_code = "", 0, False
    while i < len(strptime_format):
        code = strptime_format[i : i + 2]
        if code in STRPTIME_TO_SPARK:
            before_code = strptime_format.startswith("%", i + 2) and not strptime_format.startswith("%%", i + 2)
            alone = not after_code and not before_code
            pattern += UNPADDED[code] if code in UNPADDED and alone else STRPTIME_TO_SPARK[code]
            after_code = code != "%%"
            i += 2
        elif strptime_format[i] == "%":
            raise ConfigError(
                f"data.timestamp_format {strptime_format!r} uses {code}, which the Spark engine does not translate. "
                f"Use the codes {', '.join(STRPTIME_TO_SPARK)} or engine: duckdb."
            )
        else:
            char = strptime_format[i]
            pattern += f"'{char}'" if char.isalpha() else char
            after_code = False
            i += 1
    return pattern


def read_log(spark: SparkSession, config: DataConfig) -> SparkFrame:
    """Read the raw log as Spark sees it: files (local or shared storage URIs) or a table.

    ``data.path`` may be ``table:NAME`` (a table in Spark's catalog), a URI such as
    ``s3a://bucket/sales/*.parquet`` or ``hdfs:///logs/`` (passed to Spark as is), or a local
    file, glob or folder (expanded here, as for DuckDB).
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    path = config.path
    if path.startswith("table:"):
        return spark.table(path.removeprefix("table:"))
    if "://" in path:
        paths, file_format = [path], config.format if config.format != "auto" else _format_of(path)
    else:
        files = resolve_files(path)
        paths = [str(p) for p in files]
        file_format = config.format if config.format != "auto" else _format_of(paths[0])
    if file_format == "parquet":
        return spark.read.parquet(*paths)
    if file_format == "whitespace":
        lines = spark.read.text(paths).where(F.trim("value") != "")
        parts = F.split(F.trim("value"), r"\s+")
        names = config.columns or []
        if config.header:
            # Every file's header line is the same words: lines of exactly those words are headers, not data.
            first = lines.first()
            header = first["value"].split() if first is not None else []
            names = names or header
            lines = lines.where(F.concat_ws(" ", parts) != F.lit(" ".join(header)))
        return lines.select(*[parts.getItem(i).alias(name) for i, name in enumerate(names)])
    # escape '"': a doubled quote inside a quoted field is one quote (RFC 4180, as DuckDB reads it); Spark's
    # default escape is a backslash, which keeps the field's quotes and both doubled ones.
    reader = (
        spark.read.option("header", str(config.header).lower()).option("inferSchema", "false").option("escape", '"')
    )
    if config.delimiter is not None:
        reader = reader.option("sep", config.delimiter)
    # Spark maps every file's columns by position to one file's header; DuckDB (union_by_name) by name.
    groups = _paths_by_header(paths, config.delimiter) if config.header and not config.columns else [paths]
    frames = [reader.csv(group) for group in groups]
    frame = functools.reduce(lambda left, right: left.unionByName(right, allowMissingColumns=True), frames)
    if config.columns:
        frame = frame.toDF(*config.columns)
    return frame


def _paths_by_header(paths: list[str], delimiter: str | None) -> list[list[str]]:
    """Local CSV files grouped by their header line, in order (files of one group are read together); all in one
    group when there is one file or a path is a URI, whose header only Spark can read."""
    if len(paths) < 2 or any("://" in path for path in paths):
        return [paths]
    groups: dict[tuple[str, ...], list[str]] = {}
    for path in paths:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as file:
            header = next(csv.reader(file, delimiter=delimiter or ","), [])
        groups.setdefault(tuple(header), []).append(path)
    return list(groups.values())


def _format_of(path: str) -> str:
    lowered = path.lower().rstrip("/")
    return "parquet" if lowered.endswith((".parquet", ".pq")) or "parquet" in lowered.rsplit("/", 1)[-1] else "csv"


@dataclass(frozen=True)
class SparkQuality:
    """What the Spark engine saw in the log (the same counts as ``forecast.data.ingest.DataQuality``)."""

    rows: int
    customers: int
    first_timestamp: str | None
    last_timestamp: str | None
    warnings: list[str] = field(default_factory=list)


def typed_log(spark: SparkSession, config: DataConfig) -> tuple[SparkFrame, SparkQuality]:
    """Normalise the log to ``(customer_id, ts, amount, <segment columns>)``, check it, and apply the policies.

    The same checks as ``forecast.data.ingest.read_transactions`` where Spark can make them: empty ids are
    dropped, invalid timestamps and amounts refused, returns netted into a purchase day (``net``: ``net_returns``),
    dropped or refused.

    Raises
    ------
    DataError
        Missing columns, unparseable timestamps or amounts, an empty log, or negative amounts under ``fail``.
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    raw = read_log(spark, config)
    _check_columns(config, raw.columns)
    if _float_ids(raw, config):
        _check_float_ids(raw, config)
    typed = _typed_columns(raw, config)
    stats = _problem_counts(typed)
    _refuse_unusable_rows(typed, stats, config)
    customers, float_text_ids = int(stats["customers"]), 0
    if stats["ids_with_point"] and _text_file_log(config):
        typed, float_text_ids, customers = _read_whole_float_text_ids(typed, customers)
    kept = typed.where(~_empty_id()).drop(RAW_TIMESTAMP)
    netting = Netting()
    if config.negative_amounts != "net":
        kept = kept.where(F.col("amount") >= 0)
    elif int(stats["negative_amounts"]):
        kept, netting = net_returns(kept, config.return_window_days)
    quality = SparkQuality(
        rows=int(stats["rows"]),
        customers=customers,
        first_timestamp=None if stats["first_ts"] is None else str(stats["first_ts"]),
        last_timestamp=None if stats["last_ts"] is None else str(stats["last_ts"]),
        warnings=_float_id_warnings(raw, config, float_text_ids) + _quality_warnings(stats, config, netting),
    )
    return kept, quality


def _float_ids(raw: SparkFrame, config: DataConfig) -> bool:
    """Whether the log stores the customer id as floating-point numbers (read as integers, as on DuckDB)."""
    from pyspark.sql.types import DoubleType, FloatType

    return isinstance(raw.schema[config.customer_id].dataType, (DoubleType, FloatType))


def _check_float_ids(raw: SparkFrame, config: DataConfig) -> None:
    """Raise a DataError when floating-point ids are not whole numbers below 2^53 in size (as DuckDB does)."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    cid = F.col(f"`{config.customer_id}`")
    bad = ~F.isnan(cid) & ((F.abs(cid) >= FLOAT_ID_LIMIT) | (cid % 1 != 0))
    examples = [row[0] for row in raw.where(bad).select(cid).limit(5).collect()]
    if examples:
        raise DataError(
            f"{config.path} stores '{config.customer_id}' (data.customer_id) as floating-point numbers, and some are "
            f"not whole numbers below 2^53 = {FLOAT_ID_LIMIT:,} (examples: {examples}): beyond that a float cannot "
            "tell neighbouring ids apart, so customers may have been merged. Export the ids as integers or text."
        )


def _text_file_log(config: DataConfig) -> bool:
    """Whether the log is read from text files (CSV or whitespace-separated), whose ids are text as written."""
    path = config.path
    if path.startswith("table:"):
        return False
    if config.format != "auto":
        return config.format != "parquet"
    return _format_of(path if "://" in path else str(resolve_files(path)[0])) != "parquet"


def _read_whole_float_text_ids(typed: SparkFrame, customers: int) -> tuple[SparkFrame, int, int]:
    """``forecast.data.ingest.read_whole_float_text_ids`` on Spark: ids such as '13085.0' read as '13085' when every
    non-empty id is a whole number written so (``WHOLE_FLOAT_TEXT``); returns the log, the ids rewritten and the
    customers (counted again when ids were rewritten)."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    cid = F.col("customer_id")
    with_point = cid.contains(".")
    rewritten = F.when(with_point, F.substring_index(cid, ".", 1)).otherwise(cid)
    row = typed.agg(
        F.count(F.when(~_empty_id() & ~cid.rlike(f"^{WHOLE_FLOAT_TEXT}\\z"), 1)).alias("others"),
        F.count(F.when(with_point, 1)).alias("with_point"),
        F.count_distinct(F.when(~_empty_id(), rewritten)).alias("customers"),
    ).first()
    if row is None or row["others"] or not row["with_point"]:
        return typed, 0, customers
    return typed.withColumn("customer_id", rewritten), int(row["with_point"]), int(row["customers"])


def _float_id_warnings(raw: SparkFrame, config: DataConfig, float_text_ids: int) -> list[str]:
    """The DuckDB engine's warnings on ids stored as floating-point numbers or written as whole floats."""
    messages = [float_text_ids_message(config, float_text_ids)] if float_text_ids else []
    return messages + ([float_ids_message(config)] if _float_ids(raw, config) else [])


def _check_columns(config: DataConfig, found: list[str]) -> None:
    """Raise a DataError naming every mapped column the log lacks."""
    needed = {"data.customer_id": config.customer_id, "data.timestamp": config.timestamp, "data.amount": config.amount}
    needed.update({f"data.segment_columns[{i}]": c for i, c in enumerate(config.segment_columns)})
    missing = [f"'{col}' ({key})" for key, col in needed.items() if col not in found]
    if missing:
        raise DataError(
            f"{config.path} has no column {', '.join(missing)}. Columns found: {', '.join(found) or 'none'}. "
            "Map the right names in the config's data section."
        )


def _typed_columns(raw: SparkFrame, config: DataConfig) -> SparkFrame:
    """The mapped columns, typed: id and segments as text, ts as TIMESTAMP and amount as DOUBLE (NULL if invalid).

    The raw timestamp is kept as text in ``RAW_TIMESTAMP``, for the message that quotes invalid ones.
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    ts_raw = F.col(f"`{config.timestamp}`")
    if config.timestamp_format:
        ts = _formatted_timestamp(ts_raw.cast("string"), config.timestamp_format)
    elif isinstance(raw.schema[config.timestamp].dataType, (TimestampType, TimestampNTZType, DateType)):
        ts = ts_raw.cast("timestamp")
    else:
        # As DuckDB reads any other column: as text (20240131 is no date, not 20,240,131 seconds after 1970).
        ts = _text_timestamp(ts_raw.cast("string"))
    # As on DuckDB, a date before 1900 or after tomorrow is invalid (a typo or a placeholder), not a purchase.
    first, after_last = (utc_midnight(day) for day in timestamp_range(config))
    ts = ts.cast("timestamp")
    ts = F.when((ts >= first) & (ts < after_last), ts)
    cid = F.col(f"`{config.customer_id}`")
    # As on DuckDB, whole floating-point ids (``_check_float_ids``) are read as integers: 42.0 as '42'; NaN as none.
    customer_id = F.when(~F.isnan(cid), cid.cast("long").cast("string")) if _float_ids(raw, config) else cid
    return raw.select(
        customer_id.cast("string").alias("customer_id"),
        ts.alias("ts"),
        F.col(f"`{config.amount}`").try_cast("double").alias("amount"),
        *[F.col(f"`{c}`").cast("string").alias(c) for c in config.segment_columns],
        ts_raw.cast("string").alias(RAW_TIMESTAMP),
    )


def _text_timestamp(text: Column) -> Column:
    """A text timestamp cast as DuckDB casts it (``forecast.data.ingest._timestamp_sql``): trimmed of spaces, the
    date's fields separated by '-', '/', ' ' or '\\' (``TEXT_DATE``), no ``SPACED_OFFSET``; else NULL."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    text = F.trim(text)
    dashed = F.regexp_replace(text, r"^(\s*\d+)[-/ \\](\d{1,2})[-/ \\](\d{1,2})( ?) *", "$1-$2-$3$4")
    return F.when(text.rlike(TEXT_DATE) & ~text.rlike(SPACED_OFFSET), dashed.try_cast("timestamp"))


def _formatted_timestamp(text: Column, strptime_format: str) -> Column:
    """``text`` parsed by ``data.timestamp_format`` as DuckDB's strptime parses it: surrounding spaces ignored, fields
    without leading zeros read (``UNPADDED``), and '%y' read as 1969 to 2068 (POSIX; Spark's 'yy' gives 2000-2099)."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    ts = F.try_to_timestamp(F.trim(text), F.lit(_spark_pattern(strptime_format))).cast("timestamp")
    if "%y" in strptime_format.replace("%%", ""):
        ts = F.when(F.year(ts) >= 2069, F.timestamp_add("YEAR", F.lit(-100), ts)).otherwise(ts)
    return ts


def _empty_id() -> Column:
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    return F.col("customer_id").isNull() | (F.trim("customer_id") == "")


def _problem_counts(typed: SparkFrame) -> Any:
    """One pass of aggregates: the rows with each problem, the customers and the span of the usable rows."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    empty_id = _empty_id()
    # As on DuckDB, which sums amounts exactly in 29 digits before the point: 1e29 or more in size is invalid.
    bad_amount = F.col("amount").isNull() | F.isnan("amount") | (F.abs("amount") >= AMOUNT_LIMIT)
    stats = typed.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(empty_id, 1)).alias("null_ids"),
        F.count(F.when(F.col("ts").isNull(), 1)).alias("bad_ts"),
        F.count(F.when(bad_amount, 1)).alias("bad_amounts"),
        F.count(F.when(F.col("amount") == 0, 1)).alias("zero_amounts"),
        F.count(F.when(F.col("amount") < 0, 1)).alias("negative_amounts"),
        F.count_distinct(F.when(~empty_id, F.col("customer_id"))).alias("customers"),
        F.count(F.when(F.col("customer_id").contains("."), 1)).alias("ids_with_point"),
        F.min(F.when(~empty_id, F.col("ts"))).alias("first_ts"),
        F.max(F.when(~empty_id, F.col("ts"))).alias("last_ts"),
    ).first()
    assert stats is not None
    return stats


def _refuse_unusable_rows(typed: SparkFrame, stats: Any, config: DataConfig) -> None:
    """Raise a DataError for an empty log, invalid timestamps or amounts, or returns under ``fail``."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    rows = int(stats["rows"])
    if rows == 0:
        raise DataError(f"{config.path} has no transactions. Point data.path at a non-empty log.")
    if stats["bad_ts"]:
        examples = [r[0] for r in typed.where(F.col("ts").isNull()).select(RAW_TIMESTAMP).limit(5).collect()]
        raise DataError(
            f"{stats['bad_ts']:,} of {rows:,} rows in {config.path} have a '{config.timestamp}' that is not a date or "
            f"time or falls outside {range_text(config)}; examples: {examples}. Fix those rows or set "
            "data.timestamp_format."
        )
    if stats["bad_amounts"]:
        raise DataError(
            f"{stats['bad_amounts']:,} of {rows:,} rows in {config.path} have a '{config.amount}' that is not a "
            "finite number or is 1e29 or more in size. Fix or remove those rows."
        )
    negative = int(stats["negative_amounts"])
    if negative and config.negative_amounts == "fail":
        raise DataError(
            f"{negative:,} rows in {config.path} have a negative '{config.amount}' (returns). Set "
            "data.negative_amounts to 'net' or 'drop', or remove them."
        )


def net_returns(log: SparkFrame, window_days: int) -> tuple[SparkFrame, Netting]:
    """``data.negative_amounts: net`` as the DuckDB engine applies it (``forecast.data.ingest._net_returns``; Spark
    refuses ``data.order_id``, so by customer only): each return is netted into the customer's most recent purchase
    day on or before it, at most ``window_days`` earlier, added to that day's last purchase and never taking the day
    below zero. Returns without such a day are dropped: a return never becomes a purchase. Returns the log of
    purchases and what netting could not do (counted for the warnings)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    purchases = log.where(F.col("amount") >= 0).withColumn("day", F.to_date("ts"))
    # Every return of a customer's day nets into the same purchase day: match the days, not the rows.
    returns = (
        log.where(F.col("amount") < 0)
        .groupBy("customer_id", F.to_date("ts").alias("return_day"))
        .agg(F.sum("amount").alias("returned"), F.count(F.lit(1)).alias("returns"))
    )
    days = purchases.select(F.col("customer_id").alias("buyer"), F.col("day").alias("purchase_day")).distinct()
    in_window = (
        (F.col("buyer") == F.col("customer_id"))
        & (F.col("purchase_day") <= F.col("return_day"))
        & (F.col("purchase_day") >= F.date_sub("return_day", window_days))
    )
    returned = (
        returns.join(days, in_window, "left")
        .groupBy("customer_id", "return_day")
        .agg(
            F.first("returned").alias("returned"),
            F.first("returns").alias("returns"),
            F.max("purchase_day").alias("day"),
        )
        .groupBy("customer_id", "day")
        .agg(F.sum("returned").alias("returned"), F.sum("returns").alias("returns"))
    )
    day_totals = purchases.groupBy("customer_id", "day").agg(F.sum("amount").alias("day_total"))
    counts = (
        returned.join(day_totals, ["customer_id", "day"], "left")
        .agg(
            F.sum(F.when(F.col("day").isNull(), F.col("returns"))).alias("unmatched"),
            F.count(F.when(F.col("returned") < -F.col("day_total"), 1)).alias("over"),
        )
        .first()
    )
    netting = Netting(int((counts and counts["unmatched"]) or 0), int((counts and counts["over"]) or 0))
    by_day = Window.partitionBy("customer_id", "day")
    last_of_day = F.row_number().over(by_day.orderBy(F.col("ts").desc())) == 1
    added = F.greatest(F.coalesce(F.col("returned"), F.lit(0.0)), -F.sum("amount").over(by_day))
    netted = purchases.join(returned.where(F.col("day").isNotNull()).drop("returns"), ["customer_id", "day"], "left")
    amount = F.col("amount") + F.when(last_of_day, added).otherwise(F.lit(0.0))
    return netted.select(*[amount.alias(c) if c == "amount" else F.col(f"`{c}`") for c in log.columns]), netting


def _quality_warnings(stats: Any, config: DataConfig, netting: Netting) -> list[str]:
    """One message per problem the policies handled, with its count."""
    messages = []
    if stats["null_ids"]:
        messages.append(empty_ids_message(int(stats["null_ids"])))
    if stats["zero_amounts"]:
        messages.append(zero_amounts_message(int(stats["zero_amounts"])))
    if stats["negative_amounts"]:
        messages.append(negative_amounts_message(config, int(stats["negative_amounts"])))
    messages.extend(netting.messages(config))
    return messages


@dataclass(frozen=True)
class CompressedFit:
    """The models fitted on the driver from the compressed summary, the unique histories they were fitted on, and
    the RFM cuts of the same rows."""

    purchases: PurchaseModel
    spend: GammaGamma
    rfm_cuts: RfmCuts
    histories: Histories
    spend_histories: SpendHistories


def fit_on_compressed(summary: SparkFrame, config: RunConfig) -> CompressedFit:
    """Fit the purchase and spend models on the driver from the compressed summary Spark sends back, with the DuckDB
    engine's fits and fallbacks (``forecast.models.fit_purchase_model``, ``fit_spend_model``) and penalties.

    Only unique (frequency, recency, T) rows and unique (frequency, monetary_value) rows travel, with their customer
    counts; the fits equal those on every customer row. The RFM cuts come from the same rows.
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    purchase_rows = to_pandas(summary.groupBy("frequency", "recency", "T").count())
    monetary_value = F.when(F.col("frequency") > 0, F.col("monetary_value")).otherwise(F.lit(0.0))
    spend_rows = to_pandas(summary.groupBy("frequency", monetary_value.alias("monetary_value")).count())
    totals = summary.agg(F.sum("revenue").alias("revenue"), F.sum("frequency").alias("repeats")).first()
    mean_amount = None
    if totals is not None and totals["revenue"] is not None:
        customers = float(purchase_rows["count"].sum())
        mean_amount = mean_amount_of(float(totals["revenue"]), float(totals["repeats"]), customers)
    histories = Histories.from_counts(purchase_rows, purchase_rows["count"])
    spend_histories = SpendHistories.from_counts(spend_rows, spend_rows["count"])
    purchases = fit_purchase_model(config.purchase_model, histories, config.penalizer.purchases)
    spend = fit_spend_model(spend_histories, config.penalizer.spend, mean_amount)
    since_last = purchase_rows["T"].to_numpy(float) - purchase_rows["recency"].to_numpy(float)
    cuts = RfmCuts.from_counts(purchase_rows["frequency"].to_numpy(), since_last, purchase_rows["count"].to_numpy())
    return CompressedFit(purchases, spend, cuts, histories, spend_histories)


def interval_figures(config: RunConfig, fit: CompressedFit) -> HistoryFigures | None:
    """The intervals' figures of every unique history (``forecast.value.uncertainty.history_figures``), or None when
    the run has no intervals: as on DuckDB, none are wanted, or they cannot be computed (a ForecastWarning says why).
    The driver has no customer ids: a history that cannot be evaluated is named by its values."""
    if not intervals_wanted(config, fit.purchases, fit.spend):
        return None
    try:
        return history_figures(
            fit.purchases, fit.spend, Valuation.from_config(config), fit.histories, fit.spend_histories,
            config.ci_level, config.interval_draws, config.seed, pd.Index([]),
        )  # fmt: skip
    except FitError as exc:
        warnings.warn(f"{INTERVALS_LEFT_EMPTY} {exc}", ForecastWarning, stacklevel=2)
        return None


def score(
    summary: SparkFrame, fit: CompressedFit, config: RunConfig, lifespan_years: float, layout: FigureLayout | None
) -> SparkFrame:
    """Score every customer on the executors (``mapInPandas``) with the DuckDB engine's own function,
    ``forecast.batch.pipeline.scored_columns``, batch by batch: every per-customer column but the value tier (which
    ranks everybody: ``assign_tiers``), the RFM groups cut where the whole summary's cuts are.

    With a ``layout``, the summary carries every customer's history figures (``with_history_figures``) and the
    batches add the interval bounds and the figures the segments' intervals are summed from; without one, the
    bounds are empty (NaN), as on DuckDB.

    The fitted parameters travel as plain JSON-able dictionaries.
    """
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    segment_columns = list(config.data.segment_columns)
    purchases_state, spend_state = fit.purchases.to_dict(), fit.spend.to_dict()
    model_type, spend_type, cuts = type(fit.purchases), type(fit.spend), fit.rfm_cuts
    valuation = Valuation.from_config(config)
    columns = [c for c in scored_output_columns(segment_columns) if c != "segment"]
    columns += layout.figure_names() if layout is not None else []

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        purchases, spend = model_type.from_dict(purchases_state), spend_type.from_dict(spend_state)
        for batch in batches:
            if batch.empty:
                continue
            frame = batch.set_index("customer_id")
            frame["frequency"] = frame["frequency"].astype("int64")
            scored = scored_columns(
                config, valuation, frame, purchases, spend, Histories.from_summary(frame),
                SpendHistories.from_summary(frame), lifespan_years, cuts,
            )  # fmt: skip
            if layout is not None:
                scored.update(layout.customer_columns(batch))
            else:
                scored.update({name: np.full(len(frame), np.nan) for name in BOUNDS})
            out = pd.DataFrame(scored, index=frame.index).reset_index()
            for name in ("rfm_group", "cohort"):
                out[name] = out[name].astype(str)
            yield out[columns]

    text = {"customer_id", "rfm_group", "cohort", *segment_columns}
    fields = [
        StructField(name, StringType() if name in text else LongType() if name == "frequency" else DoubleType())
        for name in columns
    ]
    return summary.mapInPandas(score_batches, StructType(fields))


def scored_output_columns(segment_columns: list[str]) -> list[str]:
    """The per-customer columns the Spark engine writes, in the DuckDB engine's order (``customer_columns``): the
    contract's, then the log's segment columns, the RFM group and the cohort. ``score`` gives them all but the value
    tier (``segment``)."""
    return [*CUSTOMER_COLUMNS, *segment_columns, "rfm_group", "cohort"]


def assign_tiers(scored: SparkFrame, tiers: dict[str, float]) -> SparkFrame:
    """Add the value tier (``segment``) as ``forecast.value.clv.assign_tiers`` does: by CLV rank, ties by customer id.

    The customers at the tier boundaries are found by their rank (``boundary_keys``); every customer is then
    labelled by comparing its (clv, customer_id) with those boundary keys.
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    customers = scored.count()
    bounds = np.cumsum(list(tiers.values())) * customers
    cut_positions = {k: math.ceil(float(b)) for k, b in enumerate(bounds[:-1]) if math.ceil(float(b)) < customers}
    keys = boundary_keys(scored, sorted(set(cut_positions.values())))
    index: Column = F.lit(0)
    for position in cut_positions.values():
        clv, customer_id = keys[position]
        after = (F.col("clv") < F.lit(clv)) | ((F.col("clv") == F.lit(clv)) & (F.col("customer_id") >= customer_id))
        index = index + F.when(after, 1).otherwise(0)
    labels = list(tiers)
    label = F.element_at(F.array(*[F.lit(name) for name in labels]), F.least(index, F.lit(len(labels) - 1)) + 1)
    return scored.withColumn("segment", label)


#: ``monotonically_increasing_id`` puts the partition's number above these bits and the row's place in it below.
ROW_BITS = 33


def boundary_keys(scored: SparkFrame, positions: list[int]) -> dict[int, tuple[float, str]]:
    """The (clv, customer_id) of the customers at ``positions`` (0 = the highest CLV) in the order of CLV, highest
    first, ties by customer id: DataFrame operations only, so that Spark Connect runs them.

    A distributed sort puts the customers in order across its partitions; the customers per partition (one
    small row each) give every partition's first position, and each wanted customer is then the row at its place
    within its partition (``monotonically_increasing_id``). Only the partition counts and the wanted rows reach
    the driver. The sorted rows are cached between the two queries, so both see the same partitions.
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    if not positions:
        return {}
    ranked = (
        scored.select("clv", "customer_id")
        .orderBy(F.desc("clv"), F.asc("customer_id"))
        .select("clv", "customer_id", F.spark_partition_id().alias("part"), F.monotonically_increasing_id().alias("id"))
        .cache()
    )
    try:
        sizes = to_pandas(ranked.groupBy("part").count()).sort_values("part")
        starts = dict(zip(sizes["part"], np.cumsum(sizes["count"]) - sizes["count"], strict=True))
        wanted: dict[tuple[int, int], int] = {}
        for position in positions:
            part = max(p for p, start in starts.items() if start <= position)
            wanted[(int(part), int(position - starts[part]))] = position
        condition = F.lit(False)
        for part, place in wanted:
            condition = condition | (F.col("id") == F.lit((part << ROW_BITS) + place))
        rows = ranked.where(condition).collect()
    finally:
        ranked.unpersist()
    return {
        wanted[(int(row["id"]) >> ROW_BITS, int(row["id"]) & ((1 << ROW_BITS) - 1))]: (row["clv"], row["customer_id"])
        for row in rows
    }


def observed_lifespan_years(summary: SparkFrame, as_of: dt.date) -> float:
    """``forecast.value.clv.observed_lifespan_years`` computed with Spark aggregates (same window and formula)."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    first_day = summary.agg(F.min("first_purchase")).first()
    assert first_day is not None
    window_days, cutoff = churn_window(first_day[0], as_of)
    cutoff_literal = utc_instant(cutoff.to_pydatetime())
    row = (
        summary.where(F.col("first_purchase").cast("timestamp") < cutoff_literal)
        .agg(F.avg(F.when(F.col("last_purchase").cast("timestamp") < cutoff_literal, 1.0).otherwise(0.0)))
        .first()
    )
    churned = float("nan") if row is None or row[0] is None else float(row[0])
    return lifespan_from_churn(churned, window_days, cutoff)


def segment_sums(
    customers: SparkFrame,
    segmentations: list[str],
    tiers: list[str],
    p_alive_threshold: float,
    figures: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The per-segment totals (``forecast.value.segments.customer_totals``), budget sums
    (``forecast.value.budget.segment_budget_sums``) and interval figures (``figures``, over everybody and over the
    customers at risk: ``at_risk_name``) added up by Spark, one aggregate per segmentation; the segment table is then
    built from them by the DuckDB engine's code (``forecast.batch.pipeline.segment_figures``).

    Rows come in that table's order, whatever order Spark collects the groups in: everybody (``all``) first, then
    the segmentations in the order given, each one's segments as ``in_segment_order`` puts them.
    """
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    at_risk = F.col("p_alive") < F.lit(p_alive_threshold)
    sums = [F.sum(name).alias(name) for name in [*SUMMED_COLUMNS, *OPTIONAL_SUMMED_COLUMNS]]
    sums += [
        F.sum(F.col("revenue") - F.col("frequency") * F.col("monetary_value")).alias("first_purchase_value"),
        F.sum("expected_spend").alias("expected_spend"),
        F.count(F.when(at_risk, 1)).alias("at_risk"),
        F.sum(F.when(at_risk, F.col("clv")).otherwise(F.lit(0.0))).alias("risk_clv"),
    ]
    figures = figures or []
    sums += [F.sum(name).alias(name) for name in figures]
    sums += [F.sum(F.when(at_risk, F.col(name)).otherwise(F.lit(0.0))).alias(at_risk_name(name)) for name in figures]
    frames = []
    for column in [None, *segmentations]:
        # Everybody is grouped by a literal, not by a helper column that a data segment column could be named.
        key = F.lit(ALL) if column is None else F.col(column)
        table = to_pandas(
            customers.where(key.isNotNull())
            .groupBy(key.alias("segment"))
            .agg(F.count(F.lit(1)).alias("customers"), *sums)
        )
        table = in_segment_order(table, {"segment": tiers, "rfm_group": RFM_GROUPS}.get(str(column)))
        table["segment"] = table["segment"].astype(str)
        table.insert(0, "segmentation", segmentation_name(column))
        frames.append(table)
    everything = pd.concat(frames, ignore_index=True).set_index(["segmentation", "segment"])
    everything["customers"] = everything["customers"].astype("int64")
    totals = everything[["customers", *SUMMED_COLUMNS, *OPTIONAL_SUMMED_COLUMNS]]
    return totals, budget_sums_of(everything), everything[[*figures, *[at_risk_name(name) for name in figures]]]


@dataclass
class SparkRunResult:
    """A finished Spark run: where its outputs are and what it computed (per-customer data stays in Spark)."""

    output: Path
    models: Path
    customers_path: str
    as_of: dt.date
    customers: int
    purchases: PurchaseModel
    spend: GammaGamma
    segments: pd.DataFrame
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@contextmanager
def spark_errors(settings: SparkConfig, doing: Callable[[], str]) -> Iterator[None]:
    """Turn a failure of Spark itself (its JVM, a query, a Python worker) into an EngineError with a paragraph.

    Parameters
    ----------
    settings
        The run's ``spark`` section, named in the message.
    doing
        Gives the step under way, as a phrase ("Summarising customers as of ... on Spark").
    """
    try:
        yield
    except Exception as exc:
        # Spark's own failures (``is_spark_error``); other errors are the library's or a bug.
        if not is_spark_error(exc):
            raise
        what = spark_error_line(exc, 400)
        step = doing()
        raise EngineError(
            f"Spark failed while {step[:1].lower()}{step[1:]} ({spark_where(settings)}): "
            f"{what.rstrip('.')}. "
            "Check spark.master and spark.conf in the config, that Java 17 is installed and the cluster is "
            "reachable, and Spark's own log above; nothing was written."
        ) from None


def run(
    config: RunConfig,
    as_of: dt.date | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
    spark: SparkSession | None = None,
    force: bool = False,
) -> SparkRunResult:
    """Run the monthly batch on Spark: summary and scoring on the cluster, fits on the driver.

    Writes the same outputs as ``forecast.batch.pipeline.run``: ``customers.parquet`` (a Parquet folder written
    by Spark; under ``spark.output`` when that is set, e.g. on shared storage), ``customers.csv`` (when
    wanted and the Parquet is local), ``segments.csv``, ``manifest.json`` and the model JSON files, into
    ``output`` or ``<config output>/<as_of>/``, published with the models under the month's lock as the DuckDB
    engine publishes. An existing run folder there is replaced only with ``force`` (Spark has no row fingerprint
    to tell a run of the same input); a folder that is not a run never is.

    Raises
    ------
    EngineError
        Spark itself failed (see ``spark_errors``).
    """
    say, doing = tracked_steps(progress)
    check_runs_apart_from_models(Path(output or config.output), Path(config.models_dir))
    with run_log() as lines, spark_errors(config.spark, doing):
        return _run(config, as_of, output, say, spark, force, lines.lines)


def budget(
    config: RunConfig, cac: float | None = None, as_of: dt.date | None = None, progress: Progress | None = None
) -> BudgetForecast:
    """``forecast.batch.pipeline.budget`` on Spark: the forecast as of a date, summarised and scored on the cluster,
    and per segment whether a new customer acquired at the CAC pays back. Nothing is written.

    Raises
    ------
    EngineError
        Spark itself failed (see ``spark_errors``).
    """
    config = with_cac(config, cac)
    with log_on_spark(config, progress) as (say, log, quality):
        as_of = _checked_as_of(config, as_of, quality)
        result = _forecast(config, log, as_of, say)
        result.release()
    return BudgetForecast(as_of, result.segments, [*quality.warnings, *result.warnings])


def backtest(
    config: RunConfig,
    calibration_end: dt.date | None = None,
    holdout_end: dt.date | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
) -> BacktestRun:
    """``forecast.batch.pipeline.backtest`` with the log read and queried by Spark (``SparkLog``).

    Raises
    ------
    EngineError
        Spark itself failed (see ``spark_errors``).
    """
    started = time.perf_counter()
    with log_on_spark(config, progress) as (say, log, quality):
        spark_log = SparkLog.of(log, config)
        return backtest_on(spark_log, config, calibration_end, holdout_end, output, say, started, quality.warnings)


@contextmanager
def log_on_spark(config: RunConfig, progress: Progress | None) -> Iterator[tuple[Progress, SparkFrame, SparkQuality]]:
    """Refuse what only DuckDB applies, start Spark and read the log (``typed_log``); give the step reporter, the log
    and what the reading saw. A failure of Spark in the block is an EngineError naming the step under way."""
    refuse_duckdb_only_settings(config)
    say, doing = tracked_steps(progress)
    with spark_errors(config.spark, doing):
        _, log, quality = start_and_read(config, say)
        yield say, log, quality


def tracked_steps(progress: Progress | None) -> tuple[Progress, Callable[[], str]]:
    """A progress reporter (``logged``) that remembers the step under way, and the function that names that step
    (for ``spark_errors``' message)."""
    steps: list[str] = []
    say = logged(progress)

    def tracked(message: str) -> None:
        steps.append(message)
        say(message)

    return tracked, lambda: steps[-1] if steps else "starting"


def start_and_read(
    config: RunConfig, say: Progress, spark: SparkSession | None = None
) -> tuple[SparkSession, SparkFrame, SparkQuality]:
    """Start Spark (or take ``spark``), send it this package, and read and check the log (``typed_log``); return the
    session, the log and what the reading saw."""
    say(f"Starting Spark ({spark_master(config.spark)})")
    spark = spark if spark is not None else spark_session(config.spark)
    ship_package(spark)
    say(f"Reading {config.data.path} with Spark")
    return spark, *typed_log(spark, config.data)


def refuse_duckdb_only_settings(config: RunConfig) -> None:
    """Refuse (ConfigError, before Spark starts) the settings only the DuckDB engine applies, which Spark would
    otherwise ignore silently: row filters, quantities, excluded customers, order ids, dropping duplicate or
    invalid rows, and a time zone other than UTC."""
    data = config.data
    duckdb_only = [
        name for name, value in (
            ("data.exclude_customers", data.exclude_customers), ("data.exclude", data.exclude),
            ("data.quantity", data.quantity), ("data.order_id", data.order_id),
            ("data.duplicates", data.duplicates != "keep"), ("data.invalid_rows: drop", data.invalid_rows == "drop"),
            ("data.timezone", data.timezone != "UTC"),
        )
        if value
    ]  # fmt: skip
    if config.spark.conf.get("spark.submit.deployMode", "client") != "client":
        raise ConfigError(
            "spark.submit.deployMode: cluster cannot be used from the forecast command, whose process is the Spark "
            "driver: remove the setting (client mode) and run the command on a machine that reaches the cluster (an "
            "edge node or a notebook's driver)."
        )
    if duckdb_only:
        raise ConfigError(
            f"{' and '.join(duckdb_only)} {'is' if len(duckdb_only) == 1 else 'are'} applied by the DuckDB engine "
            "only: prepare the Spark table accordingly (leave those rows out, multiply the amounts, one row per "
            "order, timestamps in UTC) and remove the setting, or run with --engine duckdb."
        )


def check_output_shared(config: RunConfig) -> None:
    """Refuse, before Spark starts, a cluster run whose executors would write customers.parquet to a path only the
    driver sees: with a non-local master, ``spark.output`` must be a URI of storage every node shares (``hdfs://``,
    ``s3a://``, ``abfss://``, ``gs://``, or ``file://`` for a mount every node has). Otherwise the executors write
    their parts on their own disks and the run folder gets an empty customers.parquet."""
    master = spark_master(config.spark)
    if master.startswith("local"):
        return
    output = config.spark.output
    if output is None or not URI_SCHEME.match(output):
        where = f"spark.output is {output!r}" if output else "spark.output is not set"
        raise ConfigError(
            f"With {spark_where(config.spark)} the executors write customers.parquet, but {where}, a path only this "
            "machine sees. Set spark.output to storage every node shares (hdfs://..., s3a://..., abfss://..., or "
            "file:///... for a mount every node has), or run with a local master."
        )


def _run(
    config: RunConfig,
    as_of: dt.date | None,
    output: str | Path | None,
    say: Progress,
    spark: SparkSession | None,
    force: bool,
    log_lines: list[str],
) -> SparkRunResult:
    """The Spark run's steps in order: refuse what only DuckDB applies and an output the executors cannot share,
    start Spark, read and check the log, summarise, fit, score, write and publish; each step's figures go to the
    manifest's timings."""
    refuse_duckdb_only_settings(config)
    check_output_shared(config)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    spark, log, quality = start_and_read(config, say, spark)
    timings["ingest"] = time.perf_counter() - started
    as_of = _checked_as_of(config, as_of, quality)
    backtest_result, backtest_notes = None, []
    if config.backtest is not None:
        step = time.perf_counter()
        with collected_warnings() as backtest_notes:
            backtest_result = backtest_for_run(config, SparkLog.of(log, config), as_of, say)
        timings["backtest"] = time.perf_counter() - step
    step = time.perf_counter()
    result = _forecast(config, log, as_of, say)
    timings["forecast"] = time.perf_counter() - step
    messages = [*quality.warnings, *backtest_notes, *result.warnings]
    if backtest_result is not None:
        messages.extend(f"backtest: {message}" for message in backtest_result.warnings)

    try:
        output_path = Path(output) if output else run_folder(config.output, as_of)
        models_path = Path(config.models_dir) / as_of.isoformat()
        with (
            month_lock(output_path.resolve().parent, models_path.resolve().parent, as_of_name=as_of.isoformat()),
            atomic_folders(output_path, models_path) as (staging, models_staging),
        ):
            _check_spark_target(output_path, config, force)
            say("Comparing with the previous run")
            step = time.perf_counter()
            changes_of = functools.partial(_changes_since, spark, config, result.scored)
            models = models_record(result.purchases, result.spend)
            previous_run, drift, drift_warnings = drift_since_previous(config, as_of, models, output_path, changes_of)
            messages.extend(drift_warnings)
            timings["drift"] = time.perf_counter() - step
            say(f"Writing outputs to {output_path}")
            step = time.perf_counter()
            _write_models(staging, result, as_of)
            copy_models(staging, models_staging)
            customers_path = _write_tables(config, as_of, result, staging, messages)
            if backtest_result is not None:
                write_backtest(staging, backtest_result)
            final_customers_path = customers_path.replace(str(staging), str(output_path.resolve()))
            timings["write"] = time.perf_counter() - step
            timings["total"] = time.perf_counter() - started
            document = _manifest(config, as_of, quality, result, final_customers_path, models_path, messages)
            document.update(previous_run=previous_run, drift=drift)
            if backtest_result is not None:
                document["backtest"] = backtest_record(backtest_result)
            document["models"].update(run_copy=RUN_MODELS, sha256=run_models_sha256(staging))
            document["versions"] = {**library_versions(), "pyspark": spark.version}
            write_run_log(staging, output_path, messages, log_lines)
            document["timings_seconds"] = timings
            write_json(staging / "manifest.json", document)
            say("Writing the report")
            build_report(staging, digest=result.digest)
    finally:
        result.release()
    return SparkRunResult(
        output=output_path,
        models=models_path,
        customers_path=final_customers_path,
        as_of=as_of,
        customers=result.customers,
        purchases=result.purchases,
        spend=result.spend,
        segments=result.segments,
        manifest=json.loads(json.dumps(document, default=str)),
        warnings=messages,
    )


def _changes_since(spark: SparkSession, config: RunConfig, current: SparkFrame, previous: RunFolder) -> CustomerChanges:
    """The drift's ``CustomerChanges`` between the previous run's customers (read by Spark) and this run's.

    Raises
    ------
    ArtifactError
        Spark cannot read the previous run's customers (missing, on storage the executors do not see, other
        columns): the run goes on without drift, as on DuckDB.
    """
    try:
        return changes_on_spark(config, previous_customers(spark, previous), current, list(config.segments.tiers))
    except Exception as exc:
        if not is_spark_error(exc):
            raise
        raise ArtifactError(f"Spark could not read its customers ({spark_error_line(exc, 300)}).") from None


def _checked_as_of(config: RunConfig, as_of: dt.date | None, quality: SparkQuality) -> dt.date:
    """The run's as_of: the one given, else the config's, else the end of the log's last complete calendar month
    (the DuckDB engine's default, ``forecast.batch.pipeline.default_as_of``); never before the log's first day.

    Raises
    ------
    DataError
        The log has no usable rows to default to, or as_of is before its first transaction.
    """
    if as_of is None:
        last = pd.Timestamp(quality.last_timestamp).date() if quality.last_timestamp else None
        as_of = config.as_of or (last_complete_month_end(last) if last is not None else None)
    if as_of is None:
        raise DataError("The transaction log has no usable rows, so there is no as_of date to default to.")
    if quality.first_timestamp is not None and as_of < pd.Timestamp(quality.first_timestamp).date():
        raise DataError(
            f"as_of {as_of} is before the first transaction ({quality.first_timestamp[:10]}). Choose a later --as-of."
        )
    return as_of


@dataclass
class _SparkForecast:
    """What a Spark run computed: the cached summary and scores (per customer, in Spark), the fits on the driver,
    and the small results brought back."""

    summary: SparkFrame
    scores: SparkFrame
    scored: SparkFrame
    customers: int
    purchases: PurchaseModel
    spend: GammaGamma
    lifespan_years: float
    segments: pd.DataFrame
    totals: dict[str, float | None]
    comparison: dict[str, Any]
    first_purchase: Any
    warnings: list[str]
    total_intervals: str
    digest: CustomerDigest
    selection: Selection | None = None

    def release(self) -> None:
        """Unpersist the cached summary and scores."""
        self.summary.unpersist()
        self.scores.unpersist()


def _forecast(config: RunConfig, log: SparkFrame, as_of: dt.date, say: Progress) -> _SparkForecast:
    """Summarise on Spark, fit on the driver, score and tier on Spark, and total per segment and overall."""
    from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

    segment_columns = list(config.data.segment_columns)
    cached: list[SparkFrame] = []
    with collected_warnings() as caught, released_on_failure(cached):
        say(f"Summarising customers as of {as_of} on Spark")
        summary = summarize(log, as_of, config.days_per_unit, config.resolution, segment_columns).cache()
        cached.append(summary)
        customers = summary.count()
        if customers == 0:
            raise DataError(no_transactions_message(as_of))
        selection, config = choose_purchase_model(config, SparkLog.of(log, config), as_of, say)
        say(f"Fitting {config.purchase_model} and Gamma-Gamma on the compressed summary of {customers:,} customers")
        fit = fit_on_compressed(summary, config)
        purchases, spend = fit.purchases, fit.spend
        lifespan = config.heuristic.lifespan_years
        lifespan_years = observed_lifespan_years(summary, as_of) if lifespan == "auto" else float(lifespan)
        figures = interval_figures(config, fit)
        layout = FigureLayout.of(figures, config.margin) if figures is not None else None
        if figures is not None:
            say(f"Intervals from {config.interval_draws} parameter draws")
        say("Scoring customers on Spark")
        scoring = with_history_figures(summary, figures) if figures is not None else summary
        scores = score(scoring, fit, config, lifespan_years, layout).cache()
        cached.append(scores)
        tiered = assign_tiers(scores, config.segments.tiers)
        scored = tiered.select(*scored_output_columns(segment_columns))
        segmentations = ["segment", "rfm_group", "cohort", *segment_columns]
        per_segment, budget_sums, summed_figures = segment_sums(
            tiered, segmentations, list(config.segments.tiers), config.budget.p_alive_threshold,
            layout.figure_names() if layout is not None else None,
        )  # fmt: skip
        draws = draws_of_sums(figures, summed_figures, config) if figures is not None else None
        rows = fit.histories.rows
        p_alive = np.asarray(purchases.p_alive(rows[:, 0], rows[:, 1], rows[:, 2]), float)
        digest = CustomerDigest.of_histories(fit.histories, fit.spend_histories, p_alive, figures is not None)
        segments = segment_figures(config, per_segment, budget_sums, purchases, draws, lifespan_years)
        summed = {name: F.col(name) for name in {*TOTALLED_COLUMNS, *COMPARISON_SUMS} - {"value_per_year", "customers"}}
        summed["value_per_year"] = F.col("avg_purchase_value") * F.col("purchases_per_year")
        summed["customers"] = F.lit(1)
        totals_row = scored.agg(*[F.sum(column).alias(name) for name, column in summed.items()]).first()
        first_purchase = summary.agg(F.min("first_purchase")).first()
    sums = {name: float(totals_row[name]) if totals_row else 0.0 for name in summed}
    totals = totals_record(sums, segments)
    comparison = comparison_record(
        {name: sums[name] for name in COMPARISON_SUMS}, Valuation.from_config(config), lifespan_years
    )
    return _SparkForecast(
        summary, scores, scored, customers, purchases, spend, lifespan_years, segments, totals, comparison,
        first_purchase[0] if first_purchase else None, caught, interval_kind(draws), digest, selection,
    )  # fmt: skip


@contextmanager
def released_on_failure(cached: list[SparkFrame]) -> Iterator[None]:
    """Unpersist the frames in ``cached`` (those cached so far) when the block fails; on success the caller keeps
    them, and releases them when done (``_SparkForecast.release``)."""
    try:
        yield
    except BaseException:
        for frame in cached:
            frame.unpersist()
        raise


def _check_spark_target(output_path: Path, config: RunConfig, force: bool) -> None:
    """Refuse to replace a folder that is not a run (ever), or a run without ``force``.

    Raises
    ------
    OutputError
        The folder exists and is not a run, holds the config or the input, or is a run and ``force`` is not set.
    """
    keep = paths_never_replaced(config, _local_files(config.data.path))
    if check_replaceable(output_path, keep) is not None and not force:
        raise OutputError(
            f"{output_path} already holds a run. Pass --force to replace it (the Spark engine cannot tell whether "
            "it was made from the same input), or choose another --output."
        )


def _write_models(staging: Path, result: _SparkForecast, as_of: dt.date) -> None:
    """Write the fitted models' JSON artifacts into the run's own ``models/`` (``copy_models`` publishes them to
    ``models_dir/<as_of>``, as the DuckDB engine does)."""
    window = {"first_purchase": str(result.first_purchase), "as_of": as_of.isoformat()}
    (staging / RUN_MODELS).mkdir()
    for role, model in (("purchases", result.purchases), ("spend", result.spend)):
        write_json(staging / RUN_MODELS / MODEL_FILES[role], model_artifact(model, role, window))


def _write_tables(config: RunConfig, as_of: dt.date, result: _SparkForecast, staging: Path, messages: list[str]) -> str:
    """Write customers.parquet (by Spark), customers.csv when wanted and local, and segments.csv; return the
    Parquet's path. A reason not to write the CSV is added to ``messages``.

    Under ``spark.output`` every run writes its own folder, ``<as_of>/<run>/customers.parquet``, which only the
    manifest committed with the run folder points to: a run that fails, or is replaced, never touches the Parquet
    of the run that was published (shared storage has no atomic rename of a folder of parts)."""
    table = result.scored.orderBy("customer_id")
    if config.spark.output:
        run = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{os.getpid()}"
        customers_path = config.spark.output.rstrip("/") + f"/{as_of.isoformat()}/{run}/customers.parquet"
    else:
        customers_path = str(staging / "customers.parquet")
    table.write.mode("overwrite").parquet(customers_path)
    write_csv, skipped = csv_wanted(config.customers_csv, result.customers)
    if write_csv and not config.spark.output:
        parquet_to_csv(Path(customers_path) / "*.parquet", staging / "customers.csv")
    elif write_csv:
        messages.append("customers.csv was not written: the Spark output is on shared storage (spark.output).")
    if skipped:
        messages.append(skipped)
    frame_to_csv(result.segments, staging / "segments.csv")
    return customers_path


def _manifest(
    config: RunConfig,
    as_of: dt.date,
    quality: SparkQuality,
    result: _SparkForecast,
    customers_path: str,
    models_path: Path,
    messages: list[str],
) -> dict[str, Any]:
    """The Spark run's manifest.json without its versions and timings (the DuckDB run's keys where both have them)."""
    return {
        "as_of": as_of.isoformat(),
        "engine": "spark",
        "time_unit": config.time_unit,
        "horizon_months": config.horizon_months,
        "config": config.model_dump(mode="json"),
        "input": input_record(
            [config.data.path], quality, result.customers, _local_input_files_sha256(config.data.path)
        ),
        "customers_parquet": customers_path,
        "models": {"purchases": result.purchases.to_dict(), "spend": result.spend.to_dict(), "path": str(models_path)},
        "heuristic": {"lifespan_years": result.lifespan_years, "configured": config.heuristic.lifespan_years},
        "totals": result.totals,
        "comparison": result.comparison,
        "intervals": intervals_record(config.ci_level, result.total_intervals),
        "warnings": messages,
        "model_selection": result.selection.document() if result.selection is not None else None,
    }


def _local_files(path: str) -> list[Path]:
    """The local files of ``data.path``; none for a catalog table or a remote URI (read where they live)."""
    if path.startswith("table:") or "://" in path:
        return []
    return resolve_files(path)


def _local_input_files_sha256(path: str) -> str | None:
    """``input_files_sha256`` of local input files; None for tables and remote URIs (their identity is the path)."""
    files = _local_files(path)
    return input_files_sha256(files) if files else None
