"""Predictive CLV from the fitted models, and the marketing heuristic beside it.

Predictive CLV over H months, monthly discount rate d and margin m (DESIGN.md):

    CLV = sum_{k=1..H} m * E[spend | history] * (E[X(t_k)] - E[X(t_{k-1})]) / (1 + d)^k,

with t_k = k months expressed in model time units (a month is 365.25 / 12 days).

Heuristic CLV (the formula in the seed articles): average purchase value x purchases per year
x expected lifespan in years x margin.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from forecast.compress import unique_with_counts
from forecast.config import DAYS_PER_MONTH, DAYS_PER_YEAR
from forecast.errors import FitError
from forecast.estimators import GammaGamma, PurchaseModel

PREDICTION_COLUMNS = ["p_alive", "expected_purchases", "expected_spend", "clv"]


def month_ends(horizon_months: int, days_per_unit: float) -> np.ndarray:
    """Times t_0 = 0, t_1, ..., t_H of the month ends over the horizon, in model time units."""
    return np.arange(horizon_months + 1) * DAYS_PER_MONTH / days_per_unit


def discount_factors(horizon_months: int, monthly_discount_rate: float) -> np.ndarray:
    """1 / (1 + d)^k for the months k = 1..H."""
    return 1.0 / (1.0 + monthly_discount_rate) ** np.arange(1, horizon_months + 1)


def discounted_purchases(
    model: PurchaseModel,
    frequency: np.ndarray,
    recency: np.ndarray,
    T: np.ndarray,
    horizon_months: int,
    monthly_discount_rate: float,
    days_per_unit: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected purchases over the horizon, plain and discounted month by month.

    Returns
    -------
    (expected, discounted)
        Arrays of the customers' expected purchases E[X(t_H)] and of
        sum_k (E[X(t_k)] - E[X(t_{k-1})]) / (1 + d)^k.
    """
    times = month_ends(horizon_months, days_per_unit)
    cumulative = np.column_stack(
        [np.zeros(len(frequency))] + [model.expected_purchases(t, frequency, recency, T) for t in times[1:]]
    )
    monthly = np.diff(cumulative, axis=1)
    return cumulative[:, -1], monthly @ discount_factors(horizon_months, monthly_discount_rate)


def score_customers(
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    horizon_months: int,
    monthly_discount_rate: float,
    margin: float,
    days_per_unit: float,
) -> pd.DataFrame:
    """Predict each customer's activity, purchases, spend and CLV over the horizon.

    The purchase model is evaluated once per unique (frequency, recency, T) row.

    Parameters
    ----------
    summary
        Output of ``forecast.rfm.summarize`` (indexed by customer_id).
    horizon_months
        Forecast horizon in months.
    monthly_discount_rate
        Discount rate per month (0.01 = 1%).
    margin
        Gross margin as a fraction of spend.
    days_per_unit
        Days in one unit of model time.

    Returns
    -------
    pandas.DataFrame
        Indexed by customer_id with p_alive, expected_purchases (over the horizon), expected_spend
        (per purchase, currency) and clv (discounted, at margin, currency).

    Raises
    ------
    FitError
        A prediction is NaN or infinite (for example Pareto/NBD for very heavy buyers).
    """
    codes, unique = unique_rows_codes(summary[["frequency", "recency", "T"]])
    frequency, recency, T = (unique[:, i] for i in range(3))
    p_alive = purchases.p_alive(frequency, recency, T)
    expected, discounted = discounted_purchases(
        purchases, frequency, recency, T, horizon_months, monthly_discount_rate, days_per_unit
    )
    expected_spend = spend.expected_spend(summary["frequency"].to_numpy(), summary["monetary_value"].to_numpy())
    scores = pd.DataFrame(
        {
            "p_alive": p_alive[codes],
            "expected_purchases": expected[codes],
            "expected_spend": expected_spend,
            "clv": margin * expected_spend * discounted[codes],
        },
        index=summary.index,
    )
    require_finite(scores, f"The {purchases.title} x Gamma-Gamma predictions")
    return scores


def unique_rows_codes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of a numeric frame and, for every row, the position of its unique row."""
    unique, codes, _ = unique_with_counts({str(name): frame[name].to_numpy() for name in frame.columns})
    return codes, unique.to_numpy()


def require_finite(frame: pd.DataFrame, what: str) -> None:
    """Raise if any numeric value is NaN or infinite, naming the column and a few customers."""
    numeric = frame.select_dtypes("number")
    bad = ~np.isfinite(numeric.to_numpy(dtype=float))
    if bad.any():
        rows, cols = np.nonzero(bad)
        columns = sorted({str(numeric.columns[int(c)]) for c in cols})
        examples = ", ".join(str(label) for label in numeric.index[np.unique(rows)[:5]].tolist())
        raise FitError(
            f"{what} are NaN or infinite for {len(np.unique(rows)):,} customers (columns {', '.join(columns)}; "
            f"customers {examples}). Try purchase_model: bgnbd, which stays finite for heavy buyers, or check "
            "those customers' transactions."
        )


def heuristic_clv(
    avg_purchase_value: float | np.ndarray | pd.Series,
    purchases_per_year: float | np.ndarray | pd.Series,
    lifespan_years: float,
    margin: float = 1.0,
) -> float | np.ndarray | pd.Series:
    """The marketing heuristic: average purchase value x purchases per year x lifespan x margin.

    Examples
    --------
    >>> heuristic_clv(1_000, 6, 5)
    30000.0
    """
    return avg_purchase_value * purchases_per_year * float(lifespan_years) * margin


def heuristic_inputs(summary: pd.DataFrame, days_per_unit: float) -> pd.DataFrame:
    """Each customer's average purchase value and repeat purchases per year, the heuristic's inputs.

    The average purchase value is revenue to date over purchases (the first one included);
    purchases per year is repeat purchases over the years since the first purchase (0 when that is 0),
    the naive rate x / T of Fader, Hardie & Lee (2005).

    Returns
    -------
    pandas.DataFrame
        Indexed by customer_id, columns avg_purchase_value and purchases_per_year.
    """
    years = summary["T"].to_numpy(float) * days_per_unit / DAYS_PER_YEAR
    frequency = summary["frequency"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(years > 0, frequency / years, 0.0)
    return pd.DataFrame(
        {"avg_purchase_value": summary["revenue"].to_numpy(float) / (frequency + 1), "purchases_per_year": rate},
        index=summary.index,
    )


def observed_lifespan_years(summary: pd.DataFrame, as_of: dt.date) -> float:
    """Expected customer lifespan in years, 1 / annual churn, from the churn seen in the data.

    Churn over a window w (12 months, or half the observed span when that is shorter) is the share of
    customers acquired before as_of - w who made no purchase in the last w. It is converted to an annual
    rate assuming constant retention: retention_year = (1 - churn_w)^(1 year / w).

    Raises
    ------
    FitError
        Too short a history, or no churn at all, to estimate a lifespan: set heuristic.lifespan_years.
    """
    first = pd.to_datetime(summary["first_purchase"])
    last = pd.to_datetime(summary["last_purchase"])
    window_days, cutoff = churn_window(first.min().date(), as_of)
    cohort = first < cutoff
    return lifespan_from_churn(float((last[cohort] < cutoff).mean()), window_days, cutoff)


def churn_window(first_purchase: dt.date, as_of: dt.date) -> tuple[float, pd.Timestamp]:
    """The churn window (12 months, or half the observed span when shorter) and its start, the cutoff."""
    span_days = (as_of - first_purchase).days
    window_days = min(DAYS_PER_YEAR, span_days / 2)
    if window_days < 28:
        raise FitError(
            f"The data covers {span_days} days, too short to estimate customer lifespan from churn. "
            "Set heuristic.lifespan_years to a number of years."
        )
    return window_days, pd.Timestamp(as_of) - pd.Timedelta(days=window_days)


def lifespan_from_churn(churned: float, window_days: float, cutoff: pd.Timestamp) -> float:
    """1 / annual churn, from the share of the cohort that churned over the window (constant retention)."""
    if not 0 < churned < 1:
        raise FitError(
            f"{churned:.0%} of the customers acquired before {cutoff.date()} churned, so a lifespan cannot be "
            "estimated. Set heuristic.lifespan_years to a number of years."
        )
    annual_retention = (1 - churned) ** (DAYS_PER_YEAR / window_days)
    return 1.0 / (1.0 - annual_retention)


def _labels_sorted(index: pd.Index) -> bool:
    """Whether the labels are in ascending order, compared in Arrow for Arrow strings (no Python objects)."""
    values = index.array
    if isinstance(values, pd.arrays.ArrowStringArray) and len(values) > 1:
        import pyarrow as pa
        import pyarrow.compute as pc

        labels = pa.chunked_array(pa.array(values))
        return not index.hasnans and bool(pc.all(pc.greater_equal(labels[1:], labels[:-1])).as_py())
    return bool(index.is_monotonic_increasing)


def assign_tiers(clv: pd.Series, tiers: dict[str, float]) -> pd.Series:
    """Value tiers by predictive CLV: the first tier gets the top share of customers, and so on.

    Ties are broken by customer id so that the assignment is reproducible.

    Returns
    -------
    pandas.Series
        Ordered categorical named ``segment``, indexed like ``clv``.
    """
    if _labels_sorted(clv.index):
        # Ids already in order (the summary is sorted): a stable sort on -clv breaks ties by id, without
        # comparing millions of strings.
        ranked = np.argsort(-clv.to_numpy(dtype=float), kind="stable")
    else:
        ranked = (
            pd.DataFrame({"clv": clv.to_numpy(), "id": clv.index.astype(str)})
            .sort_values(["clv", "id"], ascending=[False, True], kind="stable")
            .index.to_numpy()
        )
    bounds = np.cumsum(list(tiers.values())) * len(clv)
    positions = np.empty(len(clv), dtype=int)
    positions[ranked] = np.arange(len(clv))
    codes = np.searchsorted(bounds, positions, side="right").clip(max=len(tiers) - 1)
    labels = pd.Categorical.from_codes(codes.astype(np.int64), categories=pd.Index(list(tiers)), ordered=True)
    return pd.Series(labels, index=clv.index, name="segment")
