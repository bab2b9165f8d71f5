"""Predictive CLV from the fitted models, and the marketing heuristic beside it.

Predictive CLV over H months, monthly discount rate d and margin m (``Valuation``; docs/reference.md):

    CLV = sum_{k=1..H} m * E[spend | history] * (E[X(t_k)] - E[X(t_{k-1})]) / (1 + d)^k,

with t_k = k months expressed in model time units (a month is 365.25 / 12 days).

The purchase models' expectations factorise as

    E[X(t) | x, t_x, T] = P(alive at T | x, t_x, T) * E[X(t) | alive at T, x, T],

because a customer known to be alive at T has the posterior lambda ~ Gamma(r + x, alpha + T) and, for
BG/NBD, p ~ Beta(a, b + x) (MBG/NBD: Beta(a, b + x + 1); Pareto/NBD: mu ~ Gamma(s, beta + T)), none of
which depends on t_x. So the H monthly expectations are evaluated once per unique (x, T) pair, far fewer
than the customers, and P(alive) once per unique (x, t_x, T) row, however many customers there are.

Heuristic CLV (the formula in the seed articles): average purchase value x purchases per year
x expected lifespan in years x margin.

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", eq. (10) and (13);
Fader & Hardie (2013), "The Gamma-Gamma model of monetary value" (the expected spend per purchase).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from forecast.config import DAYS_PER_YEAR
from forecast.data.compress import Histories, SpendHistories, row_chunks, take
from forecast.errors import FitError
from forecast.models import GammaGamma, PurchaseModel
from forecast.value.valuation import Valuation

PREDICTION_COLUMNS = ["p_alive", "expected_purchases", "expected_spend", "clv"]


def discounted_purchases(
    model: PurchaseModel, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, valuation: Valuation
) -> tuple[np.ndarray, np.ndarray]:
    """Expected purchases over the horizon, plain and discounted month by month, evaluated per customer.

    The direct formula; ``score_customers`` evaluates its factorised form (module docstring).

    Parameters
    ----------
    model
        Fitted purchase model.
    frequency, recency, T
        The customers' histories (repeat purchases, model time units).
    valuation
        Horizon, discount rate and time unit (the margin is not used).

    Returns
    -------
    (expected, discounted)
        Arrays of the customers' expected purchases E[X(t_H)] and of
        sum_k (E[X(t_k)] - E[X(t_{k-1})]) / (1 + d)^k.
    """
    times = valuation.month_ends()
    cumulative = np.column_stack(
        [np.zeros(len(frequency))] + [model.expected_purchases(t, frequency, recency, T) for t in times[1:]]
    )
    monthly = np.diff(cumulative, axis=1)
    return cumulative[:, -1], monthly @ valuation.discount_factors()


def purchases_if_alive(model: PurchaseModel, pairs: np.ndarray, valuation: Valuation) -> tuple[np.ndarray, np.ndarray]:
    """Expected purchases over the horizon of a customer alive at T, plain and discounted, per (x, T) pair.

    Computed as E[X(t) | x, t_x = T, T] / P(alive | x, t_x = T, T), which by the factorisation in the module
    docstring equals E[X(t) | alive at T, x, T] for any t_x.

    Parameters
    ----------
    model
        Fitted purchase model.
    pairs
        Unique (frequency, T) pairs, one per row (``Histories.pairs``).
    valuation
        Horizon, discount rate and time unit (the margin is not used).

    Returns
    -------
    (expected, discounted)
        E[X(t_H) | alive] and sum_k (E[X(t_k) | alive] - E[X(t_{k-1}) | alive]) / (1 + d)^k, per pair.
    """
    x, T = pairs[:, 0], pairs[:, 1]
    times = valuation.month_ends()[1:]
    alive = model.p_alive(x, T, T)
    cumulative = np.column_stack([np.zeros(len(x))] + [model.expected_purchases(t, x, T, T) for t in times])
    cumulative /= alive[:, None]
    discounted = np.diff(cumulative, axis=1) @ valuation.discount_factors()
    return cumulative[:, -1], np.asarray(discounted)


def score_customers(
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    valuation: Valuation,
    histories: Histories | None = None,
    spend_histories: SpendHistories | None = None,
) -> pd.DataFrame:
    """Predict each customer's activity, purchases, spend and CLV over the horizon.

    P(alive) is evaluated once per unique (frequency, recency, T) row, the monthly expectations once per
    unique (frequency, T) pair (the factorisation in the module docstring) and the expected spend once per
    unique (frequency, monetary_value) history.

    Parameters
    ----------
    summary
        Output of ``forecast.data.summary.summarize`` (indexed by customer_id).
    purchases, spend
        The fitted purchase model and Gamma-Gamma model.
    valuation
        Horizon, monthly discount rate, margin and time unit of the CLV.
    histories, spend_histories
        The summary's unique histories, if already computed (``Histories.from_summary``,
        ``SpendHistories.from_summary``).

    Returns
    -------
    pandas.DataFrame
        Indexed by customer_id with p_alive, expected_purchases (over the horizon), expected_spend
        (per purchase, currency) and clv (discounted, at margin, currency).

    Raises
    ------
    FitError
        A prediction is NaN or infinite (a degenerate fit, or a history no model formula can evaluate).
    """
    if histories is None:
        histories = Histories.from_summary(summary)
    if spend_histories is None:
        spend_histories = SpendHistories.from_summary(summary)
    frequency, recency, T = (histories.rows[:, i] for i in range(3))
    p_alive = purchases.p_alive(frequency, recency, T)
    expected, discounted = purchases_if_alive(purchases, histories.pairs, valuation)
    rows = histories.row_of_customer
    # Each column is gathered from its per-row values straight into its own array, and the CLV is multiplied
    # in place by chunks: the products are those of margin * expected_spend * (p_alive * discounted)[rows].
    expected_spend = take(spend.expected_spend(*spend_histories.rows.T), spend_histories.row_of_customer)
    clv = np.multiply(valuation.margin, expected_spend)
    discounted_of_row = p_alive * discounted[histories.pair_of_row]
    for part in row_chunks(len(clv)):
        clv[part] *= np.take(discounted_of_row, rows[part], mode="wrap")
    scores = pd.DataFrame(
        {
            "p_alive": take(p_alive, rows),
            "expected_purchases": take(p_alive * expected[histories.pair_of_row], rows),
            "expected_spend": expected_spend,
            "clv": clv,
        },
        index=summary.index,
        copy=False,
    )
    require_finite(scores, f"The {purchases.title} x Gamma-Gamma predictions")
    return scores


def require_finite(frame: pd.DataFrame, what: str) -> None:
    """Raise if any numeric value is NaN or infinite, naming the column and a few customers."""
    numeric = frame.select_dtypes("number")
    bad_columns = [c for c in numeric.columns if not np.isfinite(numeric[c].to_numpy(dtype=float)).all()]
    if bad_columns:
        bad = ~np.isfinite(numeric[bad_columns].to_numpy(dtype=float))
        rows = np.flatnonzero(bad.any(axis=1))
        examples = ", ".join(str(label) for label in numeric.index[rows[:5]].tolist())
        columns = ", ".join(sorted(map(str, bad_columns)))
        raise FitError(
            f"{what} are NaN or infinite for {len(rows):,} customers (columns {columns}; "
            f"customers {examples}). Check those customers' transactions (a shared or test account?), or try "
            "another purchase_model."
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
    # In place, on the function's own arrays: the same operations as (T * days_per_unit) / DAYS_PER_YEAR,
    # where(years > 0, frequency / years, 0) and revenue / (frequency + 1), without their temporaries.
    rate = np.multiply(summary["T"].to_numpy(float), days_per_unit)
    rate /= DAYS_PER_YEAR
    frequency = summary["frequency"].to_numpy(dtype=float, copy=True)
    positive = rate > 0
    np.divide(frequency, rate, out=rate, where=positive)
    rate[~positive] = 0.0
    del positive
    frequency += 1
    average = np.divide(summary["revenue"].to_numpy(float), frequency, out=frequency)
    return pd.DataFrame({"avg_purchase_value": average, "purchases_per_year": rate}, index=summary.index, copy=False)


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


def assign_tiers(clv: pd.Series, tiers: dict[str, float]) -> pd.Series:
    """Value tiers by predictive CLV: the first tier gets the top share of customers, and so on.

    Ties are broken by customer id (compared as text) so that the assignment is reproducible.

    Returns
    -------
    pandas.Series
        Ordered categorical named ``segment``, indexed like ``clv``.
    """
    values = clv.to_numpy(dtype=float)
    # The customer ranked r (0 = highest CLV) falls in tier #{bounds <= r}: a customer is past bound b when
    # it is not among the ceil(b) highest. One partition finds every cut value, without sorting everybody.
    bounds = np.cumsum(list(tiers.values()))[:-1] * len(values)
    tops = np.clip(np.ceil(bounds), 0, len(values)).astype(int)
    inner = [len(values) - top for top in tops if 0 < top < len(values)]
    partitioned = np.partition(values, inner) if inner else values
    codes = np.zeros(len(values), dtype=np.int8)
    for top in tops:
        if top == 0:
            codes += 1
        elif top < len(values):
            codes += ~_highest(values, int(top), partitioned[len(values) - top], clv.index)
    labels = pd.Categorical.from_codes(codes, categories=pd.Index(list(tiers)), ordered=True)
    return pd.Series(labels, index=clv.index, name="segment")


def _highest(values: np.ndarray, count: int, cut: float, ids: pd.Index) -> np.ndarray:
    """Mark the ``count`` highest values, ``cut`` being the lowest of them; ties at the cut go by id as text."""
    chosen = values > cut
    tied = np.flatnonzero(values == cut)
    wanted = count - int(chosen.sum())
    if len(tied) > wanted:
        order = pd.Index(ids[tied]).astype(str).argsort(kind="stable")
        tied = tied[np.sort(order[:wanted])]
    chosen[tied] = True
    return chosen
