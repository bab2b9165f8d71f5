"""Intervals for the CLV figures: the parameters' sampling uncertainty carried through to every figure.

Each model's maximum-likelihood log-parameters are asymptotically normal with the inverse Hessian of the
negative log-likelihood as covariance (``FitResult.covariance_log_params``). That uncertainty is carried
to the CLV figures to first order (the delta method), with the gradients of every figure in the
log-parameters taken by forward differences (step 1e-5: within 5e-6 of central differences of step 1e-4,
relative to the largest gradient, on 68,000 simulated customers; one model evaluation per parameter):

- per customer, var(CLV) = g' S g with g the customer's gradient and S the covariance (purchase model and
  Gamma-Gamma independent); the interval is log-normal, CLV x exp(+-z sd / CLV), so it stays positive;
- totals (all customers, a segment, value at risk) are evaluated under parameter draws from that normal,
  by their first-order expansion around the fit (the group's summed gradient times the draw's shift), and
  an interval at level c runs from the (1 - c) / 2 to the (1 + c) / 2 quantile across draws. Figures derived
  from totals (new-customer CLV, maximum acquisition cost) use the same draws, so their intervals are
  consistent with the totals'. A new customer's expected purchases are recomputed exactly per draw.

Cost: about 9 evaluations of the models per customer instead of one per draw, so intervals add seconds,
not minutes, at millions of customers. On the 2,357-customer CDNOW sample, where the standard errors are
large, the linearised total's 90% interval is within 0.4% of the one from recomputing every CLV under 200
draws, and per-customer interval widths within 10% of 1,000 exact draws (tests/test_uncertainty.py).

What the CLV intervals cover: the estimation error of the model parameters, that is, how much the
expected CLV could differ had the data been another sample from the same customers. What they do not
cover: each customer's own randomness (Poisson purchases, dropout, spend around the customer's mean),
which an expected value averages out, and model misspecification (a wrong model family, a market that
changes). For a realised total, such as next year's purchases or revenue, ``predictive_totals`` adds the
customers' own randomness by simulating their futures from the model.

The purchase model's expectations are evaluated in the factorised form of ``forecast.value.clv`` (P(alive) per
unique (x, t_x, T) row, the monthly expectations per unique (x, T) pair), the spend once per unique (x, m)
history, and a customer's variance is built from those per-row gradients: no per-customer gradient matrix
is formed.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
from scipy import stats

from forecast.data.compress import sum_cells
from forecast.errors import FitError, ForecastWarning
from forecast.models import GammaGamma, PurchaseModel
from forecast.value.clv import Histories, SpendHistories, discount_factors, month_ends, purchases_if_alive
from forecast.value.segments import SegmentCells

ModelT = TypeVar("ModelT", PurchaseModel, GammaGamma)

#: Share of parameter draws that may be unusable (for example Gamma-Gamma q <= 1) before intervals fail.
MAX_DROPPED_DRAWS = 0.1


def interval(values: np.ndarray, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper quantiles at level ``ci_level`` along the last axis (the draws)."""
    lower, upper = np.quantile(values, [(1 - ci_level) / 2, (1 + ci_level) / 2], axis=-1)
    return lower, upper


def has_covariance(model: PurchaseModel | GammaGamma) -> bool:
    """Whether the fit has a parameter covariance, which the intervals need."""
    return model.result_ is not None and model.result_.covariance_log_params is not None


def parameter_draws(model: ModelT, draws: int, rng: np.random.Generator) -> list[ModelT]:
    """Copies of a fitted model with parameters drawn from the fit's sampling distribution.

    The log-parameters are drawn from a multivariate normal centred on the fitted values with covariance
    ``covariance_log_params`` (the inverse Hessian of the negative log-likelihood), so every draw is positive.

    Raises
    ------
    FitError
        The fit has no covariance (its information matrix was not invertible).
    """
    result = model.result_
    if result is None or result.covariance_log_params is None:
        raise FitError(
            f"The {model.title} fit has no parameter covariance (its information matrix is not invertible), so "
            "CLV intervals cannot be computed. Use more customers or a longer history, or set interval_draws: 0."
        )
    names = model.param_names
    centre = np.log([result.params[name] for name in names])
    log_draws = rng.multivariate_normal(centre, np.asarray(result.covariance_log_params), size=draws)
    base = model.to_dict()
    return [
        type(model).from_dict({**base, "params": {n: float(v) for n, v in zip(names, np.exp(row), strict=True)}})
        for row in log_draws
    ]


def discounted_purchases_new(
    model: PurchaseModel, horizon_months: int, monthly_discount_rate: float, days_per_unit: float
) -> np.ndarray:
    """A new customer's discounted expected repeat purchases, cumulated month by month (months 1..H)."""
    cumulative = model.expected_purchases_new(month_ends(horizon_months, days_per_unit))
    return np.cumsum(np.diff(cumulative) * discount_factors(horizon_months, monthly_discount_rate))


@dataclass(frozen=True)
class ClvDraws:
    """CLV figures recomputed under parameter draws.

    Attributes
    ----------
    ci_level
        Level of the intervals.
    customers
        Indexed by customer_id, columns clv_lower and clv_upper (currency).
    clv_totals
        Per-draw CLV totals: index (segmentation, segment) as in the segment table, one column per draw (currency).
    spend_totals
        Per-draw sums of the Gamma-Gamma expected spend, same index (currency).
    risk_totals
        Per-draw CLV totals of the customers at risk, same index (0 where nobody is at risk; currency), or None
        when no customers at risk were given.
    new_customer_purchases
        Per draw, a new customer's discounted expected repeat purchases over the horizon.
    """

    ci_level: float
    customers: pd.DataFrame
    clv_totals: pd.DataFrame
    spend_totals: pd.DataFrame
    risk_totals: pd.DataFrame | None
    new_customer_purchases: np.ndarray

    def interval(self, values: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper quantiles across draws, one pair per row of ``values``."""
        return interval(np.asarray(values, dtype=float), self.ci_level)


def _usable_draws(
    purchase_models: list[PurchaseModel], spend_models: list[GammaGamma], per_new: np.ndarray
) -> np.ndarray:
    usable = np.isfinite(per_new)
    usable &= np.array([math.isfinite(m.mean_spend()) for m in spend_models])
    dropped = int((~usable).sum())
    if dropped > MAX_DROPPED_DRAWS * len(usable):
        raise FitError(
            f"{dropped} of {len(usable)} parameter draws give unusable predictions (for example Gamma-Gamma q <= 1, "
            f"an undefined mean spend). The {purchase_models[0].title} or Gamma-Gamma estimates are too uncertain "
            "for intervals: use more customers or a longer history, or set interval_draws: 0."
        )
    if dropped:
        warnings.warn(
            f"{dropped} of {len(usable)} parameter draws gave unusable predictions (for example Gamma-Gamma q <= 1) "
            "and were left out of the intervals, which may therefore be slightly too narrow.",
            ForecastWarning,
            stacklevel=3,
        )
    return usable


def clv_draws(
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    horizon_months: int,
    monthly_discount_rate: float,
    margin: float,
    days_per_unit: float,
    cells: SegmentCells | None = None,
    ci_level: float = 0.9,
    draws: int = 200,
    seed: int = 0,
    chunk_customers: int = 250_000,
    histories: Histories | None = None,
    spend_histories: SpendHistories | None = None,
    at_risk: np.ndarray | None = None,
) -> ClvDraws:
    """Carry the parameter uncertainty to every customer's CLV (intervals) and to group totals (per draw).

    Parameters
    ----------
    summary
        Per-customer summary (frequency, recency, T, monetary_value), indexed by customer_id.
    purchases, spend
        The fitted purchase model and Gamma-Gamma model.
    horizon_months, monthly_discount_rate, margin, days_per_unit
        As for ``forecast.value.clv.score_customers``.
    cells
        The customers' ``SegmentCells`` (in the order of ``summary``): the per-draw totals are returned for
        every segment of every segmentation. None: everybody only.
    ci_level
        Interval level, e.g. 0.9 for the 5% and 95% quantiles.
    draws
        Number of parameter draws per model.
    seed
        Seed of the random generator: the same seed gives the same intervals.
    chunk_customers
        Customers processed at a time, two chunks at once; memory is about 2 x 20 x chunk_customers x 8 bytes.
    histories, spend_histories
        The summary's unique histories, if already computed (as for ``score_customers``).
    at_risk
        Optional, one boolean per customer: the per-draw CLV totals of the customers it marks are returned too
        (value at risk).

    Returns
    -------
    ClvDraws

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", eq. (10) and (13).
    """
    if draws < 2:
        raise FitError(f"Intervals need at least 2 parameter draws, got interval_draws = {draws}.")
    rng = np.random.default_rng(seed)
    purchase_models = parameter_draws(purchases, draws, rng)
    spend_models = parameter_draws(spend, draws, rng)
    per_new = np.array(
        [discounted_purchases_new(m, horizon_months, monthly_discount_rate, days_per_unit)[-1] for m in purchase_models]
    )
    usable = _usable_draws(purchase_models, spend_models, per_new)
    log_shift_p = np.array([_log_params(m) for m in purchase_models])[usable] - _log_params(purchases)
    log_shift_g = np.array([_log_params(m) for m in spend_models])[usable] - _log_params(spend)
    per_new = per_new[usable]

    histories = histories if histories is not None else Histories.from_summary(summary)
    spend_histories = spend_histories if spend_histories is not None else SpendHistories.from_summary(summary)
    row_value, row_gradient = _discounted_purchases_and_gradient(
        purchases, histories, horizon_months, monthly_discount_rate, days_per_unit
    )
    spend_value, spend_gradient = _spend_and_gradient(spend, *spend_histories.rows.T)
    _require_finite_gradients(summary.index, histories, spend_histories, row_value, row_gradient, spend_value,
                              spend_gradient)  # fmt: skip
    covariance_p = np.asarray(purchases.result_.covariance_log_params)  # type: ignore[union-attr]
    covariance_g = np.asarray(spend.result_.covariance_log_params)  # type: ignore[union-attr]
    # A customer's gradient is (margin s g_row, margin v g_spend) with s the expected spend and v the discounted
    # purchases; the models are independent, so var = margin^2 (s^2 g_row' S_p g_row + v^2 g_spend' S_g g_spend),
    # and the interval's relative spread z sd / CLV = z sqrt(g_row' S_p g_row / v^2 + g_spend' S_g g_spend / s^2)
    # adds two terms computed once per unique row and spend history (0 where the CLV is 0: the bounds are 0).
    z_squared = float(stats.norm.ppf((1 + ci_level) / 2)) ** 2
    row_spread = _relative_variance(row_gradient, covariance_p, row_value) * z_squared
    spend_spread = _relative_variance(spend_gradient, covariance_g, spend_value) * z_squared

    cells = cells if cells is not None else SegmentCells.of(summary, [None])
    # A customer at risk is summed in the second of its cell's two bins, so that the bins of a cell add up to
    # the cell and the second bins alone to its customers at risk.
    bins_per_cell = 1 if at_risk is None else 2
    n_bins = cells.size * bins_per_cell
    n_p, n_g = covariance_p.shape[0], covariance_g.shape[0]
    # One contiguous array per parameter: gathering from it is twice as fast as from a column of the matrix.
    row_gradient_by_param, spend_gradient_by_param = list(row_gradient.T.copy()), list(spend_gradient.T.copy())
    del row_gradient, spend_gradient
    lower = np.empty(len(summary))
    upper = np.empty(len(summary))

    def chunk_sums(chunk: slice) -> np.ndarray:
        """Fill in the chunk's interval bounds and return its sums per bin (a cell, or its customers not at risk
        and at risk): the CLV total and its gradient in the log-parameters (purchase model, then Gamma-Gamma),
        the spend total and its gradient."""
        # As intp once: every gather and bincount below would convert the compact codes again.
        rows = histories.row_of_customer[chunk].astype(np.intp)
        spends = spend_histories.row_of_customer[chunk].astype(np.intp)
        in_bin = cells.cells[chunk].astype(np.intp)
        if at_risk is not None:
            in_bin *= 2
            in_bin += at_risk[chunk]
        value, spend_per_purchase = row_value[rows], spend_value[spends]
        clv = margin * spend_per_purchase * value
        # Log-normal interval: positive, and a relative spread that is the delta method's.
        growth = row_spread[rows]
        growth += spend_spread[spends]
        np.sqrt(growth, out=growth)
        np.exp(growth, out=growth)
        np.divide(clv, growth, out=lower[chunk])
        np.multiply(clv, growth, out=upper[chunk])
        del growth
        sums = np.empty((n_bins, 2 + n_p + 2 * n_g))

        def add(column: int, weights: np.ndarray) -> None:
            sums[:, column] = np.bincount(in_bin, weights=weights, minlength=n_bins)

        # Made one at a time, as the sums take them: not all 2 + n_p + 2 n_g columns of the chunk at once.
        add(0, clv)
        spend_weight = margin * spend_per_purchase
        for j, gradient in enumerate(row_gradient_by_param):
            of_customer = gradient[rows]
            of_customer *= spend_weight
            add(1 + j, of_customer)
        add(1 + n_p + n_g, spend_per_purchase)
        value *= margin
        for j, gradient in enumerate(spend_gradient_by_param):
            of_customer = gradient[spends]
            add(2 + n_p + n_g + j, of_customer)
            of_customer *= value
            add(1 + n_p + j, of_customer)
        return sums

    # numpy lets go of the GIL in the gathers, products and sums, so two chunks are worked on at once; their
    # sums are added in chunk order, so the totals do not depend on which thread finished first.
    bin_sums = np.zeros((n_bins, 2 + n_p + 2 * n_g))
    with ThreadPoolExecutor(max_workers=2) as pool:
        chunks = [slice(start, start + chunk_customers) for start in range(0, len(summary), chunk_customers)]
        for chunk_total in pool.map(chunk_sums, chunks):
            bin_sums += chunk_total

    def segment_sums(per_cell: np.ndarray) -> np.ndarray:
        """Sums per segment of every segmentation, in the order of the index below."""
        codings = zip(cells.cell_codes, cells.labels, strict=True)
        return np.vstack([sum_cells(per_cell, codes, len(labels)) for codes, labels in codings])

    by_bin = bin_sums.reshape(cells.size, bins_per_cell, -1)
    sums = segment_sums(by_bin.sum(axis=1))
    clv_sum, spend_sum = sums[:, : 1 + n_p + n_g], sums[:, 1 + n_p + n_g :]

    def clv_per_draw(clv_sum: np.ndarray) -> np.ndarray:
        """CLV totals under every draw from their value and gradient at the fit: totals are smooth sums over many
        customers, so the first-order expansion is exact for the gradient, O(|shift|^2) otherwise."""
        return clv_sum[:, :1] + clv_sum[:, 1 : 1 + n_p] @ log_shift_p.T + clv_sum[:, 1 + n_p :] @ log_shift_g.T

    spend_totals = spend_sum[:, :1] + spend_sum[:, 1:] @ log_shift_g.T
    index = pd.MultiIndex.from_tuples(
        [(name, label) for name, labels in zip(cells.names, cells.labels, strict=True) for label in labels],
        names=["segmentation", "segment"],
    )
    risk_totals = None
    if at_risk is not None:
        risk_totals = pd.DataFrame(clv_per_draw(segment_sums(by_bin[:, 1, : 1 + n_p + n_g])), index=index)
    return ClvDraws(
        ci_level=ci_level,
        customers=pd.DataFrame({"clv_lower": lower, "clv_upper": upper}, index=summary.index, copy=False),
        clv_totals=pd.DataFrame(clv_per_draw(clv_sum), index=index),
        spend_totals=pd.DataFrame(spend_totals, index=index),
        risk_totals=risk_totals,
        new_customer_purchases=per_new,
    )


def _relative_variance(gradient: np.ndarray, covariance: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row, the delta method's variance of ``value`` relative to its square, g' S g / value^2 (0 where
    ``value`` is 0)."""
    variance = np.maximum(((gradient @ covariance) * gradient).sum(axis=1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(value > 0, variance / value**2, 0.0)


def _require_finite_gradients(
    ids: pd.Index,
    histories: Histories,
    spend_histories: SpendHistories,
    row_value: np.ndarray,
    row_gradient: np.ndarray,
    spend_value: np.ndarray,
    spend_gradient: np.ndarray,
) -> None:
    """Raise if a customer's CLV or its gradient would be NaN or infinite, naming a few customers."""
    bad_rows = ~(np.isfinite(row_value) & np.isfinite(row_gradient).all(axis=1))
    bad_spends = ~(np.isfinite(spend_value) & np.isfinite(spend_gradient).all(axis=1))
    if bad_rows.any() or bad_spends.any():
        bad = bad_rows[histories.row_of_customer] | bad_spends[spend_histories.row_of_customer]
        raise FitError(
            "The CLV intervals are NaN or infinite for some customers (for example "
            f"{ids[np.flatnonzero(bad)[:5]].tolist()}). Check those customers' transactions, or set "
            "interval_draws: 0."
        )


#: Step of the forward differences in the log-parameters.
LOG_STEP = 1e-5


def _log_params(model: PurchaseModel | GammaGamma) -> np.ndarray:
    return np.log([model.params_[name] for name in model.param_names])


def _shifted(model: ModelT, index: int, step: float) -> ModelT:
    """A copy of a fitted model with one log-parameter moved by ``step``."""
    params = dict(model.params_)
    name = model.param_names[index]
    params[name] = float(np.exp(np.log(params[name]) + step))
    return type(model).from_dict({**model.to_dict(), "params": params})


def _discounted_purchases_and_gradient(
    model: PurchaseModel, histories: Histories, horizon_months: int, monthly_discount_rate: float, days_per_unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per unique history row: discounted expected purchases and their gradient in the log-parameters."""

    def value(m: PurchaseModel) -> np.ndarray:
        f, r, T = (histories.rows[:, i] for i in range(3))
        _, if_alive = purchases_if_alive(m, histories.pairs, horizon_months, monthly_discount_rate, days_per_unit)
        return m.p_alive(f, r, T) * if_alive[histories.pair_of_row]

    at_fit = value(model)
    gradient = np.column_stack(
        [(value(_shifted(model, j, LOG_STEP)) - at_fit) / LOG_STEP for j in range(len(model.param_names))]
    )
    return at_fit, gradient


def _spend_and_gradient(
    model: GammaGamma, frequency: np.ndarray, monetary: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per spend history (x, m): Gamma-Gamma expected spend and its gradient in the log-parameters."""
    at_fit = model.expected_spend(frequency, monetary)
    gradient = np.column_stack(
        [
            (_shifted(model, j, LOG_STEP).expected_spend(frequency, monetary) - at_fit) / LOG_STEP
            for j in range(len(model.param_names))
        ]
    )
    return at_fit, gradient


def _future_purchases(
    model: PurchaseModel,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    horizon: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate each customer's number of purchases in (T, T + horizon] from the model, given the history."""
    params = model.params_
    alive = rng.random(len(x)) < model.p_alive(x, t_x, T)
    rate = rng.gamma(params["r"] + x, 1.0 / (params["alpha"] + T))
    if model.name == "pareto":
        death_rate = rng.gamma(params["s"], 1.0 / (params["beta"] + T))
        active_time = np.minimum(horizon, rng.exponential(1.0 / death_rate))
        return np.where(alive, rng.poisson(rate * active_time), 0)
    # BG/NBD drops out after a repeat purchase with probability p; MBG/NBD also at the first purchase.
    survived = x + 1 if model.name == "mbgnbd" else x
    dropout = rng.beta(params["a"], params["b"] + survived)
    purchases_until_death = rng.geometric(dropout)
    return np.where(alive, np.minimum(rng.poisson(rate * horizon), purchases_until_death), 0)


def predictive_totals(
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    horizon: float,
    draws: int = 200,
    seed: int = 0,
    parameter_uncertainty: bool = True,
) -> pd.DataFrame:
    """Simulate the customers' total purchases and revenue over the next ``horizon`` time units.

    Per draw: parameters from the sampling distribution (as in ``clv_draws``), then every customer's future
    from the model given the history: alive with probability P(alive); if alive, a purchase rate from
    Gamma(r + x, alpha + T), a dropout probability from Beta(a, b + x) (Pareto/NBD: a death rate from
    Gamma(s, beta + T)); purchases are Poisson while alive; spend per purchase is Gamma(p, nu) with
    nu ~ Gamma(q + p x, gamma + x m). The quantiles of the totals form a prediction interval that covers
    both parameter uncertainty and the customers' own randomness (not model misspecification).

    Parameters
    ----------
    summary
        Per-customer summary (frequency, recency, T, monetary_value), indexed by customer_id.
    purchases, spend
        The fitted models.
    horizon
        Length of the future period in model time units.
    draws
        Number of simulated futures.
    seed
        Seed of the random generator.
    parameter_uncertainty
        False keeps the parameters at their estimates (only the customers' own randomness).

    Returns
    -------
    pandas.DataFrame
        One row per draw, columns purchases and revenue (currency).

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", section 3 (the BG/NBD process);
    Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (1a) and (4).
    """
    rng = np.random.default_rng(seed)
    if parameter_uncertainty:
        purchase_models = parameter_draws(purchases, draws, rng)
        spend_models = parameter_draws(spend, draws, rng)
    else:
        purchase_models, spend_models = [purchases] * draws, [spend] * draws
    x = summary["frequency"].to_numpy(float)
    t_x = summary["recency"].to_numpy(float)
    T = summary["T"].to_numpy(float)
    m = np.where(x > 0, summary["monetary_value"].to_numpy(float), 0.0)
    totals = np.empty((draws, 2))
    for i, (purchase_model, spend_model) in enumerate(zip(purchase_models, spend_models, strict=True)):
        count = _future_purchases(purchase_model, x, t_x, T, horizon, rng)
        p, q, gamma = (spend_model.params_[k] for k in ("p", "q", "gamma"))
        nu = rng.gamma(q + p * x, 1.0 / (gamma + x * m))
        buyers = count > 0
        revenue = rng.gamma(p * count[buyers], 1.0 / nu[buyers])
        totals[i] = count.sum(), revenue.sum()
    return pd.DataFrame(totals, columns=["purchases", "revenue"]).rename_axis("draw")
