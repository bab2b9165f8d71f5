"""The Python API for notebooks: a log in, a summary, a scored customer table or a published run out.

Each function does what one step of ``forecast run`` does, with the same code and the same numbers; the settings
are the config's keys as keyword arguments, validated as the config is. ``forecast`` re-exports these names.
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from forecast.config import RunConfig, load_config

if TYPE_CHECKING:
    from forecast.batch.pipeline import RunResult
    from forecast.config import TimeUnit

#: How a DataFrame log is named in a config built here (``data.path`` is required and names the log in messages).
FRAME_PATH = "the DataFrame"


def summarize(
    transactions: pd.DataFrame | str | Path,
    *,
    customer_id: str = "customer_id",
    timestamp: str = "timestamp",
    amount: str = "amount",
    as_of: dt.date | str | None = None,
    time_unit: TimeUnit = "week",
    resolution: str = "day",
    **data: Any,
) -> pd.DataFrame:
    """The per-customer summary of a transaction log, as ``forecast run`` builds it.

    Parameters
    ----------
    transactions
        The log: a pandas DataFrame, or the path of a CSV or Parquet file, folder or glob.
    customer_id, timestamp, amount
        Its columns (``data.customer_id``, ``data.timestamp``, ``data.amount``).
    as_of
        Observation end (inclusive); default the end of the last complete calendar month in the log.
    time_unit
        Unit of recency and T: ``"day"``, ``"week"`` or ``"month"``.
    resolution
        ``"day"`` (purchases of a day are one purchase) or ``"exact"``.
    **data
        Any other key of the config's ``data`` section: ``quantity``, ``exclude``, ``negative_amounts``,
        ``timestamp_format``, ``segment_columns``, ``invalid_rows`` ...

    Returns
    -------
    pandas.DataFrame
        Indexed by customer_id: frequency, recency, T, monetary_value, revenue, first_purchase, last_purchase
        and the segment columns.

    Raises
    ------
    forecast.errors.ConfigError
        A setting is unknown or invalid.
    forecast.errors.DataError
        The log cannot be used (the message says where and what to do).
    """
    from forecast.batch.pipeline import default_as_of
    from forecast.data.ingest import read_transactions
    from forecast.data.summary import summarize as summarize_log

    path = FRAME_PATH if isinstance(transactions, pd.DataFrame) else str(transactions)
    config = _config(
        {"path": path, "customer_id": customer_id, "timestamp": timestamp, "amount": amount, **data},
        as_of=as_of, time_unit=time_unit, resolution=resolution,
    )  # fmt: skip
    frame = transactions if isinstance(transactions, pd.DataFrame) else None
    read = read_transactions(config.data, frame=frame)
    with closing(read.connection):
        day = config.as_of or default_as_of(read)
        return summarize_log(read.connection, day, config.days_per_unit, config.resolution, read.segment_columns)


def score(
    summary: pd.DataFrame,
    *,
    as_of: dt.date | str | None = None,
    segment_columns: list[str] | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """Fit the models on a summary and score its customers: the table ``forecast run`` writes as customers.parquet.

    Parameters
    ----------
    summary
        A summary from ``summarize`` (or any frame indexed by customer_id with its columns frequency, recency,
        T, monetary_value, revenue, first_purchase and last_purchase).
    as_of
        The summary's observation end, for ``heuristic={"lifespan_years": "auto"}``; default its last purchase day.
    segment_columns
        Columns of the summary that are segments of their own (they get rows in the segment table).
    **settings
        Any top-level key of the run config except ``data``: ``purchase_model`` (default ``bgnbd`` here, as ``auto``
        needs the log), ``time_unit``, ``horizon_months``,
        ``monthly_discount_rate``, ``margin``, ``interval_draws``, ``ci_level``, ``seed``, ``heuristic``,
        ``segments``, ``budget`` ... (``time_unit`` must be the summary's).

    Returns
    -------
    pandas.DataFrame
        Indexed by customer_id, the columns of customers.parquet in its order (README, "Outputs").
    """
    from forecast.batch.pipeline import customer_columns, score_summary
    from forecast.errors import ConfigError

    # A summary cannot be validated (that needs the purchases before as_of): score's model defaults to BG/NBD.
    settings = {"purchase_model": "bgnbd", **settings}
    if settings["purchase_model"] == "auto":
        raise ConfigError(
            "purchase_model auto chooses by refitting the models on the transaction log before as_of, which a summary "
            "does not hold: pass purchase_model='bgnbd', 'mbgnbd' or 'pareto', or use forecast.run on the log."
        )
    config = _config({"path": FRAME_PATH}, as_of=as_of, **settings)
    day = config.as_of or pd.Timestamp(summary["last_purchase"].max()).date()
    customers = score_summary(config, summary, day, list(segment_columns or [])).customers
    columns = [c for c in customer_columns(customers) if c != customers.index.name]
    return customers[columns]


def run(config: RunConfig | str | Path, *, as_of: dt.date | str | None = None, force: bool = False) -> RunResult:
    """Run the monthly job as ``forecast run`` does and publish its run folder and models (DuckDB engine).

    Parameters
    ----------
    config
        A ``RunConfig``, or the path of a YAML config (relative data paths are then taken from its folder).
    as_of
        Observation end; default the config's ``as_of``, else the end of the last complete month in the log.
    force
        Replace an earlier run of the same month made from different input (``--force``).

    Returns
    -------
    forecast.batch.pipeline.RunResult
        ``output`` (the run folder), ``models``, ``forecast`` (the customers and segments tables) and ``manifest``.
    """
    from forecast.batch.pipeline import run as run_batch

    settings = config if isinstance(config, RunConfig) else load_config(config)
    day = dt.date.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    return run_batch(settings, day, force=force)


def _config(data: dict[str, Any], **settings: Any) -> RunConfig:
    """A RunConfig from keyword arguments, validated as a YAML config is (a ConfigError names a bad key)."""
    from pydantic import ValidationError

    from forecast.config import describe_validation_error
    from forecast.errors import ConfigError

    document = {"data": data, **{key: value for key, value in settings.items() if value is not None}}
    try:
        return RunConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"Invalid settings: {describe_validation_error(exc)}") from None
