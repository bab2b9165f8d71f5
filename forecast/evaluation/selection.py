"""Choose the purchase model honestly: an internal validation inside the data up to a cut-off.

For each validation window (origin, origin + L] ending on or before the cut-off (the run's as_of, or a backtest's
calibration_end), every purchase model is fitted on the purchases up to the origin only and scored by the
predictive log-likelihood of what each customer then bought in the window:

    score = sum_i ln P(X_i(L) = n_i | x_i, t_x,i, T_i)   (``predictive_counts.log_count_probability``),

a proper score of the whole predictive distribution (level, spread and the share who buy nothing), per customer
acquired by the origin. ``purchase_model: auto`` takes the model with the highest score; a configured model that
scores clearly worse than another gets a ForecastWarning (``CLEARLY_WORSE_PER_1000`` and
``CLEARLY_WORSE_STANDARD_ERRORS``). Nothing after the cut-off is read, and no holdout that a backtest reports is
used. The windows are ``origins`` windows of ``window_days`` back to back before the cut-off, each at most a third
of the data's span; above ``max_customers`` customers at an origin, a fixed sample of them by id hash is fitted
and scored.

References
----------
Gneiting & Raftery (2007), "Strictly proper scoring rules, prediction, and estimation", JASA 102(477) (the
logarithmic score); Tashman (2000), "Out-of-sample tests of forecasting accuracy", IJF 16(4) (rolling origins).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from forecast.config import ModelSelectionConfig, RunConfig
from forecast.data.compress import sorted_unique_rows
from forecast.data.summary import Resolution, _purchases_sql
from forecast.errors import FitError, ForecastWarning, collected_warnings
from forecast.evaluation.predictive_counts import log_count_probability
from forecast.models import PURCHASE_MODELS, PurchaseModel, purchase_model

if TYPE_CHECKING:
    from forecast.evaluation.log_queries import LogQueries

#: A validation window is at most this share of the span from the first purchase to the cut-off, so that the fits
#: see at least twice as much history as they are scored on.
MAX_WINDOW_SHARE = 1.0 / 3.0
MIN_WINDOW_DAYS = 7
#: A configured model is "clearly worse" when it scores below the best by more than this many log-likelihood units
#: per 1,000 customers and by more than this many standard errors of that difference (paired over customers).
CLEARLY_WORSE_PER_1000 = 2.0
CLEARLY_WORSE_STANDARD_ERRORS = 2.0
#: ``auto`` uses this model when the data are too short or too small to validate any model.
FALLBACK_MODEL = "bgnbd"
#: Above ``max_customers`` a window's customers are sampled by id: those whose MD5 (as hexadecimal text) starts below
#: a threshold of this many digits. DuckDB and Spark compute the same MD5, so both engines take the same customers.
SAMPLE_DIGITS = 8
COUNT_COLUMNS = ["frequency", "recency", "T", "n", "customers"]


@dataclass(frozen=True)
class Window:
    """One validation window: fit on the purchases up to ``origin`` (inclusive), score (origin, end]."""

    origin: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.origin).days


@dataclass(frozen=True)
class WindowCounts:
    """The customers of one window, compressed: unique (frequency, recency, T at the origin; purchases n in the
    window) rows with the ``customers`` each stands for, sorted; and how many customers the origin had in all."""

    window: Window
    rows: pd.DataFrame
    customers_at_origin: int

    @property
    def sampled(self) -> bool:
        return int(self.rows["customers"].sum()) < self.customers_at_origin


@dataclass
class ModelScore:
    """One purchase model's validation: per-row log-likelihoods over every window's rows, or why it failed."""

    name: str
    log_likelihoods: np.ndarray | None = None
    predicted_purchases: float = 0.0
    params: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Selection:
    """The outcome: the model to use, why, and every model's score (``document`` is its JSON form)."""

    configured: str
    chosen: str
    cutoff: dt.date
    reason: str
    windows: list[dict[str, Any]]
    scores: dict[str, dict[str, Any]]
    clearly_better: str | None = None

    def document(self) -> dict[str, Any]:
        """The ``model_selection`` entry of manifest.json and backtest.json."""
        return {
            "configured": self.configured,
            "chosen": self.chosen,
            "reason": self.reason,
            "score": "predictive log-likelihood of each customer's purchases in the window (higher is better)",
            "cutoff": self.cutoff.isoformat(),
            "windows": self.windows,
            "scores": self.scores,
            "clearly_worse_rule": (
                f"behind the best by more than {CLEARLY_WORSE_PER_1000:g} per 1,000 customers and by more than "
                f"{CLEARLY_WORSE_STANDARD_ERRORS:g} standard errors"
            ),
        }


# --- windows and their counts ----------------------------------------------------------------------------


def validation_windows(first_day: dt.date, cutoff: dt.date, window_days: int, origins: int) -> list[Window]:
    """Up to ``origins`` windows of equal length back to back, the last ending on the cut-off.

    The length is ``window_days``, or a third of the span first_day .. cutoff when that is shorter
    (``MAX_WINDOW_SHARE``); windows whose origin would leave less history before it than the window's length are
    dropped. Empty when the span is too short for a window of ``MIN_WINDOW_DAYS``.
    """
    span = (cutoff - first_day).days
    length = min(window_days, math.floor(span * MAX_WINDOW_SHARE))
    if length < MIN_WINDOW_DAYS:
        return []
    windows = [Window(cutoff - dt.timedelta(days=k * length), cutoff - dt.timedelta(days=(k - 1) * length))
               for k in range(1, origins + 1)]  # fmt: skip
    return [w for w in windows if (w.origin - first_day).days >= length]


def window_counts_sql(window: Window, days_per_unit: float, resolution: Resolution, sample_share: float) -> str:
    """SQL of a window's compressed rows (``WindowCounts.rows``) from the ``transactions`` relation.

    frequency, recency and T are the summary's (``forecast.data.summary.summarize`` as of the origin, the same
    expressions); n counts the customer's purchases in (origin, end]. Nothing after ``end`` is read.
    """
    origin_end = window.origin + dt.timedelta(days=1)
    observation_end = window.origin if resolution == "day" else origin_end
    end_day_number = (observation_end - dt.date(1970, 1, 1)).days
    sample = ""
    if sample_share < 1.0:
        sample = f" AND substr(md5(customer_id), 1, {SAMPLE_DIGITS}) < '{sample_below(sample_share)}'"
    before = f"moment < DATE '{origin_end.isoformat()}'"
    return f"""
        WITH purchases AS ({_purchases_sql(window.end + dt.timedelta(days=1), resolution, [], sample)}),
        per_customer AS (
            SELECT count(*) FILTER (WHERE {before}) - 1 AS frequency,
                   epoch(min(moment)) / 86400.0 AS first_day,
                   epoch(max(moment) FILTER (WHERE {before})) / 86400.0 AS last_day,
                   count(*) FILTER (WHERE NOT ({before})) AS n
            FROM purchases GROUP BY customer_id HAVING min(moment) < DATE '{origin_end.isoformat()}'
        )
        SELECT CAST(frequency AS DOUBLE) AS frequency, (last_day - first_day) / {days_per_unit!r} AS recency,
               ({end_day_number} - first_day) / {days_per_unit!r} AS "T", CAST(n AS DOUBLE) AS n,
               CAST(count(*) AS DOUBLE) AS customers
        FROM per_customer GROUP BY ALL ORDER BY ALL"""


def window_counts(
    con: duckdb.DuckDBPyConnection, window: Window, days_per_unit: float, resolution: Resolution, max_customers: int
) -> WindowCounts:
    """A window's compressed customers from DuckDB, sampled by id above ``max_customers`` at the origin
    (``sample_share``, ``sample_below``: the same customers as on Spark)."""
    before = f"FROM transactions WHERE ts < DATE '{(window.origin + dt.timedelta(days=1)).isoformat()}'"
    row = con.execute(f"SELECT count(DISTINCT customer_id) {before}").fetchone()
    at_origin = int(row[0]) if row and row[0] else 0
    rows = con.execute(
        window_counts_sql(window, days_per_unit, resolution, sample_share(at_origin, max_customers))
    ).df()
    return WindowCounts(window, rows[COUNT_COLUMNS], at_origin)


def sample_share(at_origin: int, max_customers: int) -> float:
    """The share of a window's ``at_origin`` customers that its validation scores: all, up to ``max_customers``."""
    return min(1.0, max_customers / at_origin) if at_origin else 1.0


def sample_below(share: float) -> str:
    """The threshold of the id sample: a customer is in it when the first ``SAMPLE_DIGITS`` hexadecimal digits of
    the MD5 of its id sort below this text (about ``share`` of the customers)."""
    return f"{math.floor(share * 16**SAMPLE_DIGITS):0{SAMPLE_DIGITS}x}"


# --- scoring -------------------------------------------------------------------------------------------------


def fit_on_counts(name: str, counts: WindowCounts, penalizer: float = 0.0) -> PurchaseModel:
    """Fit a purchase model on a window's customers at its origin (their unique (x, t_x, T) rows and counts), with
    the run's ``penalizer`` (config ``penalizer.purchases``)."""
    rows = counts.rows
    unique, _, weights = sorted_unique_rows(
        {"frequency": rows["frequency"], "recency": rows["recency"], "T": rows["T"]}, rows["customers"].to_numpy(float)
    )
    model = purchase_model(name, penalizer)
    # A model whose fast fit fails is ruled out here, not refitted slowly; a model without a fast fit (MBG/NBD,
    # Pareto/NBD) is fitted by lifetimes, its only fitter.
    model.lifetimes_fallback = model.objective is None
    return model.fit_unique(unique["frequency"], unique["recency"], unique["T"], weights)


def score_model(name: str, tables: list[WindowCounts], days_per_unit: float, penalizer: float = 0.0) -> ModelScore:
    """Fit ``name`` at every window's origin and score the window's counts; a failure is recorded, not raised.

    The fits' own ForecastWarnings (a singular information matrix on a small window, ...) are kept as notes:
    they concern the validation fits, not the run's model.
    """
    score = ModelScore(name)
    parts = []
    try:
        with collected_warnings() as notes:
            for counts in tables:
                model = fit_on_counts(name, counts, penalizer)
                rows, t = counts.rows, counts.window.days / days_per_unit
                x, t_x, age, n = (rows[c].to_numpy(float) for c in ("frequency", "recency", "T", "n"))
                parts.append(log_count_probability(model, t, x, t_x, age, n))
                expected = model.expected_purchases(t, x, t_x, age)
                score.predicted_purchases += float(rows["customers"].to_numpy(float) @ expected)
                score.params.append(dict(model.params_))
    except FitError as exc:
        score.error = str(exc)
    score.notes = list(dict.fromkeys(notes))
    if score.error is None:
        score.log_likelihoods = np.concatenate(parts)
    return score


def score_table(scores: list[ModelScore], weights: np.ndarray) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Every model's score per 1,000 customers and its gap to the best with the gap's standard error.

    Returns
    -------
    (table, best)
        ``table``: model -> ``log_likelihood`` (total), ``per_1000_customers``, ``behind_best_per_1000``,
        ``standard_error_per_1000`` (of that gap, from the customers' paired differences), ``predicted_purchases``,
        ``params`` (one dict per window) and ``notes``; or ``error``. ``best``: the highest
        total, None when no model could be scored.
    """
    total = float(weights.sum())
    usable = {s.name: s.log_likelihoods for s in scores if s.log_likelihoods is not None}
    best = max(usable, key=lambda name: float(weights @ usable[name])) if usable else None
    table: dict[str, dict[str, Any]] = {}
    for s in scores:
        if s.log_likelihoods is None or best is None:
            table[s.name] = {"error": s.error}
            continue
        gap = usable[best] - s.log_likelihoods
        mean_gap = float(weights @ gap) / total
        variance = float(weights @ (gap - mean_gap) ** 2) / total
        table[s.name] = {
            "log_likelihood": float(weights @ s.log_likelihoods),
            "per_1000_customers": 1000.0 * float(weights @ s.log_likelihoods) / total,
            "behind_best_per_1000": 1000.0 * mean_gap,
            "standard_error_per_1000": 1000.0 * math.sqrt(variance / total),
            "predicted_purchases": s.predicted_purchases,
            "params": s.params,
            "notes": s.notes,
        }
    return table, best


def clearly_worse(entry: dict[str, Any]) -> bool:
    """Whether a model's gap to the best is beyond both thresholds (``CLEARLY_WORSE_*``)."""
    gap, error = entry.get("behind_best_per_1000"), entry.get("standard_error_per_1000")
    if gap is None or error is None:
        return False
    return bool(gap > CLEARLY_WORSE_PER_1000 and gap > CLEARLY_WORSE_STANDARD_ERRORS * error)


def choose(configured: str, cutoff: dt.date, tables: list[WindowCounts], scores: list[ModelScore]) -> Selection:
    """The model to use and why, from the models' scores on the windows' customers.

    ``auto`` takes the best score (BG/NBD when none could be scored, with a ForecastWarning); a configured model is
    kept, with a ForecastWarning when it is clearly worse than the best.
    """
    weights = np.concatenate([t.rows["customers"].to_numpy(float) for t in tables]) if tables else np.empty(0)
    table, best = score_table(scores, weights)
    windows = [window_entry(t) for t in tables]
    if best is None:
        why = "no validation window fits in the data" if not tables else "no purchase model could be scored"
        chosen = FALLBACK_MODEL if configured == "auto" else configured
        if configured == "auto":
            warnings.warn(
                f"purchase_model auto could not validate the models on the data up to {cutoff} ({why}) and uses "
                "BG/NBD. Use a "
                "longer log, or set purchase_model.",
                ForecastWarning,
                stacklevel=3,
            )
        return Selection(configured, chosen, cutoff, f"not validated: {why}", windows, table)
    chosen = best if configured == "auto" else configured
    reason = _reason(configured, best, table)
    worse = configured != "auto" and best != configured and clearly_worse(table.get(configured, {}))
    if worse:
        warnings.warn(
            f"The configured purchase_model {configured} scores clearly worse than {best} in the validation on the "
            f"data up to {cutoff}: {reason} Consider purchase_model: {best} (or auto).",
            ForecastWarning,
            stacklevel=3,
        )
    return Selection(configured, chosen, cutoff, reason, windows, table, best if worse else None)


def _reason(configured: str, best: str, table: dict[str, dict[str, Any]]) -> str:
    """One sentence: what the best model scored and how far behind the others were (the configured one named)."""
    others = sorted(
        (name for name, entry in table.items() if name != best and "per_1000_customers" in entry),
        key=lambda name: table[name]["behind_best_per_1000"],
    )
    gaps = "".join(
        f"; {name}{' (configured)' if name == configured else ''} {table[name]['behind_best_per_1000']:.1f} behind "
        f"(standard error {table[name]['standard_error_per_1000']:.1f})"
        for name in others
    )
    failed = "".join(f"; {name} not scored" for name, entry in table.items() if "per_1000_customers" not in entry)
    best_text = f"{best}{' (configured)' if best == configured else ''} scores highest"
    return f"{best_text}, {table[best]['per_1000_customers']:.1f} per 1,000 customers{gaps}{failed}."


def window_entry(counts: WindowCounts) -> dict[str, Any]:
    """A window's description for the documents."""
    rows = counts.rows
    return {
        "fit_through": counts.window.origin.isoformat(),
        "scored_through": counts.window.end.isoformat(),
        "days": counts.window.days,
        "customers": int(rows["customers"].sum()),
        "customers_at_origin": counts.customers_at_origin,
        "sampled": counts.sampled,
        "actual_purchases": float(rows["customers"].to_numpy(float) @ rows["n"].to_numpy(float)),
    }


# --- the validation on a DuckDB log --------------------------------------------------------------------------


def select_purchase_model(
    log: LogQueries, config: RunConfig, cutoff: dt.date, models: list[str] | None = None
) -> Selection:
    """Validate the purchase models inside the data up to ``cutoff`` and choose one (see the module docstring).

    Parameters
    ----------
    log
        The transaction log as an engine reads it (``forecast.evaluation.log_queries``), in ``config``'s time unit
        and resolution; only rows on or before ``cutoff`` are read.
    config
        Its ``purchase_model`` (``auto`` or a model's name), ``model_selection``, ``time_unit`` and ``resolution``.
    cutoff
        The last day the validation may see: a run's as_of, or a backtest's calibration_end.
    models
        The models compared (default every model of ``forecast.models.PURCHASE_MODELS``).

    Returns
    -------
    Selection
    """
    settings: ModelSelectionConfig = config.model_selection
    first_day = log.first_day_through(cutoff) or cutoff
    windows = validation_windows(first_day, cutoff, settings.window_days, settings.origins)
    tables = [log.window_counts(w, settings.max_customers) for w in windows]
    tables = [t for t in tables if len(t.rows)]
    penalizer = config.penalizer.purchases
    return select_on_counts(config.purchase_model, cutoff, tables, config.days_per_unit, models, penalizer)


def select_on_counts(
    configured: str,
    cutoff: dt.date,
    tables: list[WindowCounts],
    days_per_unit: float,
    models: list[str] | None = None,
    penalizer: float = 0.0,
) -> Selection:
    """Score every model on windows already counted (by any engine) and choose (``choose``); the fits take
    ``penalizer`` (config ``penalizer.purchases``)."""
    names = list(models or PURCHASE_MODELS)
    if configured != "auto" and configured not in names:
        names.append(configured)
    scores = [score_model(name, tables, days_per_unit, penalizer) for name in names] if tables else []
    return choose(configured, cutoff, tables, scores)
