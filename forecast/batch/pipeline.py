"""The monthly batch: sequence the stages and write the run folder.

ingest -> summary -> models -> clv -> segments and budget -> drift -> outputs and report. Outputs are written
to a temporary folder beside the target and moved into place at the end, so a failed run leaves no half-written
output (docs/operations.md, "Folder layout and atomic writes").
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pydantic import ValidationError

from forecast.batch.drift import (
    CustomerChanges,
    customer_changes,
    drift_columns,
    drift_document,
    drift_segmentations,
)
from forecast.batch.outputs import csv_wanted, frame_to_csv, write_customer_tables
from forecast.batch.publish import atomic_folder, atomic_folders, month_lock, sync_to_disk
from forecast.batch.registry import (
    check_overwrite,
    check_runs_apart_from_models,
    find_previous_run,
    last_complete_month_end,
    paths_never_replaced,
    run_folder,
)
from forecast.config import BudgetConfig, PenalizerConfig, RunConfig, describe_validation_error
from forecast.data.fingerprints import file_sha256, input_files_sha256, rows_up_to_as_of_fingerprint
from forecast.data.ingest import (
    Transactions,
    check_input_unchanged,
    count_after_as_of,
    count_customers,
    duckdb_limits,
    read_log,
)
from forecast.data.summary import extreme_customers_message, summarize
from forecast.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    FitError,
    ForecastWarning,
    OutputError,
    collected_warnings,
)
from forecast.evaluation.backtest import (
    BacktestResult,
    resolve_split,
    run_backtest,
)
from forecast.evaluation.log_queries import DuckDBLog, LogQueries
from forecast.evaluation.selection import Selection, select_purchase_model
from forecast.models import GammaGamma, PurchaseModel, fit_purchase_model, fit_spend_model, mean_amount_per_purchase
from forecast.models.artifacts import library_versions, model_artifact, write_json
from forecast.report.build import build_report
from forecast.report.digest import CustomerDigest
from forecast.report.run_folder import (
    BACKTEST_CUSTOMERS_CSV,
    BACKTEST_JSON,
    MANIFEST,
    MODEL_FILES,
    PLOT_FILES,
    RUN_LOG,
    RUN_MODELS,
    SEGMENTS_CSV,
    RunFolder,
    read_models,
    read_run,
    read_run_customers,
)
from forecast.value.budget import (
    budget_columns_of_sums,
    customers_at_risk,
    decision_columns,
    segment_budget_sums,
    verdict,
)
from forecast.value.clv import (
    Histories,
    SpendHistories,
    assign_tiers,
    discounted_purchases_if_alive,
    heuristic_clv,
    heuristic_inputs,
    observed_lifespan_years,
    score_customers,
    score_lifetime,
)
from forecast.value.comparison import (
    comparison_record,
    comparison_sums,
    matched_segment_columns,
    matched_span_months,
)
from forecast.value.costs import NET_COLUMNS, net_columns, net_segment_columns
from forecast.value.segments import (
    ALL_SEGMENTATION,
    RfmCuts,
    SegmentCells,
    cohorts,
    customer_totals,
    rfm_groups,
    table_of_totals,
)
from forecast.value.uncertainty import ClvDraws, clv_draws, has_covariance
from forecast.value.valuation import Valuation

Progress = Callable[[str], None]

CUSTOMER_COLUMNS = [
    "customer_id", "frequency", "recency", "T", "monetary_value", "p_alive", "expected_purchases",
    "expected_spend", "clv", "clv_lower", "clv_upper", "clv_heuristic", "segment", "revenue", "avg_purchase_value",
    "purchases_per_year", "clv_lifetime", "clv_matched", *NET_COLUMNS,
]  # fmt: skip
log = logging.getLogger("forecast")
#: The per-customer columns whose sums are the manifest's totals (``totals_record``).
TOTALLED_COLUMNS = ("clv", "clv_heuristic", "clv_lifetime", "clv_net", "clv_heuristic_net", "expected_purchases")


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
    #: What the totals' intervals cover: "predictive" (parameters and the customers' own randomness),
    #: "parameters" (when the customers' spread is undefined), or "none" (no intervals).
    total_intervals: str = "none"
    #: What the report draws of the customers, found from their histories while the forecast had them.
    digest: CustomerDigest | None = None


@dataclass
class RunResult:
    """A finished run: where its outputs are, and what it computed."""

    output: Path
    models: Path
    forecast: Forecast
    manifest: dict[str, Any]


def _quiet(progress: Progress | None) -> Progress:
    return progress if progress is not None else (lambda _message: None)


def logged(progress: Progress | None) -> Progress:
    """A progress callback that also writes each message to the run's log (run.log)."""

    def say(message: str) -> None:
        log.info(message)
        _quiet(progress)(message)

    return say


def default_as_of(transactions: Transactions) -> dt.date:
    """The end of the last complete calendar month in the data (the month the log ends in, if on its last day).

    The data end at the last usable transaction, unless that is a lone row dated more than a year after every other
    one (``Transactions.data_end``): such a row never moves as_of; it is counted as after as_of instead.
    """
    last = transactions.data_end
    if last is None:
        raise DataError("The transaction log has no usable rows, so there is no as_of date to default to.")
    return last_complete_month_end(last)


def forecast(
    config: RunConfig,
    transactions: Transactions,
    as_of: dt.date,
    progress: Progress | None = None,
) -> Forecast:
    """Summarise, fit, score and segment the customers as of a date (no file is written).

    Returns
    -------
    Forecast
        ``customers`` indexed by customer_id (the summary, scores, heuristic, value tier, RFM group and CLV
        interval of every customer), ``segments`` the segment table with its budget columns; its ``warnings``
        are the read's and the forecast's.
    """
    say = _quiet(progress)
    with collected_warnings() as caught:
        say(f"Summarising customers as of {as_of}")
        summary = summarize(
            transactions.connection, as_of, config.days_per_unit, config.resolution, transactions.segment_columns,
            rows_at_most=transactions.quality.rows_used,
            id_quantiles=transactions.id_quantiles if transactions.ends_by(as_of) else None,
        )  # fmt: skip
        result = score_summary(config, summary, as_of, transactions.segment_columns, progress)
    return dataclasses.replace(result, warnings=list(transactions.quality.warnings) + caught)


def score_summary(
    config: RunConfig,
    summary: pd.DataFrame,
    as_of: dt.date,
    segment_columns: list[str],
    progress: Progress | None = None,
) -> Forecast:
    """Fit, score and segment the customers of a summary (``summarize``'s), as ``forecast`` does for a run.

    Warnings (ForecastWarning) are issued, not collected: ``forecast`` collects them for the run's messages.
    """
    say = _quiet(progress)
    valuation = Valuation.from_config(config)
    extreme = extreme_customers_message(summary)
    if extreme is not None:
        warnings.warn(extreme, ForecastWarning, stacklevel=2)
    say(f"Fitting {config.purchase_model} and Gamma-Gamma on {len(summary):,} customers")
    try:
        histories, spend_histories, purchases, spend = fit_on_histories(
            config.purchase_model, summary, config.penalizer
        )
    except FitError as exc:
        if extreme is None:
            raise
        raise FitError(f"{exc} {extreme}") from None
    say("Scoring customers")
    lifespan = config.heuristic.lifespan_years
    lifespan_years = observed_lifespan_years(summary, as_of) if lifespan == "auto" else float(lifespan)
    columns = scored_columns(config, valuation, summary, purchases, spend, histories, spend_histories, lifespan_years)
    columns["segment"] = assign_tiers(pd.Series(columns["clv"], index=summary.index), config.segments.tiers).array
    customers = pd.DataFrame(columns, index=summary.index, copy=False)
    segmentations = ["segment", "rfm_group", "cohort", *segment_columns]
    # The customers' cells (their segment in every segmentation) are found once, for the intervals, the
    # segment table and the budget figures.
    cells = SegmentCells.of(customers, [None, *segmentations])
    draws = None
    if intervals_wanted(config, purchases, spend):
        say(f"Intervals from {config.interval_draws} parameter draws")
        try:
            draws = clv_draws(
                summary, purchases, spend, valuation, cells, config.ci_level,
                config.interval_draws, config.seed,
                histories=histories, spend_histories=spend_histories,
                at_risk=customers_at_risk(customers, config.budget.p_alive_threshold),
            )  # fmt: skip
        except FitError as exc:
            warnings.warn(f"{INTERVALS_LEFT_EMPTY} {exc}", ForecastWarning, stacklevel=2)
    p_alive = np.asarray(columns["p_alive"])
    digest = CustomerDigest.of_scored_histories(histories, spend_histories, p_alive, draws is not None)
    del histories, spend_histories  # large with millions of customers, and not needed by the tables below
    for name in ("clv_lower", "clv_upper"):
        columns[name] = draws.customers[name].array if draws is not None else np.full(len(summary), np.nan)
    customers = pd.DataFrame(columns, index=summary.index, copy=False)
    totals = customer_totals(customers, segmentations, cells)
    budget_sums = segment_budget_sums(customers, cells, config.budget.p_alive_threshold)
    segments = segment_figures(config, totals, budget_sums, purchases, draws, lifespan_years)
    kind = interval_kind(draws)
    return Forecast(as_of, customers, segments, purchases, spend, lifespan_years, total_intervals=kind, digest=digest)


#: The start of the warning when a run's intervals cannot be computed (the reason follows).
INTERVALS_LEFT_EMPTY = "The CLV intervals are left empty:"


def intervals_wanted(config: RunConfig, purchases: PurchaseModel, spend: GammaGamma) -> bool:
    """Whether a run draws intervals: ``interval_draws`` above 0 and both fits with a parameter covariance (without
    one, estimators warned and the run goes on without intervals)."""
    return config.interval_draws > 0 and has_covariance(purchases) and has_covariance(spend)


def interval_kind(draws: ClvDraws | None) -> str:
    """What the totals' intervals cover (``Forecast.total_intervals``)."""
    return "none" if draws is None else "predictive" if draws.predictive else "parameters"


def intervals_record(ci_level: float, kind: str) -> dict[str, Any]:
    """The manifest's ``intervals``: the level, what the totals' and the customers' intervals cover."""
    return {"level": ci_level, "totals": kind, "customers": "none" if kind == "none" else "parameters"}


def segment_figures(
    config: RunConfig,
    totals: pd.DataFrame,
    budget_sums: pd.DataFrame,
    purchases: PurchaseModel,
    draws: ClvDraws | None,
    lifespan_years: float,
) -> pd.DataFrame:
    """The segment table with its matched, net, budget and decision columns, from the per-segment totals
    (``customer_totals``) and budget sums (``segment_budget_sums``) that an engine added up: the same code for both
    engines. Without ``draws`` the interval columns are empty."""
    valuation = Valuation.from_config(config)
    segments = table_of_totals(totals, lifespan_years, config.margin)
    segments = matched_segment_columns(segments, valuation, lifespan_years)
    segments = net_segment_columns(segments, valuation, lifespan_years)
    target = config.budget.target_ltv_to_cac
    segments = budget_columns_of_sums(segments, budget_sums, purchases, draws, valuation, target)
    return decision_columns(segments, purchases, valuation, config.budget.cac, target)


def fit_on_histories(
    purchase_model: str, summary: pd.DataFrame, penalizer: PenalizerConfig | None = None
) -> tuple[Histories, SpendHistories, PurchaseModel, GammaGamma]:
    """Find every customer's unique histories once, and fit the purchase and spend models on them.

    The fits take the histories' rows and counts, and the histories index the model evaluations of the scores
    and intervals. The spend histories are found on a second thread while the purchase histories are found and
    the purchase model is fitted on them: pandas' factorize, numpy's counts and the likelihood's array arithmetic
    let go of the GIL. The models fall back as ``forecast.models.catalog`` says (the NBD without visible dropout;
    Gamma-Gamma with shrinkage, then the mean spend), with a ForecastWarning.
    """
    penalizer = penalizer if penalizer is not None else PenalizerConfig()
    with ThreadPoolExecutor(max_workers=1) as second_thread:
        found_spend_histories = second_thread.submit(SpendHistories.from_summary, summary)
        histories = Histories.from_summary(summary)
        purchases = fit_purchase_model(purchase_model, histories, penalizer.purchases)
        spend_histories = found_spend_histories.result()
    spend = fit_spend_model(spend_histories, penalizer.spend, mean_amount_per_purchase(summary))
    return histories, spend_histories, purchases, spend


def scored_columns(
    config: RunConfig,
    valuation: Valuation,
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    histories: Histories,
    spend_histories: SpendHistories,
    lifespan_years: float,
    rfm_cuts: RfmCuts | None = None,
) -> dict[str, Any]:
    """The per-customer columns but the value tier: the summary's, the scores, the heuristic's inputs and CLV, the
    lifetime and matched-span CLV (``score_lifetime``), the net columns, the RFM group and the cohort, each as the
    column's own array, so that the customer table is assembled once without copying the summary.

    Each customer's columns depend on its own row, the models and settings only, but for the RFM group's cuts
    (the summary's own unless ``rfm_cuts`` are given): both engines score with this function, the Spark engine
    batch by batch on its executors. The lifetime sums per unique (x, T) pair and the RFM groups need no scores:
    they are found on a second thread meanwhile (the models' special functions, numpy's quantiles and comparisons
    let go of the GIL).
    """
    spans = (config.horizon_months, matched_span_months(lifespan_years))
    with ThreadPoolExecutor(max_workers=1) as second_thread:
        found_sums = second_thread.submit(
            discounted_purchases_if_alive, purchases, histories.pairs, valuation, spans[::-1]
        )
        found_rfm_groups = second_thread.submit(rfm_groups, summary, rfm_cuts)
        scores = score_customers(summary, purchases, spend, valuation, histories, spend_histories)
        inputs = heuristic_inputs(summary, config.days_per_unit)
        columns = {name: frame[name].array for frame in (summary, scores, inputs) for name in frame.columns}
        columns["clv_heuristic"] = heuristic_clv(
            inputs["avg_purchase_value"].to_numpy(), inputs["purchases_per_year"].to_numpy(), lifespan_years,
            config.margin,
        )  # fmt: skip
        over_spans, lifetime_sums = found_sums.result()
        lifetime = score_lifetime(scores, histories, valuation, (over_spans, lifetime_sums))
        columns.update({name: lifetime[name].array for name in lifetime.columns})
        columns.update(
            net_columns(columns, histories, purchases, valuation, spans, over_spans[:, ::-1], lifespan_years)
        )
        columns["rfm_group"] = found_rfm_groups.result().array
        columns["cohort"] = cohorts(summary["first_purchase"], config.budget.cohort).array
    return columns


def customer_columns(customers: pd.DataFrame) -> list[str]:
    """The per-customer output columns in contract order: customer_id, the contract's, then any others
    (segment columns of the log, rfm_group), without first_purchase and last_purchase."""
    names = [*customers.index.names, *customers.columns]
    extra = [c for c in names if c not in CUSTOMER_COLUMNS and c not in ("first_purchase", "last_purchase")]
    return CUSTOMER_COLUMNS + extra


class _LogQuality(Protocol):
    """What both engines' data-quality records say about the log (``DataQuality``, ``SparkQuality``)."""

    @property
    def rows(self) -> int: ...
    @property
    def customers(self) -> int | None: ...
    @property
    def first_timestamp(self) -> str | None: ...
    @property
    def last_timestamp(self) -> str | None: ...


def input_record(paths: list[str], quality: _LogQuality, customers: int, sha256: str | None) -> dict[str, Any]:
    """The manifest's ``input`` section (both engines): what was read, and the customers forecast."""
    return {
        "paths": paths,
        "rows": quality.rows,
        "customers": customers,
        "customers_in_log": quality.customers,
        "first_timestamp": quality.first_timestamp,
        "last_timestamp": quality.last_timestamp,
        "sha256": sha256,
    }


def manifest(
    config: RunConfig,
    result: Forecast,
    transactions: Transactions,
    timings: dict[str, float],
    models_path: Path,
    *,
    input_used: dict[str, Any],
    models_sha256: dict[str, str],
    backtest_result: BacktestResult | None,
    previous_run: dict[str, Any] | None,
    drift: dict[str, Any] | None,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """The run's record, manifest.json (docs/operations.md, "manifest.json").

    Parameters
    ----------
    input_used
        ``rows_up_to_as_of_fingerprint``: the rows the run used; the input files' SHA-256 is taken here.
    models_sha256
        ``run_models_sha256`` of the run's own copy of the models.
    backtest_result, previous_run, drift
        The backtest run before the forecast, and the previous run compared with and the drift
        (``drift_since_previous``); each None when there is none.
    selection
        The purchase model's internal validation (``choose_purchase_model``), recorded as ``model_selection``.
    """
    quality = transactions.quality
    files = [str(p) for p in transactions.files]
    document = {
        "as_of": result.as_of.isoformat(),
        "time_unit": config.time_unit,
        "horizon_months": config.horizon_months,
        "config": config.model_dump(mode="json"),
        "input": {
            **input_record(files, quality, len(result.customers), input_files_sha256(transactions.files)),
            **input_used,
        },
        "models": {
            "purchases": result.purchases.to_dict(),
            "spend": result.spend.to_dict(),
            "path": str(models_path),
            "run_copy": RUN_MODELS,
            "sha256": models_sha256,
        },
        "heuristic": {"lifespan_years": result.lifespan_years, "configured": config.heuristic.lifespan_years},
        "totals": totals_record(
            {name: float(result.customers[name].sum()) for name in TOTALLED_COLUMNS}, result.segments
        ),
        "comparison": comparison_record(
            comparison_sums(result.customers), Valuation.from_config(config), result.lifespan_years
        ),
        "intervals": intervals_record(config.ci_level, result.total_intervals),
        "warnings": result.warnings,
        "data_quality": dataclasses.asdict(quality),
        "versions": library_versions(),
        "timings_seconds": timings,
        "previous_run": previous_run,
        "drift": drift,
    }
    if backtest_result is not None:
        document["backtest"] = backtest_record(backtest_result)
    document["model_selection"] = selection.document() if selection is not None else None
    return document


class _LogLines(logging.Handler):
    """Collect the run's log records as text lines (written to run.log inside the staged run folder)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.output: Path | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def run_log() -> Iterator[_LogLines]:
    """Capture the ``forecast`` logger's INFO records for the duration of one run."""
    handler = _LogLines()
    level = log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def drift_since_previous(
    config: RunConfig, as_of: dt.date, models: dict[str, Any], output_path: Path, changes_of: ChangesOf
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str]]:
    """Compare a forecast with the latest earlier run in the same runs root (the output folder's parent).

    Parameters
    ----------
    config, as_of
        The run's config and as_of.
    models
        The run's fitted models, ``{"purchases": to_dict(), "spend": to_dict()}``.
    output_path
        The run's folder (its parent is the runs root searched).
    changes_of
        Adds up the customers of the previous run (its folder, read without the customer table) and of this one
        (``forecast.batch.drift.CustomerChanges``): each engine where its customers are. Raises ArtifactError when
        the previous run's customers cannot be read.

    Returns
    -------
    (previous_run, drift, warnings)
        previous_run: as_of, path and input fingerprint of the run compared with (None if there is none);
        drift: ``forecast.batch.drift.drift_document`` (None without a readable previous run).
    """
    previous_path = find_previous_run(output_path.parent, as_of, exclude=output_path)
    if previous_path is None:
        return None, None, []
    try:
        previous = read_run(previous_path, with_customers=False)
        previous_purchases, previous_spend = read_models(previous)
    except ArtifactError as exc:
        return {"as_of": None, "path": str(previous_path)}, None, [unreadable_previous_run(previous_path, exc)]
    previous_input = previous.manifest.get("input", {})
    previous_data = previous.manifest.get("config", {}).get("data", {}).get("path")
    if previous_data != config.data.path:
        message = (
            f"The previous run {previous_path} was made from other data (data.path {previous_data!r}, now "
            f"{config.data.path!r}), so no drift was computed. Give each data set its own output folder."
        )
        return {"as_of": previous.as_of.isoformat(), "path": str(previous_path)}, None, [message]
    info = {
        "as_of": previous.as_of.isoformat(),
        "path": str(previous_path),
        "as_of_sha256": previous_input.get("as_of_sha256"),
        "rows_up_to_as_of": previous_input.get("rows_up_to_as_of"),
    }
    try:
        changes = changes_of(previous)
    except ArtifactError as exc:
        return info, None, [unreadable_previous_run(previous_path, exc)]
    drift = drift_document(
        {
            "as_of": previous.as_of.isoformat(),
            "models": {"purchases": previous_purchases.to_dict(), "spend": previous_spend.to_dict()},
        },
        {"as_of": as_of.isoformat(), "models": models},
        changes,
        list(config.segments.tiers),
        config.drift,
    )
    return info, drift, list(drift["warnings"])


def unreadable_previous_run(path: Path, error: ArtifactError) -> str:
    """The warning when the previous run (its manifest, models or customers) cannot be read: no drift."""
    return f"The previous run {path} could not be read, so no drift was computed: {error}"


def changes_in_memory(config: RunConfig, customers: pd.DataFrame, previous: RunFolder) -> CustomerChanges:
    """The drift's ``CustomerChanges`` of the DuckDB engine's customers (in memory) and the previous run's (read
    from its customers.parquet)."""
    segmentations = drift_segmentations(config)
    previous_customers = read_run_customers(previous.path, previous.manifest, drift_columns(segmentations))
    return customer_changes(previous_customers, customers, config.drift.lapsed_p_alive, segmentations)


def models_record(purchases: PurchaseModel, spend: GammaGamma) -> dict[str, Any]:
    """The fitted models as drift compares them: ``{"purchases": to_dict(), "spend": to_dict()}``."""
    return {"purchases": purchases.to_dict(), "spend": spend.to_dict()}


#: Adds up two runs' customers for the drift (``drift_since_previous``): the previous run's folder -> the changes.
ChangesOf = Callable[[RunFolder], CustomerChanges]


def run(
    config: RunConfig,
    as_of: dt.date | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
    transactions: Transactions | None = None,
) -> RunResult:
    """Run the monthly batch and write its outputs.

    Parameters
    ----------
    config
        The validated run configuration.
    as_of
        Observation end (inclusive); overrides the config; default the end of the last complete
        calendar month in the data.
    output
        Exactly this output folder; default ``<config.output>/<as_of YYYY-MM-DD>``.
    progress
        Called with a short message before each step (the CLI shows it).
    force
        Replace an existing output folder even if it holds a run made from different input.
    transactions
        The configured log, already read by ``read_log(config)`` (the caller closes its connection); ``None``
        reads it here and closes its DuckDB connection when done.

    Returns
    -------
    RunResult

    Raises
    ------
    OutputError
        The output folder holds a run of different input (without ``force``), or cannot be written.
    """
    if config.engine != "duckdb":
        raise ConfigError(
            f"pipeline.run runs the DuckDB engine; for engine: {config.engine} use forecast.engines.spark.run "
            "(the CLI `forecast run` picks the engine from the config)."
        )
    check_runs_apart_from_models(Path(output or config.output), Path(config.models_dir))
    steps = [f"Reading {config.data.path}"]

    def tracked(message: str) -> None:
        steps.append(message)
        _quiet(progress)(message)

    with run_log() as lines, ExitStack() as read_here:
        try:
            log.info("Reading %s", config.data.path)
            if transactions is None:
                _quiet(progress)(steps[0])
                transactions = read_log(config)
                # Closed here, as the caller closes its own: DuckDB removes its spill files when the connection
                # closes.
                read_here.enter_context(closing(transactions.connection))
            with duckdb_limits(config.duckdb, lambda: steps[-1]):
                return _run(config, as_of, output, tracked, force, lines, transactions)
        except Exception as exc:
            if lines.output is not None:
                log.error("The run failed: %s", exc)
                write_failure_log(lines.output, lines.lines)
            raise


def failure_log_path(output_path: Path) -> Path:
    """Where a failed run leaves its log: ``<output>.failed.log`` beside the run folder (a file, never a run)."""
    output_path = output_path.resolve()
    return output_path.parent / f"{output_path.name}.failed.log"


def write_failure_log(output_path: Path, lines: list[str]) -> None:
    """Keep the log of a failed run for the unattended case; best effort: on a full disk no empty or partial log is
    left behind."""
    path = failure_log_path(output_path)
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _run(
    config: RunConfig,
    as_of: dt.date | None,
    output: str | Path | None,
    progress: Progress | None,
    force: bool,
    lines: _LogLines,
    transactions: Transactions,
) -> RunResult:
    """The batch on a log already read: find as_of and the run folder, then run and publish under the month's lock.

    ``lines.output`` is set as soon as the run folder is known, so that a failure leaves its log beside it.
    """
    say = logged(progress)
    started = time.perf_counter() - transactions.read_seconds  # the total counts the reading too
    as_of = as_of or config.as_of or default_as_of(transactions)
    transactions = count_after_as_of(transactions, as_of)
    check_as_of_after_first_transaction(transactions, as_of)
    output_path = Path(output) if output else run_folder(config.output, as_of)
    lines.output = output_path
    models_path = Path(config.models_dir) / as_of.isoformat()
    with (
        month_lock(output_path.resolve().parent, models_path.resolve().parent, as_of_name=as_of.isoformat()),
        input_changes_named(transactions),
    ):
        return _run_and_publish(config, as_of, output_path, models_path, force, lines, transactions, say, started)


@contextmanager
def input_changes_named(transactions: Transactions) -> Iterator[None]:
    """Let a failure while the run reads the log again say that the log changed, when it did.

    DuckDB reads a Parquet log's files again for each query: a log rewritten mid-run otherwise surfaces as DuckDB's
    or Arrow's own error from whichever step read it (``check_input_unchanged`` raises the DataError instead).
    """
    try:
        yield
    except Exception:
        check_input_unchanged(transactions.identities)
        raise


def _run_and_publish(
    config: RunConfig,
    as_of: dt.date,
    output_path: Path,
    models_path: Path,
    force: bool,
    lines: _LogLines,
    transactions: Transactions,
    say: Progress,
    started: float,
) -> RunResult:
    """Under the month's lock: check the output folder, backtest, forecast, compare with the previous run, then
    write the run folder and the published models and commit them together, if the input is still the one read."""
    timings = {"ingest": transactions.read_seconds}
    step = time.perf_counter()
    input_used = fingerprint_and_check_output(config, transactions, as_of, output_path, force)
    timings["fingerprint"] = time.perf_counter() - step
    backtest_result = None
    backtest_notes: list[str] = []
    if config.backtest is not None:
        step = time.perf_counter()
        with collected_warnings() as backtest_notes:
            backtest_result = backtest_for_run(config, DuckDBLog.of(transactions.connection, config), as_of, say)
        timings["backtest"] = time.perf_counter() - step
    step = time.perf_counter()
    with collected_warnings() as selection_notes:
        selection, config = choose_purchase_model(config, DuckDBLog.of(transactions.connection, config), as_of, say)
    timings["model_selection"] = time.perf_counter() - step
    step = time.perf_counter()
    result = forecast(config, transactions, as_of, say)
    result.warnings.extend(backtest_notes + selection_notes)
    if backtest_result is not None:
        result.warnings.extend(f"backtest: {message}" for message in backtest_result.warnings)
    result.warnings.extend(as_of_after_last_transaction(transactions, as_of))
    timings["forecast"] = time.perf_counter() - step
    transactions = count_customers(transactions, len(result.customers))
    step = time.perf_counter()
    say("Comparing with the previous run")
    previous_run, drift, drift_warnings = drift_since_previous(
        config, as_of, models_record(result.purchases, result.spend), output_path,
        functools.partial(changes_in_memory, config, result.customers),
    )  # fmt: skip
    result.warnings.extend(drift_warnings)
    timings["drift"] = time.perf_counter() - step
    write_csv, csv_skipped = csv_wanted(config.customers_csv, len(result.customers))
    result.warnings.extend([csv_skipped] if csv_skipped else [])
    unchanged = functools.partial(check_input_unchanged, transactions.identities)
    with (
        atomic_folders(output_path, models_path, before_commit=unchanged) as (staging, models_staging),
        ThreadPoolExecutor(max_workers=1) as second_thread,
    ):
        # customers.parquet, the largest file, is encoded by Arrow without holding Python's lock: it is written on a
        # second thread while the other files and the report are made, which keeps a run with millions of
        # customers noticeably shorter than writing it first (docs/performance.md, "Where the time goes").
        customers_written = second_thread.submit(write_customers, staging, result.customers, write_csv)
        say(f"Writing outputs to {output_path}")
        step = time.perf_counter()
        write_run_files(staging, result, backtest_result)
        timings["write"] = time.perf_counter() - step
        timings["total"] = time.perf_counter() - started
        document = manifest(
            config, result, transactions, timings, models_path, input_used=input_used,
            models_sha256=run_models_sha256(staging), backtest_result=backtest_result, previous_run=previous_run,
            drift=drift, selection=selection,
        )  # fmt: skip
        finish_run_folder(staging, output_path, document, result, lines.lines, say)
        copy_models(staging, models_staging)
        customers_written.result()  # before the commit; raises what the writing raised
    failure_log_path(output_path).unlink(missing_ok=True)
    return RunResult(output_path, models_path, result, json.loads(json.dumps(document, default=str)))


def fingerprint_and_check_output(
    config: RunConfig, transactions: Transactions, as_of: dt.date, output_path: Path, force: bool
) -> dict[str, Any]:
    """Fingerprint the rows up to as_of and refuse an output folder the run may not replace (``check_overwrite``:
    never the config or the input, and a run of other data only with ``force``); return the fingerprint."""
    input_used = rows_up_to_as_of_fingerprint(transactions, as_of)
    check_overwrite(output_path, as_of, input_used, force, paths_never_replaced(config, transactions.files))
    return input_used


def check_as_of_after_first_transaction(transactions: Transactions, as_of: dt.date) -> None:
    """Refuse an as_of before the log's first transaction: there would be no customer to forecast.

    Raises
    ------
    DataError
        as_of is before the first transaction.
    """
    first = transactions.quality.first_timestamp
    if first is not None and as_of < pd.Timestamp(first).date():
        raise DataError(f"as_of {as_of} is before the first transaction ({first[:10]}). Choose a later --as-of.")


def as_of_after_last_transaction(transactions: Transactions, as_of: dt.date) -> list[str]:
    """A warning when as_of is after the log's last transaction: every customer then looks inactive since."""
    last = transactions.quality.last_timestamp
    if last is None or as_of <= pd.Timestamp(last).date():
        return []
    return [
        f"as_of {as_of} is after the last transaction ({last[:10]}): customers look inactive since then. "
        "If the log is not complete yet, run for an earlier --as-of."
    ]


def write_customers(folder: Path, customers: pd.DataFrame, write_csv: bool) -> None:
    """Write customers.parquet (and, when ``write_csv``, customers.csv) into a run's staging folder and flush
    them to disk, so that the commit's flush finds nothing of them left to write."""
    for written in write_customer_tables(customers, customer_columns(customers), folder, write_csv):
        sync_to_disk(written)


def write_run_files(staging: Path, result: Forecast, backtest_result: BacktestResult | None) -> None:
    """Write the segment table, the run's own copy of the models and, when one ran, the backtest into the
    staging folder (the customer tables are written by ``write_customers``; run.log, the manifest and the report
    by ``finish_run_folder``)."""
    window = {"first_purchase": str(result.customers["first_purchase"].min()), "as_of": result.as_of.isoformat()}
    (staging / RUN_MODELS).mkdir()
    for role, model in (("purchases", result.purchases), ("spend", result.spend)):
        write_json(staging / RUN_MODELS / MODEL_FILES[role], model_artifact(model, role, window))
    frame_to_csv(result.segments, staging / SEGMENTS_CSV)
    if backtest_result is not None:
        write_backtest(staging, backtest_result)


def run_models_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of each model file of a run's own copy (recorded in the manifest, checked when the run is read)."""
    return {name: file_sha256(folder / RUN_MODELS / name) for name in sorted(MODEL_FILES.values())}


def finish_run_folder(
    staging: Path, output_path: Path, document: dict[str, Any], result: Forecast, log_lines: list[str], say: Progress
) -> None:
    """Log the run's warnings, then write run.log, the manifest and the report into the staging folder of
    ``output_path``: the last files of a run.

    The report is given the digest of the customers the forecast found from their histories
    (``Forecast.digest``), so it reads no customer table.
    """
    write_run_log(staging, output_path, result.warnings, log_lines)
    write_json(staging / MANIFEST, document)
    say("Writing the report")
    step = time.perf_counter()
    build_report(staging, digest=result.digest)
    log.info("Report written in %.1f s", time.perf_counter() - step)


def write_run_log(staging: Path, output_path: Path, messages: list[str], log_lines: list[str]) -> None:
    """Log the run's warnings and its commit, then write run.log (every line ``run_log`` captured) into the staging
    folder of ``output_path``."""
    for message in messages:
        log.warning(message)
    log.info("Committing %s (manifest.json last)", output_path)
    (staging / RUN_LOG).write_text("\n".join(log_lines) + "\n", encoding="utf-8")


def copy_models(run_staging: Path, models_staging: Path) -> None:
    """Copy the run's model files into the staging folder of their published copy, ``<models_dir>/<as_of>/``."""
    for name in MODEL_FILES.values():
        shutil.copyfile(run_staging / RUN_MODELS / name, models_staging / name)


def backtest_for_run(config: RunConfig, log: LogQueries, as_of: dt.date, say: Progress) -> BacktestResult | None:
    """Backtest on the config's split, within the data up to as_of (both engines: ``log`` is the engine's).

    A run never looks past its as_of: the holdout is cut at as_of, and a configured split whose calibration
    ends on or after as_of is left to `forecast backtest` (with a warning).
    """
    section = config.backtest
    holdout_end = min((section.holdout_end if section else None) or as_of, as_of)
    calibration_end = section.calibration_end if section else None
    if calibration_end is not None and calibration_end >= holdout_end:
        warnings.warn(
            f"The backtest split ({calibration_end} .. {section.holdout_end if section else as_of}) ends after "
            f"as_of {as_of}, so this run does not include it: run `forecast backtest` for it.",
            ForecastWarning,
            stacklevel=2,
        )
        return None
    split = resolve_split(log, config, calibration_end, holdout_end)
    say(f"Backtesting: calibration to {split.calibration_end}, holdout to {split.holdout_end}")
    return run_backtest(log, config, split.calibration_end, split.holdout_end)


def backtest_record(result: BacktestResult) -> dict[str, Any]:
    """The manifest's ``backtest``: the split and the purchase model of the run's backtest."""
    return {key: result.document[key] for key in ("calibration_end", "holdout_end", "purchase_model")}


def choose_purchase_model(
    config: RunConfig, log: LogQueries, as_of: dt.date, say: Progress
) -> tuple[Selection | None, RunConfig]:
    """Resolve ``purchase_model: auto``, or check a configured model, by the internal validation up to as_of.

    Returns
    -------
    (selection, config)
        The validation (None when a configured model is not checked, ``model_selection.check_configured``) and
        the config with the purchase model to fit. A configured model that scores clearly worse than another
        is kept, with a ForecastWarning (``forecast.evaluation.selection``).
    """
    if config.purchase_model != "auto" and not config.model_selection.check_configured:
        return None, config
    say(f"Validating the purchase models on the data up to {as_of}")
    selection = select_purchase_model(log, config, as_of)
    if config.purchase_model == "auto":
        say(f"purchase_model auto: {selection.chosen} ({selection.reason})")
    return selection, config.model_copy(update={"purchase_model": selection.chosen})


def write_backtest(folder: Path, result: BacktestResult, more_timings: dict[str, float] | None = None) -> None:
    """Write backtest.json, its SVG charts and backtest_customers.csv into ``folder``."""
    from forecast.report.backtest_charts import backtest_plots  # matplotlib is loaded only to draw a backtest

    for name, svg in backtest_plots(result).items():
        (folder / name).write_text(svg, encoding="utf-8")
    timings = {**result.timings, **(more_timings or {})}
    write_json(folder / BACKTEST_JSON, {**result.document, "plots": dict(PLOT_FILES), "timings_seconds": timings})
    frame_to_csv(result.customers.reset_index(), folder / BACKTEST_CUSTOMERS_CSV)


@dataclass
class BacktestRun:
    """A finished backtest: where its outputs are, and what it computed."""

    output: Path
    result: BacktestResult
    data_warnings: list[str]


def backtest(
    config: RunConfig,
    calibration_end: dt.date | None = None,
    holdout_end: dt.date | None = None,
    output: str | Path | None = None,
    progress: Progress | None = None,
) -> BacktestRun:
    """Fit on the calibration period, score every method on the holdout, and write the outputs.

    Parameters
    ----------
    config
        The validated run configuration; its ``backtest`` section gives the default split.
    calibration_end, holdout_end
        Override the split (inclusive days). Defaults: the config's backtest section; holdout_end then
        as_of, then the last day with data; without a calibration_end the last third is held out.
    output
        Output folder; default the config's output with ``-backtest`` appended.

    Returns
    -------
    BacktestRun
    """
    say = _quiet(progress)
    started = time.perf_counter()
    say(f"Reading {config.data.path}")
    transactions = read_log(config)
    with closing(transactions.connection), duckdb_limits(config.duckdb, "backtesting"):
        log = DuckDBLog.of(transactions.connection, config)
        return backtest_on(
            log, config, calibration_end, holdout_end, output, say, started, transactions.quality.warnings
        )


def backtest_on(
    log: LogQueries,
    config: RunConfig,
    calibration_end: dt.date | None,
    holdout_end: dt.date | None,
    output: str | Path | None,
    say: Progress,
    started: float,
    data_warnings: list[str],
) -> BacktestRun:
    """``backtest`` on an engine's log: resolve the split, backtest, and write the outputs (both engines)."""
    split = resolve_split(log, config, calibration_end, holdout_end)
    say(f"Backtesting: calibration to {split.calibration_end}, holdout to {split.holdout_end}")
    result = run_backtest(log, config, split.calibration_end, split.holdout_end)
    output_path = Path(output) if output else Path(f"{config.output.rstrip('/')}-backtest")
    say(f"Writing outputs to {output_path}")
    with atomic_folder(output_path) as staging:
        write_backtest(staging, result, {"total": time.perf_counter() - started})
    return BacktestRun(output_path, result, list(data_warnings))


def _finite_or_none(value: float) -> float | None:
    """A total for the manifest: None (JSON null) when it is NaN (clv_lifetime at a discount rate of 0)."""
    return value if np.isfinite(value) else None


def totals_record(sums: dict[str, float], segments: pd.DataFrame) -> dict[str, float | None]:
    """The manifest's ``totals``: the customers' sums of ``TOTALLED_COLUMNS`` (however an engine added them up;
    the lifetime CLV None when not finite), with the all-customers interval and value at risk (``total_interval``)."""
    record: dict[str, float | None] = {name: sums[name] for name in TOTALLED_COLUMNS if name != "expected_purchases"}
    record["clv_lifetime"] = _finite_or_none(sums["clv_lifetime"])
    return {**record, **total_interval(segments), "expected_purchases": sums["expected_purchases"]}


def total_interval(segments: pd.DataFrame) -> dict[str, float | None]:
    """The all-customers CLV interval and value at risk, from the segment table's 'all' row."""
    row = segments[segments["segmentation"] == ALL_SEGMENTATION].iloc[0]
    names = ("clv_lower_total", "clv_upper_total", "value_at_risk", "value_at_risk_lower", "value_at_risk_upper")
    return {name.removesuffix("_total"): (None if pd.isna(row[name]) else float(row[name])) for name in names}


@dataclass(frozen=True)
class BudgetForecast:
    """What ``forecast budget`` reports, on either engine: the as_of, the segment table with its decision columns
    (``forecast.value.budget.decision_columns``) and the run's warnings."""

    as_of: dt.date
    segments: pd.DataFrame
    warnings: list[str]


def budget(
    config: RunConfig, cac: float | None = None, as_of: dt.date | None = None, progress: Progress | None = None
) -> BudgetForecast:
    """Forecast as of a date and say, per segment, whether a new customer acquired at the CAC pays back.

    Nothing is written. ``cac`` replaces ``budget.cac`` (one amount for every segment).
    """
    config = with_cac(config, cac)
    transactions = read_log(config)
    with closing(transactions.connection), duckdb_limits(config.duckdb, "forecasting for the budget"):
        as_of = as_of or config.as_of or default_as_of(transactions)
        transactions = count_after_as_of(transactions, as_of)
        with collected_warnings() as notes:
            _, config = choose_purchase_model(
                config, DuckDBLog.of(transactions.connection, config), as_of, _quiet(progress)
            )
        result = forecast(config, transactions, as_of, progress)
    return BudgetForecast(result.as_of, result.segments, [*result.warnings, *notes])


def with_cac(config: RunConfig, cac: float | None) -> RunConfig:
    """The config with ``cac`` (when given) as every segment's acquisition cost.

    Raises
    ------
    ConfigError
        ``cac`` is not a positive amount, or neither it nor ``budget.cac`` gives one.
    """
    if cac is not None:
        try:
            budget_settings = BudgetConfig.model_validate({**config.budget.model_dump(), "cac": cac})
        except ValidationError as exc:
            raise ConfigError(
                f"--cac {cac:g}: {describe_validation_error(exc)} Give a positive amount per customer."
            ) from None
        config = config.model_copy(update={"budget": budget_settings})
    if config.budget.cac is None:
        raise ConfigError(
            "No acquisition cost: pass --cac with an amount per customer, or set budget.cac in the config."
        )
    return config


#: The columns of budget.csv, in order: what a budget owner reads, per segment.
BUDGET_FILE_COLUMNS = [
    "segmentation", "segment", "biddable", "customers", "new_customer_clv", "cac", "ltv_to_cac", "pays_back",
    "payback_month", "max_acquisition_cost", "verdict",
]  # fmt: skip


def budget_table(segments: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """The segments' budget decisions as budget.csv holds them, with one verdict sentence per segment."""
    table = segments.reset_index(drop=True)
    table["verdict"] = [
        verdict(row, config.budget.target_ltv_to_cac, config.horizon_months) if not pd.isna(row["cac"]) else ""
        for _, row in table.iterrows()
    ]
    return table[BUDGET_FILE_COLUMNS]


def check_budget_file(path: Path) -> None:
    """Raise an OutputError, before any work, when ``path`` exists and is not a budget.csv this tool wrote."""
    if not path.exists():
        return
    header = ",".join(BUDGET_FILE_COLUMNS)
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            first = file.readline().rstrip("\r\n")
    except OSError as exc:
        raise OutputError(f"Cannot read {path}: {exc.strerror or exc}. Choose another --output.") from None
    if not path.is_file() or first != header:
        raise OutputError(
            f"{path} exists and is not a budget file written by `forecast budget`; it is left as it is. "
            "Choose another --output, or move that file away."
        )


def write_budget_file(table: pd.DataFrame, path: Path) -> None:
    """Write budget.csv beside ``path`` and rename it into place: an existing file is replaced whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        frame_to_csv(table, partial)
        os.replace(partial, path)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}. Check the folder and the free space.") from None
    finally:
        partial.unlink(missing_ok=True)
