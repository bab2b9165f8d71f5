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

Lifetime CLV (``clv_lifetime``) is the same sum over every future month, k = 1, 2, ... without end: month k is
discounted at 1 / (1 + d)^k for every model, so its first H terms are the H-month CLV. The monthly increments are
summed exactly up to at least 24 months (and every span asked for), then by blocks of doubling length whose
E[X(t) | alive] is interpolated at Chebyshev points (``discounted_purchases_if_alive``), until the discounted tail
left out is below ``LIFETIME_TOLERANCE`` of the sum. Pareto/NBD also has the closed form of Fader, Hardie & Lee
(2005, "RFM and CLV") for continuous discounting (``pareto_nbd_dert``), which the monthly sum is checked against.

Heuristic CLV (the formula in the seed articles): average purchase value x purchases per year
x expected lifespan in years x margin.

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", eq. (10) and (13);
Fader, Hardie & Lee (2005), "RFM and CLV: Using iso-value curves for customer base analysis", JMR 42(4), eq. (2);
Fader & Hardie (2013), "The Gamma-Gamma model of monetary value" (the expected spend per purchase).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.special import hyperu

from forecast.config import DAYS_PER_MONTH, DAYS_PER_YEAR
from forecast.data.compress import Histories, SpendHistories, row_chunks, take
from forecast.errors import FitError, ForecastWarning
from forecast.models import GammaGamma, ParetoNBD, PurchaseModel
from forecast.value.valuation import Valuation

PREDICTION_COLUMNS = ["p_alive", "expected_purchases", "expected_spend", "clv"]
#: The per-customer columns of ``score_lifetime``: CLV over every future month, and over the heuristic's span.
LIFETIME_COLUMNS = ["clv_lifetime", "clv_matched"]
#: Relative bound on the discounted expected purchases that a lifetime sum leaves out after its last month.
LIFETIME_TOLERANCE = 1e-10
#: Longest horizon of a lifetime sum (2,000 years): a sum whose tail bound is not met by then is left empty (NaN).
LIFETIME_MAX_MONTHS = 24_000
#: Months a lifetime sum adds up one by one (and at least every span asked for) before it goes on by blocks.
EXACT_MONTHS = 24
#: Chebyshev points of a block (both ends included; the first is the last point of the block before).
BLOCK_POINTS = 17


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


def score_lifetime(
    scores: pd.DataFrame, histories: Histories, valuation: Valuation, sums: tuple[np.ndarray, np.ndarray]
) -> pd.DataFrame:
    """Each customer's CLV over every future month and over the heuristic's span, discounted monthly.

    Both are m x E[spend] x P(alive) x (discounted purchases if alive), the products of ``score_customers``' clv,
    with the discounted purchases of ``discounted_purchases_if_alive`` evaluated once per unique (x, T) pair.

    Parameters
    ----------
    scores
        ``score_customers``' output for the same customers (its p_alive and expected_spend are used).
    histories
        The customers' unique histories (``Histories.from_summary``), in the order of ``scores``.
    valuation
        Margin of the CLV (and the discount rate, named in the warning).
    sums
        ``discounted_purchases_if_alive(purchases, histories.pairs, valuation, [span_months])``, with the span of
        clv_matched (the heuristic's lifespan, ``forecast.value.comparison.matched_span_months``).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``scores``, with clv_lifetime (every future month) and clv_matched (the first span_months
        months), currency at margin. clv_lifetime is NaN for everybody, with a warning, when the lifetime sum does
        not converge within ``LIFETIME_MAX_MONTHS`` (a monthly discount rate of 0, or nearly).
    """
    over_span, lifetime = sums
    if not np.isfinite(lifetime).all():
        warnings.warn(
            f"clv_lifetime is left empty: at a monthly discount rate of {valuation.monthly_discount_rate:.4%} the sum "
            f"of discounted future purchases has not converged within {LIFETIME_MAX_MONTHS // 12:,} years (without "
            "discounting it may be infinite). Set monthly_discount_rate to a positive rate (0.01 is 12.7% a year) to "
            "value customers' lifetimes.",
            ForecastWarning,
            stacklevel=2,
        )
        lifetime = np.full(len(lifetime), np.nan)
    spend = scores["expected_spend"].to_numpy(float)
    alive = scores["p_alive"].to_numpy(float)
    columns = {
        name: _per_customer(of_pair[histories.pair_of_row], histories.row_of_customer, spend, alive, valuation.margin)
        for name, of_pair in (("clv_lifetime", lifetime), ("clv_matched", over_span[:, 0]))
    }
    return pd.DataFrame(columns, index=scores.index, copy=False)


def _per_customer(
    of_row: np.ndarray, row_of_customer: np.ndarray, spend: np.ndarray, alive: np.ndarray, margin: float
) -> np.ndarray:
    """margin x spend x alive x of_row[row_of_customer], multiplied in place by chunks (``score_customers``)."""
    values = np.multiply(margin, spend)
    values *= alive
    for part in row_chunks(len(values)):
        values[part] *= np.take(of_row, row_of_customer[part], mode="wrap")
    return values


def discounted_purchases_if_alive(
    model: PurchaseModel, pairs: np.ndarray, valuation: Valuation, spans: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Discounted expected purchases of a customer alive at T, over given spans and over every future month.

    Month k's expected purchases, E[X(t_k) | alive] - E[X(t_{k-1}) | alive], are discounted at 1 / (1 + d)^k, as
    in the H-month CLV. They are added up one by one over the first max(24, spans) months; the lifetime sum then
    goes on by blocks of months [a, 2a] (``_block_sum``) until, for every pair, the tail bound
    (E[X(t_b)] - E[X(t_a)]) / (b - a) x v^(b + 1) / (1 - v), v = 1 / (1 + d), is at most ``LIFETIME_TOLERANCE``
    of the sum. The bound holds because E[X(t) | alive] is concave in t (a customer buys at a constant rate while
    alive and never comes back), so a month's purchases are at most the mean of any earlier month's.

    Parameters
    ----------
    model
        Fitted purchase model.
    pairs
        Unique (frequency, T) pairs, one per row (``Histories.pairs``).
    valuation
        Monthly discount rate and time unit (the horizon and the margin are not used).
    spans
        Numbers of months to return the sums over (each at least 1).

    Returns
    -------
    (over_spans, lifetime)
        Shape (pairs, len(spans)): sum_{k=1..span} (E[X(t_k) | alive] - E[X(t_{k-1}) | alive]) / (1 + d)^k; and
        shape (pairs,): the same sum over k = 1, 2, ..., NaN where the tail bound is not met within
        ``LIFETIME_MAX_MONTHS`` months (always when d = 0).
    """
    x, T = pairs[:, 0], pairs[:, 1]
    alive = model.p_alive(x, T, T)
    month = DAYS_PER_MONTH / valuation.days_per_unit

    def if_alive(months: float) -> np.ndarray:
        return model.expected_purchases(months * month, x, T, T) / alive

    v = 1.0 / (1.0 + valuation.monthly_discount_rate)
    exact = max([EXACT_MONTHS, *spans])
    over_spans = np.empty((len(x), len(spans)))
    total, before = np.zeros(len(x)), np.zeros(len(x))
    for k in range(1, exact + 1):
        now = if_alive(k)
        total += (now - before) * v**k
        before = now
        for i, span in enumerate(spans):
            if span == k:
                over_spans[:, i] = total
    return over_spans, _lifetime_sum(if_alive, exact, before, total, v)


def _lifetime_sum(
    if_alive: Callable[[float], np.ndarray], start: int, at_start: np.ndarray, total: np.ndarray, v: float
) -> np.ndarray:
    """Add the discounted months after ``start`` to ``total`` by doubling blocks until the tail bound is met.

    A block's points are as many as its share of the sum needs: the previous tail bound over the sum (1 for the
    first block) bounds that share, and the interpolation error falls like 5.8^-n (``_block_sum``).
    """
    if v >= 1.0:
        return np.full(len(total), np.nan)  # undiscounted: the lifetime sum may be infinite
    lifetime, a, at_a, share = total.copy(), start, at_start, 1.0
    while True:
        b = 2 * a
        points = min(BLOCK_POINTS, 3 + math.ceil(math.log(max(10 * share / LIFETIME_TOLERANCE, 1.0)) / math.log(5.8)))
        block, at_b = _block_sum(if_alive, a, b, at_a, v, points)
        lifetime += block
        tail_bound = (at_b - at_a) / (b - a) * v ** (b + 1) / (1.0 - v)
        converged = tail_bound <= LIFETIME_TOLERANCE * lifetime
        if converged.all():
            return lifetime
        if b >= LIFETIME_MAX_MONTHS:
            return np.where(converged, lifetime, np.nan)
        a, at_a, share = b, at_b, float(np.max(tail_bound / np.maximum(lifetime, np.finfo(float).tiny)))


def _block_sum(
    if_alive: Callable[[float], np.ndarray], a: int, b: int, at_a: np.ndarray, v: float, points: int
) -> tuple[np.ndarray, np.ndarray]:
    """sum_{k=a+1..b} (F(k) - F(k-1)) v^k for F(k) = E[X(t_k) | alive], with F the polynomial through its values at
    ``points`` Chebyshev-Lobatto points of [a, b] months; returns the sum and F(b).

    F is analytic off the real half-line t <= 0 (its singularity is at t = -(alpha + T) or -(beta + T)), at least
    a block's length away from [a, 2a]: the interpolant converges like 5.8^-n (Bernstein ellipse of 3 + 8^0.5),
    below 1e-12 of the block at 17 points. The weights of the values, sum_k v^k (l_j(k) - l_j(k - 1)) with l_j the
    Lagrange basis, are the same for every pair.
    """
    nodes = (a + b) / 2 - (b - a) / 2 * np.cos(np.pi * np.arange(points) / (points - 1))
    nodes[0], nodes[-1] = a, b
    values = np.vstack([at_a, *(if_alive(float(t)) for t in nodes[1:])])
    basis = _lagrange_basis(nodes, np.arange(a, b + 1, dtype=float))
    weights = v ** np.arange(a + 1, b + 1) @ np.diff(basis, axis=0)
    return weights @ values, values[-1]


def _lagrange_basis(nodes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The Lagrange basis of Chebyshev-Lobatto ``nodes`` at ``points``, shape (points, nodes), in barycentric form.

    References
    ----------
    Berrut & Trefethen (2004), "Barycentric Lagrange interpolation", SIAM Review 46(3), eq. (4.2) and (5.2).
    """
    weights = (-1.0) ** np.arange(len(nodes))
    weights[[0, -1]] /= 2
    gaps = points[:, None] - nodes[None, :]
    on_node = gaps == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = weights / gaps
        basis = terms / terms.sum(axis=1, keepdims=True)
    hit = on_node.any(axis=1)
    basis[hit] = on_node[hit]
    return basis


def continuous_discount_rate(valuation: Valuation) -> float:
    """The continuous discount rate per model time unit equivalent to the monthly rate: ln(1 + d) x unit / month.

    delta = ln(1 + d) x days_per_unit / (365.25 / 12), which is also ln(1 + annual rate) per year with
    1 + annual rate = (1 + d)^12: e^(-delta t) equals 1 / (1 + d)^k at the end of month k.

    Examples
    --------
    >>> round(continuous_discount_rate(Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=1.0,
    ...                                          days_per_unit=7.0)), 8)
    0.00228837
    """
    return math.log1p(valuation.monthly_discount_rate) * valuation.days_per_unit / DAYS_PER_MONTH


def pareto_nbd_dert(
    model: ParetoNBD, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, delta: float
) -> np.ndarray:
    """Discounted expected residual transactions of Pareto/NBD, continuous discounting, in closed form.

    DERT = integral_0^inf e^(-delta t) dE[X(t) | x, t_x, T]
         = alpha^r beta^s delta^(s - 1) Gamma(r + x + 1) U(s, s; delta (beta + T))
           / (Gamma(r) (alpha + T)^(r + x + 1) L(r, alpha, s, beta | x, t_x, T)),
    evaluated as P(alive) (r + x) / (alpha + T) (beta + T) z^(s - 1) U(s, s; z), z = delta (beta + T), which is
    the same (P(alive) = Gamma(r + x) alpha^r beta^s / (Gamma(r) (alpha + T)^(r + x) (beta + T)^s L)), with the
    model's stable P(alive). U is the confluent hypergeometric function of the second kind (scipy's hyperu).

    Parameters
    ----------
    model
        Fitted Pareto/NBD model.
    frequency, recency, T
        The customers' histories (repeat purchases, model time units).
    delta
        Continuous discount rate per model time unit (``continuous_discount_rate``; BTYD's example: 0.15 / 52
        a week), positive.

    Returns
    -------
    numpy.ndarray
        DERT per customer (purchases, discounted to T).

    References
    ----------
    Fader, Hardie & Lee (2005), "RFM and CLV: Using iso-value curves for customer base analysis", Journal of
    Marketing Research 42(4), eq. (2); R BTYD ``pnbd.DERT`` (agrees to 1e-14, docs/REFERENCE values).
    """
    r, alpha, s, beta = (model.params_[k] for k in ("r", "alpha", "s", "beta"))
    x, T = np.asarray(frequency, float), np.asarray(T, float)
    z = delta * (beta + T)
    alive = model.p_alive(x, recency, T)
    return np.asarray(alive * (r + x) / (alpha + T) * (beta + T) * z ** (s - 1) * hyperu(s, s, z), dtype=float)


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
