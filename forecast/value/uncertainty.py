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

Cost: one evaluation of the models at the fit and one per parameter (about 9 in all), however many draws,
instead of one per draw. On the 2,357-customer CDNOW sample, where the standard errors are large, the
linearised total's 90% interval is within 0.4% of the one from recomputing every CLV under 200 draws, and
per-customer interval widths within 10% of 1,000 exact draws (tests/value/test_uncertainty.py).

What the CLV intervals cover: the estimation error of the model parameters, that is, how much the
expected CLV could differ had the data been another sample from the same customers. What they do not
cover: each customer's own randomness (Poisson purchases, dropout, spend around the customer's mean),
which an expected value averages out, and model misspecification (a wrong model family, a market that
changes). For a realised total, such as next year's margin or a holdout's revenue, the totals' intervals add
the customers' own randomness (``forecast.value.process``).

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
from functools import partial
from typing import ClassVar, TypeVar

import numpy as np
import pandas as pd
from scipy import stats

from forecast.errors import FitError, ForecastWarning
from forecast.models import GammaGamma, PurchaseModel
from forecast.value.clv import Histories, SpendHistories, purchases_if_alive
from forecast.value.process import Periods, VarianceTerms, predictive_interval, variance_terms
from forecast.value.segments import SegmentCells
from forecast.value.valuation import Valuation

ModelT = TypeVar("ModelT", PurchaseModel, GammaGamma)

#: Share of parameter draws that may be unusable (for example Gamma-Gamma q <= 1) before intervals fail.
MAX_DROPPED_DRAWS = 0.1


def interval(values: np.ndarray, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper quantiles at level ``ci_level`` along the last axis (the draws)."""
    lower, upper = np.quantile(values, [(1 - ci_level) / 2, (1 + ci_level) / 2], axis=-1)
    return lower, upper


def has_covariance(model: PurchaseModel | GammaGamma) -> bool:
    """Whether the fit has a parameter covariance, which the intervals need."""
    result = getattr(model, "result_", None)  # absent before fit
    return result is not None and result.covariance_log_params is not None


def parameter_draws(model: ModelT, draws: int, rng: np.random.Generator) -> list[ModelT]:
    """Copies of a fitted model with parameters drawn from the fit's sampling distribution.

    The log-parameters are drawn from a multivariate normal centred on the fitted values with covariance
    ``covariance_log_params`` (the inverse Hessian of the negative log-likelihood), so every draw is positive.

    Raises
    ------
    FitError
        The fit has no covariance (its information matrix was not invertible).
    """
    result = getattr(model, "result_", None)  # absent before fit
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


def discounted_purchases_new(model: PurchaseModel, valuation: Valuation) -> np.ndarray:
    """A new customer's discounted expected repeat purchases, cumulated month by month (months 1..H)."""
    cumulative = model.expected_purchases_new(valuation.month_ends())
    return np.cumsum(np.diff(cumulative) * valuation.discount_factors())


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
    process_variance
        Same index, columns clv and risk: the variance of each realised total around its expectation given the
        parameters (``forecast.value.process``), or None when it cannot be computed (the totals' intervals then
        cover the parameters only).
    seed
        Seed of the normal deviates of the predictive intervals.
    """

    ci_level: float
    customers: pd.DataFrame
    clv_totals: pd.DataFrame
    spend_totals: pd.DataFrame
    risk_totals: pd.DataFrame | None
    new_customer_purchases: np.ndarray
    process_variance: pd.DataFrame | None = None
    seed: int = 0

    def interval(self, values: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper quantiles across draws, one pair per row of ``values``."""
        return interval(np.asarray(values, dtype=float), self.ci_level)

    @property
    def predictive(self) -> bool:
        """Whether the totals' intervals add the customers' own randomness to the parameter draws."""
        return self.process_variance is not None

    def total_interval(
        self, totals: pd.DataFrame, keys: list[tuple[str, str]], kind: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """The interval of realised totals (``kind``: clv or risk) of the segments ``keys``: the parameter draws
        plus, when known, the customers' own spread (``forecast.value.process.predictive_interval``)."""
        per_draw = totals.reindex(keys).to_numpy()
        if self.process_variance is None:
            return self.interval(per_draw)
        variance = self.process_variance[kind].reindex(keys).to_numpy()
        return predictive_interval(per_draw, variance, self.ci_level, self.seed)


def clv_draws(
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    valuation: Valuation,
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
    valuation
        Horizon, monthly discount rate, margin and time unit, as for ``forecast.value.clv.score_customers``.
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
    histories = histories if histories is not None else Histories.from_summary(summary)
    spend_histories = spend_histories if spend_histories is not None else SpendHistories.from_summary(summary)
    figures = history_figures(
        purchases, spend, valuation, histories, spend_histories, ci_level, draws, seed, summary.index
    )
    cells = cells if cells is not None else SegmentCells.of(summary, [None])
    bins = CustomerBins(histories, spend_histories, cells, at_risk)
    lower, upper, bin_sums = sum_over_customers(bins, figures.gradients, valuation.margin, chunk_customers)
    clv_totals, spend_totals, risk_totals = totals_per_draw(bin_sums, bins, figures.columns, figures.shifts)
    index = cells.index
    variance = process_variances(figures, valuation.margin, cells, at_risk)
    shifts = figures.shifts
    return ClvDraws(
        ci_level=ci_level,
        customers=pd.DataFrame({"clv_lower": lower, "clv_upper": upper}, index=summary.index, copy=False),
        clv_totals=pd.DataFrame(clv_totals, index=index),
        spend_totals=pd.DataFrame(spend_totals, index=index),
        risk_totals=None if risk_totals is None else pd.DataFrame(risk_totals, index=index),
        new_customer_purchases=shifts.new_customer_purchases,
        process_variance=variance,
        seed=seed,
    )


def process_variances(
    figures: HistoryFigures, margin: float, cells: SegmentCells, at_risk: np.ndarray | None
) -> pd.DataFrame | None:
    """Per segment, the variance of the realised CLV total (and of the customers at risk) given the parameters:
    the sums of the customers' variances (``forecast.value.process``); None when the spend model leaves it
    undefined (``value_variance_terms`` warned)."""
    if figures.terms is None:
        return None
    rows, spend_rows = figures.histories.row_of_customer, figures.spend_histories.row_of_customer
    per_customer = figures.terms.value_variances(rows, spend_rows, margin)
    risk = np.where(at_risk, per_customer, 0.0) if at_risk is not None else np.zeros_like(per_customer)
    sums = cells.sums(pd.DataFrame({"clv": per_customer, "risk": risk}, copy=False))
    return pd.DataFrame(cells.roll_up(sums), index=cells.index, columns=["clv", "risk"])


@dataclass(frozen=True)
class HistoryFigures:
    """What the intervals need, found once per unique history, whichever engine holds the customers.

    Attributes
    ----------
    histories, spend_histories
        The unique history rows and spend histories (with the customers' rows when an engine holds them).
    gradients
        The CLV factors, their gradients and spreads per history (``history_gradients``).
    terms
        The customers' variance terms per history, or None when the spend model leaves them undefined.
    shifts
        The usable parameter draws.
    """

    histories: Histories
    spend_histories: SpendHistories
    gradients: HistoryGradients
    terms: VarianceTerms | None
    shifts: ParameterShifts

    @property
    def columns(self) -> SumColumns:
        """The summed figures' columns."""
        return self.gradients.columns


def history_figures(
    purchases: PurchaseModel,
    spend: GammaGamma,
    valuation: Valuation,
    histories: Histories,
    spend_histories: SpendHistories,
    ci_level: float,
    draws: int,
    seed: int,
    customer_ids: pd.Index,
) -> HistoryFigures:
    """Draw the parameters and evaluate every unique history for the intervals: the one place both engines find
    them (the DuckDB engine then sums its customers' figures per bin, the Spark engine joins them to its customers).

    Raises
    ------
    FitError
        Too few draws, no covariance, too many unusable draws, or a customer (named from ``customer_ids``, or by
        its history when the histories have no customers) whose CLV or gradient is not finite.
    """
    if draws < 2:
        raise FitError(f"Intervals need at least 2 parameter draws, got interval_draws = {draws}.")
    shifts = draw_parameter_shifts(purchases, spend, valuation, draws, np.random.default_rng(seed))
    gradients = history_gradients(purchases, spend, valuation, histories, spend_histories, ci_level, customer_ids)
    terms = value_variance_terms(purchases, spend, valuation, histories, spend_histories, seed)
    return HistoryFigures(histories, spend_histories, gradients, terms, shifts)


def value_variance_terms(
    purchases: PurchaseModel,
    spend: GammaGamma,
    valuation: Valuation,
    histories: Histories,
    spend_histories: SpendHistories,
    seed: int,
) -> VarianceTerms | None:
    """The terms of each unique history's CLV variance given the parameters (``forecast.value.process``) over the
    valuation's months; None, with a warning, when the spend model leaves the variance undefined (the totals'
    intervals then cover the parameters only)."""
    try:
        return variance_terms(purchases, spend, histories, spend_histories, Periods.months(valuation), seed)
    except FitError as exc:
        warnings.warn(
            f"The intervals of the CLV totals cover the parameters' uncertainty only: {exc}",
            ForecastWarning,
            stacklevel=3,
        )
        return None


@dataclass(frozen=True)
class ParameterShifts:
    """The usable parameter draws of both models, as shifts of their log-parameters from the fit.

    Attributes
    ----------
    purchases
        Shape (draws, purchase-model parameters): log(drawn) - log(fitted).
    spend
        Shape (draws, Gamma-Gamma parameters): log(drawn) - log(fitted).
    new_customer_purchases
        Per draw, a new customer's discounted expected repeat purchases over the horizon.
    """

    purchases: np.ndarray
    spend: np.ndarray
    new_customer_purchases: np.ndarray


def draw_parameter_shifts(
    purchases: PurchaseModel, spend: GammaGamma, valuation: Valuation, draws: int, rng: np.random.Generator
) -> ParameterShifts:
    """Draw both models' parameters (``parameter_draws``) and keep the draws whose predictions are defined.

    Raises
    ------
    FitError
        A fit has no covariance, or more than ``MAX_DROPPED_DRAWS`` of the draws are unusable.
    """
    purchase_models = parameter_draws(purchases, draws, rng)
    spend_models = parameter_draws(spend, draws, rng)
    per_new = np.array([discounted_purchases_new(m, valuation)[-1] for m in purchase_models])
    usable = _usable_draws(purchase_models, spend_models, per_new)
    return ParameterShifts(
        purchases=np.array([_log_params(m) for m in purchase_models])[usable] - _log_params(purchases),
        spend=np.array([_log_params(m) for m in spend_models])[usable] - _log_params(spend),
        new_customer_purchases=per_new[usable],
    )


def _usable_draws(
    purchase_models: list[PurchaseModel], spend_models: list[GammaGamma], per_new: np.ndarray
) -> np.ndarray:
    """Which draws give defined predictions; warn when some do not, raise when too many do not."""
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
            stacklevel=4,  # the caller of clv_draws
        )
    return usable


@dataclass(frozen=True)
class SumColumns:
    """The columns of the summed figures (one row per bin, cell or segment): named blocks of one matrix.

    ``clv`` is the CLV total, ``clv_by_purchase_params`` and ``clv_by_spend_params`` its gradient in the
    purchase model's and the Gamma-Gamma's log-parameters (together the ``clv_block``); ``spend`` is the total
    Gamma-Gamma expected spend and ``spend_by_spend_params`` its gradient in the Gamma-Gamma's log-parameters.
    """

    purchase_params: int
    spend_params: int

    #: The CLV total.
    clv: ClassVar[int] = 0

    @property
    def clv_by_purchase_params(self) -> slice:
        """d CLV total / d log(purchase-model parameter), one column per parameter."""
        return slice(self.clv + 1, self.clv + 1 + self.purchase_params)

    @property
    def clv_by_spend_params(self) -> slice:
        """d CLV total / d log(Gamma-Gamma parameter), one column per parameter."""
        start = self.clv_by_purchase_params.stop
        return slice(start, start + self.spend_params)

    @property
    def clv_block(self) -> slice:
        """The CLV total and its gradients."""
        return slice(self.clv, self.clv_by_spend_params.stop)

    @property
    def spend(self) -> int:
        """The total expected spend per purchase."""
        return self.clv_block.stop

    @property
    def spend_by_spend_params(self) -> slice:
        """d spend total / d log(Gamma-Gamma parameter), one column per parameter."""
        return slice(self.spend + 1, self.spend + 1 + self.spend_params)

    @property
    def width(self) -> int:
        """Number of columns."""
        return self.spend_by_spend_params.stop


@dataclass(frozen=True)
class HistoryGradients:
    """Per unique history, the two factors of a customer's CLV and their gradients in the log-parameters at the fit.

    A customer's CLV is margin x s x v, with v the discounted expected purchases of its history row
    (``Histories.rows``) and s the Gamma-Gamma expected spend of its spend history (``SpendHistories.rows``).

    Attributes
    ----------
    purchases
        v per history row.
    purchases_gradient
        dv / d log(parameter), one array per purchase-model parameter: a customer's values are gathered from
        one contiguous array per parameter rather than from a strided column of a matrix.
    spend
        s per spend history (currency).
    spend_gradient
        ds / d log(parameter), one array per Gamma-Gamma parameter.
    purchases_spread, spend_spread
        z^2 g' S g / v^2 per history row and z^2 g' S g / s^2 per spend history (0 where v or s is 0): the two
        terms of the square of a customer's relative spread z sd / CLV.
    """

    purchases: np.ndarray
    purchases_gradient: list[np.ndarray]
    spend: np.ndarray
    spend_gradient: list[np.ndarray]
    purchases_spread: np.ndarray
    spend_spread: np.ndarray

    @property
    def columns(self) -> SumColumns:
        """The columns of these figures' sums."""
        return SumColumns(len(self.purchases_gradient), len(self.spend_gradient))


def history_gradients(
    purchases: PurchaseModel,
    spend: GammaGamma,
    valuation: Valuation,
    histories: Histories,
    spend_histories: SpendHistories,
    ci_level: float,
    customer_ids: pd.Index,
) -> HistoryGradients:
    """Evaluate both CLV factors and their gradients once per unique history, with each history's spread.

    A customer's gradient is (margin s g_v, margin v g_s); the models are independent, so
    var(CLV) = margin^2 (s^2 g_v' S_p g_v + v^2 g_s' S_g g_s), and the interval's relative spread
    z sd / CLV = z sqrt(g_v' S_p g_v / v^2 + g_s' S_g g_s / s^2) adds two terms found once per history.

    Raises
    ------
    FitError
        A customer's CLV or gradient is NaN or infinite (the message names a few of ``customer_ids``).
    """
    row_value, row_gradient = _discounted_purchases_and_gradient(purchases, histories, valuation)
    spend_value, spend_gradient = _spend_and_gradient(spend, *spend_histories.rows.T)
    _require_finite_gradients(customer_ids, histories, spend_histories, row_value, row_gradient, spend_value,
                              spend_gradient)  # fmt: skip
    covariance_p = np.asarray(purchases.result_.covariance_log_params)
    covariance_g = np.asarray(spend.result_.covariance_log_params)
    z_squared = float(stats.norm.ppf((1 + ci_level) / 2)) ** 2
    return HistoryGradients(
        purchases=row_value,
        purchases_gradient=list(row_gradient.T.copy()),
        spend=spend_value,
        spend_gradient=list(spend_gradient.T.copy()),
        purchases_spread=_relative_variance(row_gradient, covariance_p, row_value) * z_squared,
        spend_spread=_relative_variance(spend_gradient, covariance_g, spend_value) * z_squared,
    )


@dataclass(frozen=True)
class CustomerBins:
    """Where each customer's figures are looked up (history row, spend history) and summed (its bin).

    A bin is a cell of ``cells``; with customers at risk, a cell has two bins, its customers not at risk and
    those at risk, so that a cell's bins add up to the cell and the second bins alone to its customers at risk.
    """

    histories: Histories
    spend_histories: SpendHistories
    cells: SegmentCells
    at_risk: np.ndarray | None

    @property
    def per_cell(self) -> int:
        """Bins per cell: 1, or 2 with customers at risk."""
        return 1 if self.at_risk is None else 2

    @property
    def size(self) -> int:
        """Number of bins."""
        return self.cells.size * self.per_cell

    def codes(self, chunk: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """History rows, spend histories and bins of a chunk of customers."""
        # As intp once: every gather and bincount would otherwise convert the compact codes again.
        rows = self.histories.row_of_customer[chunk].astype(np.intp)
        spends = self.spend_histories.row_of_customer[chunk].astype(np.intp)
        bins = self.cells.cells[chunk].astype(np.intp)
        if self.at_risk is not None:
            bins *= 2
            bins += self.at_risk[chunk]
        return rows, spends, bins


def sum_over_customers(
    bins: CustomerBins, gradients: HistoryGradients, margin: float, chunk_customers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every customer's interval bounds, and the CLV and spend with their gradients summed per bin.

    Customers are taken a chunk at a time, so that only a chunk's per-customer columns exist at once, and two
    chunks at once: numpy lets go of Python's lock in the gathers, products and sums. The chunks' sums are added
    in chunk order, so the totals do not depend on which thread finished first.

    Returns
    -------
    (lower, upper, bin_sums)
        The bounds of each customer's CLV interval (currency), and the sums, shape (bins, ``gradients.columns``).
    """
    customers = len(bins.histories.row_of_customer)
    lower, upper = np.empty(customers), np.empty(customers)
    bin_sums = np.zeros((bins.size, gradients.columns.width))
    chunks = [slice(start, start + chunk_customers) for start in range(0, customers, chunk_customers)]
    sums_of = partial(_chunk_sums, bins=bins, gradients=gradients, margin=margin, lower=lower, upper=upper)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for chunk_sums in pool.map(sums_of, chunks):
            bin_sums += chunk_sums
    return lower, upper, bin_sums


def _chunk_sums(
    chunk: slice, bins: CustomerBins, gradients: HistoryGradients, margin: float, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Fill in a chunk's interval bounds and return its sums per bin (``figure_sums``)."""
    rows, spends, in_bin = bins.codes(chunk)
    return figure_sums(rows, spends, in_bin, bins.size, gradients, margin, lower[chunk], upper[chunk])


def figure_sums(
    rows: np.ndarray,
    spends: np.ndarray,
    in_bin: np.ndarray,
    size: int,
    gradients: HistoryGradients,
    margin: float,
    lower: np.ndarray,
    upper: np.ndarray,
) -> np.ndarray:
    """Write customers' interval bounds into ``lower`` and ``upper``, and return their figures summed per bin.

    Parameters
    ----------
    rows, spends, in_bin
        Each customer's history row and spend history in ``gradients``, and its bin (0 .. size - 1).
    size
        Number of bins; with every customer its own bin (``in_bin`` 0, 1, 2, ...) the sums are the customers' own
        figures, which another engine then adds up.

    Returns
    -------
    numpy.ndarray
        Shape (size, ``gradients.columns.width``): the CLV, its gradients, the spend and its gradients per bin.
    """
    discounted, spend_per_purchase = gradients.purchases[rows], gradients.spend[spends]
    clv = margin * spend_per_purchase * discounted
    spread_squared = gradients.purchases_spread[rows]
    spread_squared += gradients.spend_spread[spends]
    _log_normal_bounds(clv, spread_squared, lower, upper)
    del spread_squared

    columns = gradients.columns
    sums = np.empty((size, columns.width))

    def bin_sum(weights: np.ndarray) -> np.ndarray:
        return np.bincount(in_bin, weights=weights, minlength=size)

    # Each per-customer column is made as its sum takes it, not all of the chunk's columns at once. The blocks
    # below are views of ``sums``: filling in a column of one fills in ``sums``.
    sums[:, columns.clv] = bin_sum(clv)
    spend_weight = margin * spend_per_purchase
    clv_by_purchase_params = sums[:, columns.clv_by_purchase_params]
    for j, gradient in enumerate(gradients.purchases_gradient):
        of_customer = gradient[rows]
        of_customer *= spend_weight
        clv_by_purchase_params[:, j] = bin_sum(of_customer)
    sums[:, columns.spend] = bin_sum(spend_per_purchase)
    discounted *= margin
    clv_by_spend_params = sums[:, columns.clv_by_spend_params]
    spend_by_spend_params = sums[:, columns.spend_by_spend_params]
    for j, gradient in enumerate(gradients.spend_gradient):
        of_customer = gradient[spends]
        spend_by_spend_params[:, j] = bin_sum(of_customer)
        of_customer *= discounted
        clv_by_spend_params[:, j] = bin_sum(of_customer)
    return sums


def _log_normal_bounds(clv: np.ndarray, spread_squared: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
    """Write CLV / exp(z sd / CLV) into ``lower`` and CLV x exp(z sd / CLV) into ``upper``.

    A log-normal interval stays positive and has the delta method's relative spread; ``spread_squared``,
    (z sd / CLV)^2, is overwritten.
    """
    growth = np.sqrt(spread_squared, out=spread_squared)
    np.exp(growth, out=growth)
    np.divide(clv, growth, out=lower)
    np.multiply(clv, growth, out=upper)


def totals_per_draw(
    bin_sums: np.ndarray, bins: CustomerBins, columns: SumColumns, shifts: ParameterShifts
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Add the bin sums up per segment and expand them to every parameter draw.

    Returns
    -------
    (clv, spend, risk)
        One row per segment of every segmentation (``SegmentCells.index``), one column per draw: the CLV
        totals, the expected-spend totals and, with customers at risk, the CLV totals of those at risk (else None).
    """
    by_bin = bin_sums.reshape(bins.cells.size, bins.per_cell, -1)
    sums = bins.cells.roll_up(by_bin.sum(axis=1))
    risk_sums = None if bins.at_risk is None else bins.cells.roll_up(by_bin[:, 1])
    return totals_under_draws(sums, risk_sums, columns, shifts)


def totals_under_draws(
    sums: np.ndarray, risk_sums: np.ndarray | None, columns: SumColumns, shifts: ParameterShifts
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Expand summed figures (one row per segment, ``columns``) to every parameter draw: the CLV totals, the
    expected-spend totals and, from ``risk_sums`` (the same figures of the customers at risk), their CLV totals."""
    spend = sums[:, columns.spend, np.newaxis] + sums[:, columns.spend_by_spend_params] @ shifts.spend.T
    risk = None if risk_sums is None else _clv_per_draw(risk_sums[:, columns.clv_block], columns, shifts)
    return _clv_per_draw(sums, columns, shifts), spend, risk


def _clv_per_draw(sums: np.ndarray, columns: SumColumns, shifts: ParameterShifts) -> np.ndarray:
    """CLV totals under every draw from their value and gradient at the fit.

    Totals are smooth sums over many customers, so the first-order expansion is exact for the gradient,
    O(|shift|^2) otherwise.
    """
    return (
        sums[:, columns.clv, np.newaxis]
        + sums[:, columns.clv_by_purchase_params] @ shifts.purchases.T
        + sums[:, columns.clv_by_spend_params] @ shifts.spend.T
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
        if len(histories.row_of_customer):
            bad = bad_rows[histories.row_of_customer] | bad_spends[spend_histories.row_of_customer]
            named = f"customers {ids[np.flatnonzero(bad)[:5]].tolist()}"
        else:  # compressed histories (another engine's): the histories, as the customers are not here
            rows = [tuple(row) for row in histories.rows[bad_rows][:3].tolist()]
            spends = [tuple(row) for row in spend_histories.rows[bad_spends][:3].tolist()]
            named = f"the (frequency, recency, T) histories {rows} and (frequency, monetary_value) histories {spends}"
        raise FitError(
            f"The CLV intervals are NaN or infinite for some customers (for example {named}). Check those "
            "customers' transactions, or set interval_draws: 0."
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
    model: PurchaseModel, histories: Histories, valuation: Valuation
) -> tuple[np.ndarray, np.ndarray]:
    """Per unique history row: discounted expected purchases and their gradient in the log-parameters."""

    def value(m: PurchaseModel) -> np.ndarray:
        f, r, T = (histories.rows[:, i] for i in range(3))
        _, if_alive = purchases_if_alive(m, histories.pairs, valuation)
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
