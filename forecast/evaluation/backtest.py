"""Backtest: fit on a calibration period, predict the holdout per customer, score against what happened.

Methods compared on the same customers (everyone with a purchase on or before calibration_end):

- ``predictive``: the purchase model (the configured one, or with ``auto`` the one the internal validation before
  calibration_end scores best, ``forecast.evaluation.selection``) x Gamma-Gamma. Holdout purchases are the conditional
  expectation E[X(L) | x, t_x, T] over the holdout length L; revenue is that times E[spend | x, m].
- ``heuristic``: the marketing formula restricted to the holdout: purchases per year x holdout years,
  revenue = that x average purchase value. Its purchases are the naive (x / T) x L of Fader, Hardie & Lee (2005).
- ``gradient_boosting``: scikit-learn's HistGradientBoostingRegressor (Poisson loss) on summary features,
  trained on an earlier window that ends at calibration_end, then applied to the calibration features.

Nothing from the holdout can reach a prediction: every prediction is computed from
``forecast.data.summary.summarize(con, calibration_end)`` and windows ending on or before calibration_end; the
holdout rows are read by ``forecast.data.summary.holdout_purchases`` only to score. The purchase model is chosen
before calibration_end too; every model's holdout scores are reported beside it as information. The overall
winner is decided by the total's error, revenue RMSE and normalized Gini (``forecast.evaluation.metrics``). The
metrics are described in docs/reference.md, "Backtest".

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way: an alternative to the Pareto/NBD model",
Marketing Science 24(2), 275-284.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecast.config import DAYS_PER_YEAR, PenalizerConfig, RunConfig
from forecast.data.compress import distinct_counts
from forecast.errors import ConfigError, DataError, FitError, ForecastWarning, collected_warnings
from forecast.evaluation.holdout_interval import holdout_interval
from forecast.evaluation.metrics import (
    DECIDING,
    decile_table,
    mae,
    method_metrics,
    normalized_gini,
    overall_winner,
    rmse,
    spearman,
    top_capture,
    winners,
)
from forecast.evaluation.predictive_counts import log_count_probability
from forecast.evaluation.selection import Selection, select_purchase_model
from forecast.models import PURCHASE_MODELS, GammaGamma, PurchaseModel, fit_models, purchase_model
from forecast.value.clv import heuristic_inputs, require_finite

if TYPE_CHECKING:
    from forecast.evaluation.log_queries import LogQueries

__all__ = [
    "DECIDING", "BacktestResult", "Split", "decile_table", "default_split", "mae", "method_metrics",
    "normalized_gini", "overall_winner", "resolve_split", "rmse", "run_backtest", "spearman", "top_capture",
    "winners",
]  # fmt: skip

METHODS = ("predictive", "heuristic", "gradient_boosting")
#: Calibration frequencies 0 .. FREQUENCY_CAP - 1 get their own row in the conditional-expectation table.
FREQUENCY_CAP = 7
GB_FEATURES = ["frequency", "recency", "T", "monetary_value", "avg_purchase_value", "time_since_last_purchase"]
GB_MIN_TRAINING_CUSTOMERS = 50


@dataclass(frozen=True)
class Split:
    """A calibration/holdout split: calibration is up to calibration_end, holdout (calibration_end, holdout_end]."""

    calibration_end: dt.date
    holdout_end: dt.date

    def holdout_days(self) -> int:
        return (self.holdout_end - self.calibration_end).days


@dataclass
class BacktestResult:
    """What one backtest computed (nothing written yet).

    Attributes
    ----------
    customers
        Indexed by customer_id: the calibration summary (frequency, recency, T, monetary_value,
        calibration_revenue),
        actual_purchases and actual_revenue in the holdout, and ``<method>_purchases`` / ``<method>_revenue``
        for every method.
    tracking
        Weekly grid of dates with cumulative repeat purchases: ``actual`` and ``model`` (the predictive
        purchase model's unconditional expectation summed over customers).
    document
        The ``backtest.json`` content (without the ``plots`` key, which the writer adds).
    warnings
        Messages of the ForecastWarnings raised on the way.
    timings
        Seconds spent per step (summary, model_fits, gradient_boosting, tracking).
    """

    split: Split
    customers: pd.DataFrame
    tracking: pd.DataFrame
    document: dict[str, Any]
    methods: list[str]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def default_split(first_day: dt.date, last_day: dt.date) -> Split:
    """Hold out the last third of the observed span (first_day .. last_day, both inclusive).

    Raises
    ------
    DataError
        The span is shorter than three days.
    """
    span_days = (last_day - first_day).days
    if span_days < 3:
        raise DataError(
            f"The data spans {span_days} days ({first_day} .. {last_day}), too short to hold out a third of it. "
            "Add a backtest section with calibration_end and holdout_end to the config."
        )
    return Split(last_day - dt.timedelta(days=round(span_days / 3)), last_day)


def resolve_split(
    log: LogQueries,
    config: RunConfig,
    calibration_end: dt.date | None = None,
    holdout_end: dt.date | None = None,
) -> Split:
    """The split to use: explicit dates, else the config's backtest section, else the last third held out.

    holdout_end defaults to the config's backtest.holdout_end, then as_of, then the last day with data.

    Raises
    ------
    ConfigError
        The dates are out of order or outside the data.
    """
    first_day, last_day = log.span()
    section = config.backtest
    holdout_end = holdout_end or (section.holdout_end if section else None) or config.as_of or last_day
    calibration_end = calibration_end or (section.calibration_end if section else None)
    if calibration_end is None:
        return default_split(first_day, min(holdout_end, last_day))
    if holdout_end <= calibration_end:
        raise ConfigError(
            f"The backtest's holdout_end {holdout_end} is not after calibration_end {calibration_end}. Set "
            "backtest.holdout_end (or --holdout-end) to a later day."
        )
    if calibration_end < first_day:
        raise ConfigError(
            f"The backtest's calibration_end {calibration_end} is before the first transaction ({first_day}). "
            "Choose a later calibration_end."
        )
    if calibration_end >= last_day:
        raise ConfigError(
            f"The backtest's calibration_end {calibration_end} leaves no data to score: the last transaction is on "
            f"{last_day}. Choose an earlier calibration_end."
        )
    return Split(calibration_end, holdout_end)


# --- predictions -----------------------------------------------------------------------------------------


def predictive_predictions(
    summary: pd.DataFrame, purchases: PurchaseModel, spend: GammaGamma, holdout_length: float
) -> pd.DataFrame:
    """Holdout purchases E[X(L) | x, t_x, T] and revenue x E[spend | x, m] per customer.

    Raises
    ------
    FitError
        A prediction is NaN or infinite.
    """
    expected = purchases.expected_purchases(holdout_length, summary["frequency"], summary["recency"], summary["T"])
    spend_per_purchase = spend.expected_spend(summary["frequency"], summary["monetary_value"])
    frame = pd.DataFrame(
        {"predictive_purchases": expected, "predictive_revenue": expected * spend_per_purchase}, index=summary.index
    )
    require_finite(frame, f"The backtest's {purchases.title} x Gamma-Gamma predictions")
    return frame


def heuristic_predictions(summary: pd.DataFrame, holdout_days: float, days_per_unit: float) -> pd.DataFrame:
    """The heuristic over the holdout: purchases per year x holdout years, revenue = that x avg purchase value."""
    inputs = heuristic_inputs(summary, days_per_unit)
    expected = inputs["purchases_per_year"] * (holdout_days / DAYS_PER_YEAR)
    return pd.DataFrame(
        {"heuristic_purchases": expected, "heuristic_revenue": expected * inputs["avg_purchase_value"]},
        index=summary.index,
    )


def gb_features(summary: pd.DataFrame, days_per_unit: float) -> pd.DataFrame:
    """Features of the machine-learning baseline, from a per-customer summary only."""
    features = summary[["frequency", "recency", "T", "monetary_value"]].astype(float)
    features["avg_purchase_value"] = heuristic_inputs(summary, days_per_unit)["avg_purchase_value"]
    features["time_since_last_purchase"] = summary["T"] - summary["recency"]
    # DuckDB's parallel sums differ in the last bits between runs; rounding keeps the trees' bins identical.
    return features[GB_FEATURES].round(9)


def gb_training_window(first_day: dt.date, split: Split) -> tuple[dt.date, int]:
    """Where the baseline's training window starts and how many days its target spans.

    The target window is as long as the holdout when the calibration period leaves at least as much history
    before it; otherwise it is half the calibration period (and predictions are scaled to the holdout length).
    """
    calibration_days = (split.calibration_end - first_day).days
    window_days = min(split.holdout_days(), calibration_days // 2)
    return split.calibration_end - dt.timedelta(days=window_days), window_days


def gradient_boosting_predictions(
    log: LogQueries, summary: pd.DataFrame, split: Split, days_per_unit: float, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train gradient boosting on an earlier window inside the calibration period and predict the holdout.

    Features are summaries as of ``features_as_of`` = calibration_end - w; targets are each customer's
    purchases and revenue in (features_as_of, calibration_end]. The fitted models are applied to the summary
    as of calibration_end and scaled by L / w (1 when the window is as long as the holdout). Everything read
    ends on or before calibration_end.

    Returns
    -------
    (predictions, training)
        Per-customer ``gradient_boosting_purchases`` and ``gradient_boosting_revenue``, and a description
        of the training window for backtest.json.

    Raises
    ------
    FitError
        The calibration period is too short or too sparse to train on.
    """
    first_day, _ = log.span()
    features_as_of, window_days = gb_training_window(first_day, split)
    train_summary, targets = gb_training_data(log, features_as_of, split, window_days)
    X_train = gb_features(train_summary, days_per_unit)
    X = gb_features(summary, days_per_unit)
    scale = split.holdout_days() / window_days
    predictions = {}
    for target, column in (("purchases", "purchases_holdout"), ("revenue", "revenue_holdout")):
        y = targets[column].reindex(train_summary.index).to_numpy(float).clip(min=0).round(9)
        predictions[f"gradient_boosting_{target}"] = poisson_boosting(X_train, y, X, seed) * scale
    training = {
        "features_as_of": features_as_of.isoformat(),
        "target_end": split.calibration_end.isoformat(),
        "window_days": window_days,
        "scale_to_holdout": scale,
        "customers": len(train_summary),
        "features": GB_FEATURES,
        "seed": seed,
    }
    return pd.DataFrame(predictions, index=summary.index), training


def gb_training_data(
    log: LogQueries, features_as_of: dt.date, split: Split, window_days: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline's training rows: the summary as of ``features_as_of`` and each customer's purchases and revenue
    in (features_as_of, calibration_end].

    Raises
    ------
    FitError
        Fewer than ``GB_MIN_TRAINING_CUSTOMERS`` customers, or no purchase in the target window.
    """
    training_customers, training_purchases = 0, 0
    if window_days >= 1:
        try:
            train_summary = log.summary(features_as_of)
            targets = log.holdout(features_as_of, split.calibration_end)
            training_customers, training_purchases = len(train_summary), int(targets["purchases_holdout"].sum())
        except DataError:
            pass  # no customer yet at features_as_of
    if training_customers < GB_MIN_TRAINING_CUSTOMERS or training_purchases == 0:
        raise FitError(
            f"The gradient-boosting baseline has too little history to train on before {split.calibration_end} "
            f"({training_customers} customers and {training_purchases} purchases in a {window_days}-day window). "
            "Use a later calibration_end."
        )
    return train_summary, targets


def poisson_boosting(X_train: pd.DataFrame, y: np.ndarray, X: pd.DataFrame, seed: int) -> np.ndarray:
    """Fit a gradient-boosted regression with Poisson loss on (X_train, y) and predict at X.

    Poisson loss because the targets are non-negative counts and sums, and the prediction should be a mean, like
    the models'. scikit-learn is imported here, so that a run without a backtest never loads it.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    model = HistGradientBoostingRegressor(
        loss="poisson",
        learning_rate=0.1,
        max_iter=100,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        early_stopping=False,
        random_state=seed,
    )
    # One thread: OpenMP workers spin-wait on a busy machine, which can make a fit many times slower than on one
    # thread, and the training rows are few enough that more threads gain nothing.
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(X_train, y)
        return model.predict(X)


# --- model comparison and diagnostics ----------------------------------------------------------------------


def compare_models(
    summary: pd.DataFrame,
    actual_purchases: np.ndarray,
    holdout_length: float,
    fitted: dict[str, PurchaseModel],
    penalizer: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Fit every purchase model on the calibration summary; log-likelihood, BIC and holdout scores side by side.

    BIC = k ln(n) - 2 LL with k parameters and n customers. The holdout scores (purchase MAE and RMSE, and the
    predictive log-likelihood of the holdout counts per 1,000 customers, the score the internal validation uses)
    are information only: no choice is made on them. A model that fails to fit or predicts non-finite values gets
    an ``error`` entry instead of figures.

    Parameters
    ----------
    fitted
        Models already fitted on this summary (by name), reused instead of refitted.
    penalizer
        lifetimes' ``penalizer_coef`` of the purchase models fitted here (config ``penalizer.purchases``).
    """
    comparison: dict[str, dict[str, Any]] = {}
    for name in PURCHASE_MODELS:
        try:
            if name not in fitted:
                model = purchase_model(name, penalizer)
                fitted[name] = model.fit(summary["frequency"], summary["recency"], summary["T"])
            comparison[name] = model_entry(fitted[name], summary, actual_purchases, holdout_length)
        except FitError as exc:
            comparison[name] = {"error": str(exc)}
    return comparison


def model_entry(
    model: PurchaseModel, summary: pd.DataFrame, actual_purchases: np.ndarray, holdout_length: float
) -> dict[str, Any]:
    """One fitted model's ``model_comparison`` entry (see ``compare_models``).

    Raises
    ------
    FitError
        The model predicts NaN or infinite purchases or probabilities.
    """
    x, t_x, age = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    expected = model.expected_purchases(holdout_length, x, t_x, age)
    log_probability = log_count_probability(model, holdout_length, x, t_x, age, actual_purchases)
    result = model._result()
    k = len(model.param_names)
    return {
        "params": dict(result.params),
        "log_likelihood": result.log_likelihood,
        "parameters": k,
        "bic": k * math.log(len(summary)) - 2 * result.log_likelihood,
        "predicted_purchases": float(expected.sum()),
        "mae_purchases": mae(expected, actual_purchases),
        "rmse_purchases": rmse(expected, actual_purchases),
        "holdout_log_likelihood_per_1000": 1000.0 * float(np.mean(log_probability)),
    }


def conditional_expectation(customers: pd.DataFrame, methods: list[str]) -> list[dict[str, Any]]:
    """Mean holdout purchases by calibration frequency (0 .. 6, then 7+), actual and per method.

    The conditional-expectation chart of Fader, Hardie & Lee (2005), figure 3.
    """
    frequency = customers["frequency"].to_numpy()
    bins = np.minimum(frequency, FREQUENCY_CAP)
    rows = []
    for value in range(FREQUENCY_CAP + 1):
        mask = bins == value
        if not mask.any():
            continue
        rows.append(
            {
                "frequency": f"{value}+" if value == FREQUENCY_CAP else str(value),
                "customers": int(mask.sum()),
                "actual": float(customers.loc[mask, "actual_purchases"].mean()),
                "predicted": {m: float(customers.loc[mask, f"{m}_purchases"].mean()) for m in methods},
            }
        )
    return rows


def tracking_curve(
    log: LogQueries, summary: pd.DataFrame, model: PurchaseModel, split: Split, days_per_unit: float
) -> pd.DataFrame:
    """Weekly cumulative repeat purchases of the calibration customers, actual vs model, up to holdout_end.

    The model line is sum_i E[X(t - t0_i)], the unconditional expectation for a customer acquired at their
    first purchase t0_i (Fader, Hardie & Lee 2005, figure 2). A customer's age at day g is
    T_i + (g - calibration_end), the summary's own time convention, so both resolutions line up.

    Returns
    -------
    pandas.DataFrame
        Columns date (the grid day, inclusive), actual and model (cumulative repeat purchases).
    """
    first = pd.to_datetime(summary["first_purchase"]).min().date()
    grid = [first + dt.timedelta(days=7 * k) for k in range(1, (split.holdout_end - first).days // 7 + 1)]
    if not grid or grid[-1] != split.holdout_end:
        grid.append(split.holdout_end)
    # Repeat purchase moments (a customer's first purchase moment excluded) of customers acquired in calibration.
    repeat_days = log.repeat_purchases_by_day(split.calibration_end, split.holdout_end)
    days = pd.to_datetime(repeat_days["day"]).dt.date.to_numpy()
    counts = repeat_days["purchases"].to_numpy(float)
    cumulative = np.cumsum(counts)
    positions = np.searchsorted(days, np.array(grid, dtype=object), side="right")
    actual = np.where(positions > 0, cumulative[np.maximum(positions - 1, 0)] if len(counts) else 0.0, 0.0)
    ages, weights = distinct_counts(summary["T"].to_numpy(float))
    offsets = np.array([(g - split.calibration_end).days / days_per_unit for g in grid])
    age_grid = np.clip(ages[:, None] + offsets[None, :], 0.0, None)
    expected = model.expected_purchases_new(age_grid.ravel()).reshape(age_grid.shape)
    return pd.DataFrame({"date": grid, "actual": actual, "model": weights @ expected})


# --- the backtest ------------------------------------------------------------------------------------------


def run_backtest(log: LogQueries, config: RunConfig, calibration_end: dt.date, holdout_end: dt.date) -> BacktestResult:
    """Fit on the calibration period, predict the holdout with every method, and score each one.

    Parameters
    ----------
    log
        The transaction log, as an engine reads it (``forecast.evaluation.log_queries``), in ``config``'s time unit
        and resolution.
    config
        Run configuration: time_unit, resolution, purchase_model (``auto`` takes the model that the internal
        validation before calibration_end scores best, ``forecast.evaluation.selection``), model_selection and the
        backtest seed.
    calibration_end, holdout_end
        Last days (inclusive) of the calibration and holdout periods.

    Returns
    -------
    BacktestResult

    Raises
    ------
    DataError
        The dates are out of order or no customer was acquired by calibration_end.
    FitError
        The configured model cannot be fitted or predicts non-finite values.

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2), section 4.
    """
    split = Split(calibration_end, holdout_end)
    if split.holdout_days() <= 0:
        raise DataError(
            f"holdout_end {holdout_end} must be after calibration_end {calibration_end}. Swap or fix the dates."
        )
    holdout_length = split.holdout_days() / config.days_per_unit
    timings: dict[str, float] = {}
    with collected_warnings() as messages:
        with _timed(timings, "summary"):
            summary, customers = calibration_and_holdout(log, split)
        with _timed(timings, "model_selection"):
            selection = select_purchase_model(log, config, split.calibration_end)
        with _timed(timings, "model_fits"):
            actual_purchases = customers["actual_purchases"].to_numpy(float)
            fit = fit_calibration(summary, actual_purchases, holdout_length, selection, config.penalizer)
        predictions = [
            predictive_predictions(summary, fit.purchases, fit.spend, holdout_length),
            heuristic_predictions(summary, split.holdout_days(), config.days_per_unit),
        ]
        with _timed(timings, "gradient_boosting"):
            seed = config.backtest.seed if config.backtest else 0
            baseline = gradient_boosting_or_skip(log, summary, split, config, seed)
        if baseline.predictions is not None:
            predictions.append(baseline.predictions)
        customers = customers.join(pd.concat(predictions, axis=1))
        with _timed(timings, "tracking"):
            tracking = tracking_curve(log, summary, fit.purchases, split, config.days_per_unit)
        with _timed(timings, "holdout_interval"):
            interval = holdout_interval_or_none(summary, fit, holdout_length, customers, config)
    methods = ["predictive", "heuristic", *(["gradient_boosting"] if baseline.predictions is not None else [])]
    document = backtest_document(split, config, customers, methods, fit, baseline, tracking)
    document["holdout_interval"] = interval
    document["warnings"] = messages
    return BacktestResult(split, customers, tracking, document, methods, messages, timings)


def holdout_interval_or_none(
    summary: pd.DataFrame, fit: CalibrationFit, length: float, customers: pd.DataFrame, config: RunConfig
) -> dict[str, Any] | None:
    """backtest.json's ``holdout_interval`` (``forecast.evaluation.holdout_interval``); None without interval draws
    (``interval_draws: 0``) or, with a warning, when the fit has no usable parameter covariance."""
    if config.interval_draws == 0:
        return None
    actual = {
        "purchases": float(customers["actual_purchases"].to_numpy(float).sum()),
        "revenue": float(customers["actual_revenue"].to_numpy(float).sum()),
    }
    try:
        return holdout_interval(
            summary, fit.purchases, fit.spend, length, actual, config.ci_level, config.interval_draws, config.seed
        )
    except FitError as exc:
        warnings.warn(f"The holdout totals have no interval: {exc}", ForecastWarning, stacklevel=2)
        return None


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Record the seconds the block takes under ``timings[step]`` (backtest.json's ``timings_seconds``)."""
    started = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - started


def calibration_and_holdout(log: LogQueries, split: Split) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The calibration summary, and the backtest's customer table: its summary columns and what each customer
    actually bought in the holdout.

    Warns (``ForecastWarning``) when the log ends before holdout_end: the actual figures are then understated.

    Returns
    -------
    (summary, customers)
        ``summarize`` as of calibration_end, and a table indexed by customer_id with frequency, recency, T,
        monetary_value, calibration_revenue, actual_purchases and actual_revenue.

    Raises
    ------
    DataError
        No customer was acquired by calibration_end, or the holdout counts miss a calibration customer.
    """
    _, last_day = log.span()
    if split.holdout_end > last_day:
        warnings.warn(
            f"The log ends on {last_day}, {(split.holdout_end - last_day).days} days before holdout_end "
            f"{split.holdout_end}: the holdout's actual purchases and revenue are understated. Set holdout_end to "
            "the last day with data or earlier.",
            ForecastWarning,
            stacklevel=3,
        )
    summary = log.summary(split.calibration_end)
    actual = log.holdout(split.calibration_end, split.holdout_end).reindex(summary.index)
    if actual.isna().any().any():
        raise DataError("The holdout counts do not cover every calibration customer; the log changed while reading.")
    customers = summary[["frequency", "recency", "T", "monetary_value", "revenue"]].rename(
        columns={"revenue": "calibration_revenue"}
    )
    customers["actual_purchases"] = actual["purchases_holdout"].to_numpy(float)
    customers["actual_revenue"] = actual["revenue_holdout"].to_numpy(float)
    return summary, customers


@dataclass(frozen=True)
class CalibrationFit:
    """The models the predictive method uses, and every purchase model compared on the same split."""

    configured: str  # the config's purchase_model, "auto" included
    chosen: str  # the purchase model used: the configured one, or the internal validation's best for "auto"
    purchases: PurchaseModel
    spend: GammaGamma
    comparison: dict[str, dict[str, Any]]  # ``compare_models``
    selection: Selection


def fit_calibration(
    summary: pd.DataFrame,
    actual_purchases: np.ndarray,
    holdout_length: float,
    selection: Selection,
    penalizer: PenalizerConfig | None = None,
) -> CalibrationFit:
    """Fit the selected purchase model and Gamma-Gamma on the calibration summary, and compare every purchase model
    on the holdout (information only: the choice was made before calibration_end, ``selection``).

    The fits are the run's (``forecast.models.fit_models``: the config's ``penalizer``, and the fallbacks to the
    NBD and the mean spend); the compared models are fitted as configured, with the purchase penalizer.

    Raises
    ------
    FitError
        The selected model cannot be fitted on the calibration period.
    """
    penalizer = penalizer if penalizer is not None else PenalizerConfig()
    fitted: dict[str, PurchaseModel] = {}
    fitted[selection.chosen], spend = fit_models(
        summary, selection.chosen, purchase_penalizer=penalizer.purchases, spend_penalizer=penalizer.spend
    )
    comparison = compare_models(summary, actual_purchases, holdout_length, fitted, penalizer.purchases)
    return CalibrationFit(
        selection.configured, selection.chosen, fitted[selection.chosen], spend, comparison, selection
    )


@dataclass(frozen=True)
class Baseline:
    """The gradient-boosting baseline's predictions and training window, or why it was skipped."""

    predictions: pd.DataFrame | None
    training: dict[str, Any] | None
    skipped: str | None


def gradient_boosting_or_skip(
    log: LogQueries, summary: pd.DataFrame, split: Split, config: RunConfig, seed: int
) -> Baseline:
    """The gradient-boosting baseline, or, when the calibration period is too short to train it, a warning and
    the reason it was skipped: the other methods are scored without it."""
    try:
        predictions, training = gradient_boosting_predictions(log, summary, split, config.days_per_unit, seed)
    except FitError as exc:
        warnings.warn(f"The gradient-boosting baseline was skipped: {exc}", ForecastWarning, stacklevel=3)
        return Baseline(None, None, str(exc))
    return Baseline(predictions, training, None)


def backtest_document(
    split: Split,
    config: RunConfig,
    customers: pd.DataFrame,
    methods: list[str],
    fit: CalibrationFit,
    baseline: Baseline,
    tracking: pd.DataFrame,
) -> dict[str, Any]:
    """The content of backtest.json (without ``warnings`` and ``plots``): the split, every method's metrics, the
    winner per metric and overall (by ``metrics.DECIDING``), the model choice and comparison, the conditional
    expectations and the tracking curve."""
    method_entries = {m: method_metrics(customers, m) for m in methods}
    if baseline.training is not None:
        method_entries["gradient_boosting"]["training"] = baseline.training
    method_entries["predictive"]["model"] = fit.chosen
    actual_revenue = customers["actual_revenue"].to_numpy(float)
    document: dict[str, Any] = {
        "calibration_end": split.calibration_end.isoformat(),
        "holdout_end": split.holdout_end.isoformat(),
        "customers": len(customers),
        "time_unit": config.time_unit,
        "holdout_length": split.holdout_days() / config.days_per_unit,
        "actual": {
            "purchases": float(customers["actual_purchases"].to_numpy(float).sum()),
            "revenue": float(actual_revenue.sum()),
            "top20_capture": top_capture(actual_revenue, actual_revenue),
        },
        "methods": method_entries,
        "winner": winners(method_entries),
        "overall_winner": overall_winner(method_entries),
        "purchase_model": {"configured": fit.configured, "used": fit.chosen, "reason": fit.selection.reason},
        "model_selection": fit.selection.document(),
        "model_comparison": fit.comparison,
        "conditional_expectation": conditional_expectation(customers, methods),
        "tracking": [
            {"date": day.isoformat(), "actual": float(actual_count), "model": float(model_count)}
            for day, actual_count, model_count in zip(
                tracking["date"].tolist(), tracking["actual"].tolist(), tracking["model"].tolist(), strict=True
            )
        ],
    }
    if baseline.skipped is not None:
        document["skipped"] = {"gradient_boosting": baseline.skipped}
    return document
