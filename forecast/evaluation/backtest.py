"""Backtest: fit on a calibration period, predict the holdout per customer, score against what happened.

Methods compared on the same customers (everyone with a purchase on or before calibration_end):

- ``predictive``: the configured purchase model x Gamma-Gamma. Holdout purchases are the conditional
  expectation E[X(L) | x, t_x, T] over the holdout length L; revenue is that times E[spend | x, m].
- ``heuristic``: the marketing formula restricted to the holdout: purchases per year x holdout years,
  revenue = that x average purchase value. Its purchases are the naive (x / T) x L of Fader, Hardie & Lee (2005).
- ``gradient_boosting``: scikit-learn's HistGradientBoostingRegressor (Poisson loss) on summary features,
  trained on an earlier window that ends at calibration_end, then applied to the calibration features.

Nothing from the holdout can reach a prediction: every prediction is computed from
``forecast.data.summary.summarize(con, calibration_end)`` and windows ending on or before calibration_end; the
holdout rows are read by ``forecast.data.summary.holdout_purchases`` only to score. (With ``purchase_model: auto``
the predictive method uses the model with the lowest holdout purchase error, which is model selection on the
holdout; the comparison of all three models is reported beside it.) The metrics are described in
docs/reference.md, "Backtest".

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
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from forecast.config import DAYS_PER_YEAR, RunConfig
from forecast.data.compress import distinct_counts
from forecast.data.summary import Resolution, holdout_purchases, summarize
from forecast.errors import ConfigError, DataError, FitError, ForecastWarning, collected_warnings
from forecast.models import PURCHASE_MODELS, GammaGamma, PurchaseModel, fit_models, purchase_model
from forecast.value.clv import heuristic_inputs, require_finite

METHODS = ("predictive", "heuristic", "gradient_boosting")
#: Metrics where lower is better, then higher is better; ``winner`` names the best method for each.
LOWER_IS_BETTER = ("mae_purchases", "rmse_purchases", "mae_revenue", "rmse_revenue")
HIGHER_IS_BETTER = ("spearman_revenue", "top20_capture")
TOP_SHARE = 0.20
DECILES = 10
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


def log_span(con: duckdb.DuckDBPyConnection) -> tuple[dt.date, dt.date]:
    """First and last calendar day of the ``transactions`` relation."""
    row = con.execute("SELECT CAST(min(ts) AS DATE), CAST(max(ts) AS DATE) FROM transactions").fetchone()
    if row is None or row[0] is None:
        raise DataError("The transaction log has no rows, so there is nothing to backtest.")
    return row[0], row[1]


def resolve_split(
    con: duckdb.DuckDBPyConnection,
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
    first_day, last_day = log_span(con)
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


# --- metrics ---------------------------------------------------------------------------------------------


def mae(predicted: np.ndarray | pd.Series, actual: np.ndarray | pd.Series) -> float:
    """Mean absolute error per customer."""
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(actual, float))))


def rmse(predicted: np.ndarray | pd.Series, actual: np.ndarray | pd.Series) -> float:
    """Root mean squared error per customer."""
    return float(np.sqrt(np.mean((np.asarray(predicted, float) - np.asarray(actual, float)) ** 2)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0  # ranks start at 1; ties share their mean rank
    return ranks


def spearman(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    """Spearman rank correlation (ties get their average rank); None when either side is constant.

    Values are compared at 1e-9 so that equal sums added in another order (last-bit differences) still tie.
    """
    x = _average_ranks(np.round(np.asarray(predicted, float), 9))
    y = _average_ranks(np.round(np.asarray(actual, float), 9))
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def top_capture(predicted: np.ndarray, actual: np.ndarray, share: float = TOP_SHARE) -> float | None:
    """Share of the actual total earned by the ``share`` of customers the prediction ranks highest.

    The top group has ``share x n`` customers (a fraction of a customer counts fractionally). Customers
    tied at the boundary share the remaining places equally, so ties are not broken by an arbitrary order.
    None when the actual total is not positive.
    """
    predicted = np.asarray(predicted, float)
    actual = np.asarray(actual, float)
    total = actual.sum()
    if total <= 0 or len(actual) == 0:
        return None
    places = share * len(actual)
    frame = pd.DataFrame({"predicted": predicted, "actual": actual})
    groups = frame.groupby("predicted", sort=True)["actual"].agg(["size", "sum"]).iloc[::-1]
    captured = 0.0
    for size, group_sum in zip(groups["size"].to_numpy(), groups["sum"].to_numpy(), strict=True):
        if places <= 0:
            break
        taken = min(size, places)
        captured += group_sum * taken / size
        places -= taken
    return float(captured / total)


def decile_table(
    predicted_revenue: np.ndarray,
    actual_revenue: np.ndarray,
    predicted_purchases: np.ndarray,
    actual_purchases: np.ndarray,
    customer_ids: pd.Index,
) -> list[dict[str, float | int]]:
    """Totals per decile of predicted revenue (decile 1 = the 10% ranked highest).

    Ties are ordered by customer id so that the table is reproducible.
    """
    order = pd.DataFrame(
        {"predicted": np.asarray(predicted_revenue, float), "id": np.asarray(customer_ids.astype(str))}
    ).sort_values(["predicted", "id"], ascending=[False, True], kind="stable")
    n = len(order)
    decile = np.empty(n, dtype=int)
    decile[order.index.to_numpy()] = np.arange(n) * DECILES // n + 1
    frame = pd.DataFrame(
        {
            "decile": decile,
            "predicted_revenue": np.asarray(predicted_revenue, float),
            "actual_revenue": np.asarray(actual_revenue, float),
            "predicted_purchases": np.asarray(predicted_purchases, float),
            "actual_purchases": np.asarray(actual_purchases, float),
        }
    )
    table = frame.groupby("decile").agg(
        customers=("decile", "size"),
        predicted_revenue=("predicted_revenue", "sum"),
        actual_revenue=("actual_revenue", "sum"),
        predicted_purchases=("predicted_purchases", "sum"),
        actual_purchases=("actual_purchases", "sum"),
    )
    return [
        {"decile": int(row["decile"]), "customers": int(row["customers"])}
        | {k: float(row[k]) for k in table.columns[1:]}
        for row in table.reset_index().to_dict("records")
    ]


def method_metrics(customers: pd.DataFrame, method: str) -> dict[str, Any]:
    """The backtest.json entry of one method: totals, errors, rank quality and the decile table."""
    purchases = customers[f"{method}_purchases"].to_numpy(float)
    revenue = customers[f"{method}_revenue"].to_numpy(float)
    actual_purchases = customers["actual_purchases"].to_numpy(float)
    actual_revenue = customers["actual_revenue"].to_numpy(float)
    return {
        "predicted_purchases": float(purchases.sum()),
        "predicted_revenue": float(revenue.sum()),
        "mae_purchases": mae(purchases, actual_purchases),
        "rmse_purchases": rmse(purchases, actual_purchases),
        "mae_revenue": mae(revenue, actual_revenue),
        "rmse_revenue": rmse(revenue, actual_revenue),
        "spearman_revenue": spearman(revenue, actual_revenue),
        "top20_capture": top_capture(revenue, actual_revenue),
        "deciles": decile_table(revenue, actual_revenue, purchases, actual_purchases, customers.index),
    }


def winners(methods: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    """The best method per metric (lowest error, highest rank quality); the first listed wins a tie."""
    best: dict[str, str | None] = {}
    for metric in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER):
        scored = [(name, m[metric]) for name, m in methods.items() if m.get(metric) is not None]
        if not scored:
            best[metric] = None
            continue
        sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
        best[metric] = min(scored, key=lambda item: sign * item[1])[0]
    return best


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
    con: duckdb.DuckDBPyConnection,
    summary: pd.DataFrame,
    split: Split,
    days_per_unit: float,
    resolution: Resolution,
    seed: int,
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
    first_day, _ = log_span(con)
    features_as_of, window_days = gb_training_window(first_day, split)
    train_summary, targets = gb_training_data(con, features_as_of, split, window_days, days_per_unit, resolution)
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
    con: duckdb.DuckDBPyConnection,
    features_as_of: dt.date,
    split: Split,
    window_days: int,
    days_per_unit: float,
    resolution: Resolution,
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
            train_summary = summarize(con, features_as_of, days_per_unit, resolution)
            targets = holdout_purchases(con, features_as_of, split.calibration_end, resolution)
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
) -> dict[str, dict[str, Any]]:
    """Fit every purchase model on the calibration summary; log-likelihood, BIC and holdout error side by side.

    BIC = k ln(n) - 2 LL with k parameters and n customers. A model that fails to fit or predicts
    non-finite values gets an ``error`` entry instead of figures.

    Parameters
    ----------
    fitted
        Models already fitted on this summary (by name), reused instead of refitted.
    """
    comparison: dict[str, dict[str, Any]] = {}
    n = len(summary)
    for name in PURCHASE_MODELS:
        try:
            if name not in fitted:
                fitted[name] = purchase_model(name).fit(summary["frequency"], summary["recency"], summary["T"])
            model = fitted[name]
            expected = model.expected_purchases(holdout_length, summary["frequency"], summary["recency"], summary["T"])
            if not np.all(np.isfinite(expected)):
                raise FitError(
                    f"{model.title} predicts NaN or infinite purchases for "
                    f"{int((~np.isfinite(expected)).sum()):,} customers."
                )
        except FitError as exc:
            comparison[name] = {"error": str(exc)}
            continue
        result = model._result()
        k = len(model.param_names)
        comparison[name] = {
            "params": dict(result.params),
            "log_likelihood": result.log_likelihood,
            "parameters": k,
            "bic": k * math.log(n) - 2 * result.log_likelihood,
            "predicted_purchases": float(expected.sum()),
            "mae_purchases": mae(expected, actual_purchases),
            "rmse_purchases": rmse(expected, actual_purchases),
        }
    return comparison


def best_model(comparison: dict[str, dict[str, Any]]) -> str:
    """The purchase model with the lowest holdout purchase MAE.

    Raises
    ------
    FitError
        No model could be fitted.
    """
    usable = {name: entry["mae_purchases"] for name, entry in comparison.items() if "mae_purchases" in entry}
    if not usable:
        reasons = "; ".join(f"{name}: {entry['error']}" for name, entry in comparison.items())
        raise FitError(f"No purchase model could be fitted on the calibration period ({reasons}).")
    return min(usable, key=lambda name: usable[name])


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
    con: duckdb.DuckDBPyConnection,
    summary: pd.DataFrame,
    model: PurchaseModel,
    split: Split,
    days_per_unit: float,
    resolution: Resolution,
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
    moment = "CAST(ts AS DATE)" if resolution == "day" else "ts"
    # Repeat purchase moments (a customer's first purchase moment excluded) of customers acquired in calibration.
    repeat_days = con.execute(
        f"""
        WITH purchases AS (
            SELECT customer_id, {moment} AS moment FROM transactions
            WHERE ts < DATE '{(split.holdout_end + dt.timedelta(days=1)).isoformat()}'
            GROUP BY customer_id, {moment}
        ), ranked AS (
            SELECT customer_id, moment, min(moment) OVER (PARTITION BY customer_id) AS first_moment
            FROM purchases
        )
        SELECT CAST(moment AS DATE) AS day, count(*) AS purchases FROM ranked
        WHERE moment > first_moment
          AND first_moment < DATE '{(split.calibration_end + dt.timedelta(days=1)).isoformat()}'
        GROUP BY 1 ORDER BY 1"""
    ).df()
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


def run_backtest(
    con: duckdb.DuckDBPyConnection, config: RunConfig, calibration_end: dt.date, holdout_end: dt.date
) -> BacktestResult:
    """Fit on the calibration period, predict the holdout with every method, and score each one.

    Parameters
    ----------
    con
        DuckDB connection with the ``transactions`` relation (see ``forecast.data.ingest``).
    config
        Run configuration: time_unit, resolution, purchase_model (``auto`` picks the model with the lowest
        holdout purchase MAE) and the backtest seed.
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
            summary, customers = calibration_and_holdout(con, split, config)
        with _timed(timings, "model_fits"):
            actual_purchases = customers["actual_purchases"].to_numpy(float)
            fit = fit_calibration(summary, actual_purchases, holdout_length, config.purchase_model)
        predictions = [
            predictive_predictions(summary, fit.purchases, fit.spend, holdout_length),
            heuristic_predictions(summary, split.holdout_days(), config.days_per_unit),
        ]
        with _timed(timings, "gradient_boosting"):
            seed = config.backtest.seed if config.backtest else 0
            baseline = gradient_boosting_or_skip(con, summary, split, config, seed)
        if baseline.predictions is not None:
            predictions.append(baseline.predictions)
        customers = customers.join(pd.concat(predictions, axis=1))
        with _timed(timings, "tracking"):
            tracking = tracking_curve(con, summary, fit.purchases, split, config.days_per_unit, config.resolution)
    methods = ["predictive", "heuristic", *(["gradient_boosting"] if baseline.predictions is not None else [])]
    document = backtest_document(split, config, customers, methods, fit, baseline, tracking)
    document["warnings"] = messages
    return BacktestResult(split, customers, tracking, document, methods, messages, timings)


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Record the seconds the block takes under ``timings[step]`` (backtest.json's ``timings_seconds``)."""
    started = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - started


def calibration_and_holdout(
    con: duckdb.DuckDBPyConnection, split: Split, config: RunConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    _, last_day = log_span(con)
    if split.holdout_end > last_day:
        warnings.warn(
            f"The log ends on {last_day}, {(split.holdout_end - last_day).days} days before holdout_end "
            f"{split.holdout_end}: the holdout's actual purchases and revenue are understated. Set holdout_end to "
            "the last day with data or earlier.",
            ForecastWarning,
            stacklevel=3,
        )
    summary = summarize(con, split.calibration_end, config.days_per_unit, config.resolution)
    actual = holdout_purchases(con, split.calibration_end, split.holdout_end, config.resolution)
    actual = actual.reindex(summary.index)
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
    chosen: str  # the purchase model used: the configured one, or the lowest holdout MAE for "auto"
    purchases: PurchaseModel
    spend: GammaGamma
    comparison: dict[str, dict[str, Any]]  # ``compare_models``


def fit_calibration(
    summary: pd.DataFrame, actual_purchases: np.ndarray, holdout_length: float, configured: str
) -> CalibrationFit:
    """Fit the configured purchase model and Gamma-Gamma on the calibration summary, and compare every purchase
    model on the holdout; ``auto`` takes the one with the lowest holdout purchase MAE.

    Raises
    ------
    FitError
        The configured model (or, for ``auto``, every model) cannot be fitted.
    """
    fitted: dict[str, PurchaseModel] = {}
    if configured != "auto":
        fitted[configured], spend = fit_models(summary, configured)
    comparison = compare_models(summary, actual_purchases, holdout_length, fitted)
    if configured == "auto":
        chosen = best_model(comparison)
        spend = GammaGamma().fit(summary["frequency"], summary["monetary_value"])
    else:
        chosen = configured
    return CalibrationFit(configured, chosen, fitted[chosen], spend, comparison)


@dataclass(frozen=True)
class Baseline:
    """The gradient-boosting baseline's predictions and training window, or why it was skipped."""

    predictions: pd.DataFrame | None
    training: dict[str, Any] | None
    skipped: str | None


def gradient_boosting_or_skip(
    con: duckdb.DuckDBPyConnection, summary: pd.DataFrame, split: Split, config: RunConfig, seed: int
) -> Baseline:
    """The gradient-boosting baseline, or, when the calibration period is too short to train it, a warning and
    the reason it was skipped: the other methods are scored without it."""
    try:
        predictions, training = gradient_boosting_predictions(
            con, summary, split, config.days_per_unit, config.resolution, seed
        )
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
    """The content of backtest.json (without ``warnings`` and ``plots``): the split, every method's metrics and
    the winners, the model comparison, the conditional expectations and the tracking curve."""
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
        "purchase_model": {"configured": fit.configured, "used": fit.chosen},
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


def select_purchase_model(
    con: duckdb.DuckDBPyConnection, config: RunConfig, split: Split
) -> tuple[str, BacktestResult]:
    """Resolve ``purchase_model: auto``: backtest on the split and take the lowest holdout purchase MAE."""
    result = run_backtest(
        con, config.model_copy(update={"purchase_model": "auto"}), split.calibration_end, split.holdout_end
    )
    return str(result.document["purchase_model"]["used"]), result
