"""The monthly batch: sequence the stages and write the outputs (the only module that touches files).

ingest -> rfm -> models -> clv -> segments -> outputs. Outputs are written to a temporary folder
beside the target and moved into place at the end, so a failed run leaves no half-written output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from forecast.artifacts import library_versions, model_artifact, write_json
from forecast.bulk import connect_duckdb, csv_wanted, write_customer_tables
from forecast.clv import assign_tiers, heuristic_clv, heuristic_inputs, observed_lifespan_years, score_customers
from forecast.config import RunConfig
from forecast.errors import ConfigError, DataError, ForecastWarning, OutputError
from forecast.estimators import GammaGamma, PurchaseModel, fit_models
from forecast.ingest import Transactions, fingerprint, read_transactions
from forecast.rfm import summarize
from forecast.segments import segment_table

Progress = Callable[[str], None]

CUSTOMER_COLUMNS = [
    "customer_id", "frequency", "recency", "T", "monetary_value", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_heuristic", "segment", "revenue", "avg_purchase_value", "purchases_per_year",
]  # fmt: skip
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Forecast:
    """Everything one forecast computed, before anything is written."""

    as_of: dt.date
    customers: pd.DataFrame
    segments: pd.DataFrame
    purchases: PurchaseModel
    spend: GammaGamma
    lifespan_years: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """A finished run: where its outputs are, and what it computed."""

    output: Path
    models: Path
    forecast: Forecast
    manifest: dict[str, Any]


def _quiet(progress: Progress | None) -> Progress:
    return progress if progress is not None else (lambda _message: None)


def default_as_of(transactions: Transactions) -> dt.date:
    """The last day with data."""
    last = transactions.quality.last_timestamp
    if last is None:
        raise DataError("The transaction log has no usable rows, so there is no as_of date to default to.")
    return pd.Timestamp(last).date()


def forecast(
    config: RunConfig, transactions: Transactions, as_of: dt.date, progress: Progress | None = None
) -> Forecast:
    """Summarise, fit, score and segment the customers as of a date (no file is written)."""
    say = _quiet(progress)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ForecastWarning)
        say(f"Summarising customers as of {as_of}")
        summary = summarize(
            transactions.connection, as_of, config.days_per_unit, config.resolution, transactions.segment_columns
        )
        say(f"Fitting {config.purchase_model} and Gamma-Gamma on {len(summary):,} customers")
        purchases, spend = fit_models(summary, config.purchase_model)
        say("Scoring customers")
        scores = score_customers(
            summary, purchases, spend, config.horizon_months, config.monthly_discount_rate, config.margin,
            config.days_per_unit,
        )  # fmt: skip
        lifespan = config.heuristic.lifespan_years
        lifespan_years = observed_lifespan_years(summary, as_of) if lifespan == "auto" else float(lifespan)
        inputs = heuristic_inputs(summary, config.days_per_unit)
        customers = pd.concat([summary, scores, inputs], axis=1)
        del scores, inputs
        customers["clv_heuristic"] = heuristic_clv(
            customers["avg_purchase_value"], customers["purchases_per_year"], lifespan_years, config.margin
        )
        customers["segment"] = assign_tiers(customers["clv"], config.segments.tiers)
        segments = segment_table(customers, ["segment", *transactions.segment_columns], lifespan_years, config.margin)
    messages = list(transactions.quality.warnings) + [str(w.message) for w in caught if w.category is ForecastWarning]
    return Forecast(as_of, customers, segments, purchases, spend, lifespan_years, messages)


def escape_for_spreadsheet(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula (= + - @) with an apostrophe."""
    escaped = frame.copy()
    for column in escaped.columns:
        if escaped[column].dtype == object or pd.api.types.is_string_dtype(escaped[column]):
            text = escaped[column].astype("string")
            risky = text.str.startswith(CSV_FORMULA_PREFIXES).fillna(False)
            escaped[column] = text.where(~risky, "'" + text)
    return escaped


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    On any failure the temporary folder is removed and ``target`` is left as it was.
    """
    target = target.resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {target}: {exc}. Choose a writable --output.") from None
    try:
        yield staging
        retired = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(
            f"Writing the outputs to {target} failed: {exc}. Free disk space or choose another --output."
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def customer_output(result: Forecast) -> pd.DataFrame:
    """The per-customer output table, in contract column order, with customer_id as a column."""
    table = result.customers.reset_index()
    extra = [c for c in table.columns if c not in CUSTOMER_COLUMNS and c not in ("first_purchase", "last_purchase")]
    return table[CUSTOMER_COLUMNS + extra]


def manifest(
    config: RunConfig, result: Forecast, transactions: Transactions, timings: dict[str, float], models_path: Path
) -> dict[str, Any]:
    """The run's record: config, as_of, input fingerprint, models, versions, timings, warnings."""
    quality = transactions.quality
    return {
        "as_of": result.as_of.isoformat(),
        "time_unit": config.time_unit,
        "horizon_months": config.horizon_months,
        "config": config.model_dump(mode="json"),
        "input": {
            "paths": [str(p) for p in transactions.files],
            "rows": quality.rows,
            "customers": len(result.customers),
            "customers_in_log": quality.customers,
            "first_timestamp": quality.first_timestamp,
            "last_timestamp": quality.last_timestamp,
            "sha256": fingerprint(transactions.files),
        },
        "models": {
            "purchases": result.purchases.to_dict(),
            "spend": result.spend.to_dict(),
            "path": str(models_path),
        },
        "heuristic": {"lifespan_years": result.lifespan_years, "configured": config.heuristic.lifespan_years},
        "totals": {
            "clv": float(result.customers["clv"].sum()),
            "clv_heuristic": float(result.customers["clv_heuristic"].sum()),
            "expected_purchases": float(result.customers["expected_purchases"].sum()),
        },
        "warnings": result.warnings,
        "versions": library_versions(),
        "timings_seconds": timings,
    }


def run(
    config: RunConfig, as_of: dt.date | None = None, output: str | Path | None = None, progress: Progress | None = None
) -> RunResult:
    """Run the monthly batch and write its outputs.

    Parameters
    ----------
    config
        The validated run configuration.
    as_of
        Observation end (inclusive); overrides the config; default the last day with data.
    output
        Output folder; overrides ``config.output``.
    progress
        Called with a short message before each step (the CLI shows it).

    Returns
    -------
    RunResult
    """
    if config.engine != "duckdb":
        raise ConfigError(
            f"pipeline.run runs the DuckDB engine; for engine: {config.engine} use forecast.spark.run "
            "(the CLI `forecast run` picks the engine from the config)."
        )
    say = _quiet(progress)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    say(f"Reading {config.data.path}")
    transactions = read_transactions(config.data, connect_duckdb(config.duckdb))
    timings["ingest"] = time.perf_counter() - started
    as_of = as_of or config.as_of or default_as_of(transactions)
    first = transactions.quality.first_timestamp
    if first is not None and as_of < pd.Timestamp(first).date():
        raise DataError(f"as_of {as_of} is before the first transaction ({first[:10]}). Choose a later --as-of.")
    step = time.perf_counter()
    result = forecast(config, transactions, as_of, progress)
    timings["forecast"] = time.perf_counter() - step

    output_path = Path(output or config.output)
    models_path = Path(config.models_dir) / as_of.isoformat()
    window = {"first_purchase": str(result.customers["first_purchase"].min()), "as_of": as_of.isoformat()}
    say(f"Writing outputs to {output_path}")
    step = time.perf_counter()
    with atomic_folder(models_path) as staging:
        write_json(staging / "purchases.json", model_artifact(result.purchases, "purchases", window))
        write_json(staging / "spend.json", model_artifact(result.spend, "spend", window))
    with atomic_folder(output_path) as staging:
        # The contract's column order, taken from an empty table so that no full copy is made here.
        columns = list(customer_output(replace(result, customers=result.customers.iloc[:0])).columns)
        write_csv, skipped = csv_wanted(config.customers_csv, len(result.customers))
        if skipped:
            result.warnings.append(skipped)
        write_customer_tables(result.customers, columns, staging, csv=write_csv)
        escape_for_spreadsheet(result.segments).to_csv(staging / "segments.csv", index=False)
        timings["write"] = time.perf_counter() - step
        timings["total"] = time.perf_counter() - started
        document = manifest(config, result, transactions, timings, models_path)
        write_json(staging / "manifest.json", document)
    return RunResult(output_path, models_path, result, json.loads(json.dumps(document, default=str)))
