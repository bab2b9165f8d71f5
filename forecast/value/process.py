"""The customers' own randomness: how far a realised total strays from its expectation when the parameters are known.

An expected CLV averages each customer's future out; a realised total (next year's margin, a holdout's revenue) also
varies because customers buy a Poisson number of times, drop out at random and spend around their own mean. For a
customer, with n_k purchases in period k of a valuation (months k = 1..H, weights w_k = 1 / (1 + d)^k; or one
holdout period, w = 1), A = sum_k w_k n_k and B = sum_k w_k^2 n_k, and spend per purchase Gamma(p, nu) given the
customer's nu ~ Gamma(q + p x, gamma + x m) (Gamma-Gamma's posterior), the value V = margin x sum_k w_k spend_k has

    Var(V) = margin^2 (p E[B] E[nu^-2] + p^2 (E[A^2] E[nu^-2] - E[A]^2 E[nu^-1]^2)),
    E[nu^-1] = (gamma + x m) / (q + p x - 1),  E[nu^-2] = (gamma + x m)^2 / ((q + p x - 1)(q + p x - 2))

(the law of total variance over n and nu, which are independent; with the mean-spend fallback, spend per purchase is
the mean s and Var(V) = margin^2 s^2 Var(A)). E[A], E[A^2] and E[B] are those of P(alive) x the same moments for a
customer alive at T, which depend on (x, T) only and are simulated once per unique pair from the model's process:
lambda ~ Gamma(r + x, alpha + T); BG/NBD drops out after each purchase with probability p ~ Beta(a, b + x)
(MBG/NBD: b + x + 1), Pareto/NBD at an exponential time of rate mu ~ Gamma(s, beta + T), the NBD never.

Customers are independent given the parameters, so a total's variance is the sum of its customers'. A predictive
interval of a total adds this spread (as a normal: a total of many independent customers) to the parameter draws.

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", section 3 (the BG/NBD process);
Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (1a) and (4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.compress import Histories, SpendHistories, row_chunks, take
from forecast.errors import FitError
from forecast.models import GammaGamma, PurchaseModel
from forecast.value.valuation import Valuation

#: Simulated futures per unique (x, T) pair: at most this many, fewer when there are many pairs (at least 16); the
#: estimates of a total's variance then vary by about 1% between seeds on the CDNOW sample's 464 pairs.
FUTURES_PER_PAIR = 2_000
#: Futures simulated in all, and per chunk of pairs (memory: a few arrays of this many floats).
FUTURES_IN_ALL = 2_000_000
FUTURES_PER_CHUNK = 500_000
#: Normal deviates of the customers' spread added to each parameter draw, so that the interval's quantiles are
#: those of the draws' mixture rather than of as many single deviates as draws.
DEVIATES_PER_DRAW = 25
#: Smallest dropout probability simulated (BG/NBD, MBG/NBD): below it, a customer effectively never drops out.
MIN_DROPOUT = 1e-12


@dataclass(frozen=True)
class Periods:
    """The periods a realised total counts purchases over, and each period's weight.

    Attributes
    ----------
    ends
        t_0 = 0 < t_1 < ... < t_P, model time units after the customer's T.
    weights
        w_1 .. w_P: the value of a currency unit spent in each period (discount factors, or 1).
    """

    ends: np.ndarray
    weights: np.ndarray

    @classmethod
    def months(cls, valuation: Valuation) -> Periods:
        """The valuation's months, each discounted as the CLV discounts it."""
        return cls(valuation.month_ends(), valuation.discount_factors())

    @classmethod
    def single(cls, length: float) -> Periods:
        """One undiscounted period of ``length`` model time units (a holdout)."""
        return cls(np.array([0.0, float(length)]), np.ones(1))


def moments_if_alive(
    model: PurchaseModel, pairs: np.ndarray, periods: Periods, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E[A], E[A^2] and E[B] of a customer alive at T, per unique (x, T) pair, by simulating the model's process.

    Returns
    -------
    (mean_a, mean_a_squared, mean_b)
        One value per pair (module docstring for A and B).
    """
    futures = max(16, min(FUTURES_PER_PAIR, FUTURES_IN_ALL // max(len(pairs), 1)))
    chunk = max(1, FUTURES_PER_CHUNK // futures)
    moments = np.empty((len(pairs), 3))
    for start in range(0, len(pairs), chunk):
        x, T = (pairs[start : start + chunk, i][:, None] for i in (0, 1))
        a, b = _simulated_sums(model, x, T, periods, futures, rng)
        moments[start : start + chunk] = np.column_stack([a.mean(1), (a * a).mean(1), b.mean(1)])
    return moments[:, 0], moments[:, 1], moments[:, 2]


def _simulated_sums(
    model: PurchaseModel, x: np.ndarray, T: np.ndarray, periods: Periods, futures: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A and B of ``futures`` simulated futures of customers alive at T: shape (pairs, futures) each."""
    shape = (len(x), futures)
    params = model.params_
    rate = rng.gamma(params["r"] + x, 1.0 / (params["alpha"] + T), size=shape)
    if model.name in ("bgnbd", "mbgnbd"):
        survived = x + (1.0 if model.name == "mbgnbd" else 0.0)
        # A small a makes some dropout probabilities underflow to 0 (never dropping out): kept above 1e-12.
        dropout = np.maximum(rng.beta(params["a"], params["b"] + survived, size=shape), MIN_DROPOUT)
        left = rng.geometric(dropout).astype(float)
    elif model.name == "pareto":
        # A small s makes some death rates underflow to 0 or near it: an infinite lifetime, not an error.
        with np.errstate(divide="ignore", over="ignore"):
            death = rng.exponential(size=shape) / rng.gamma(params["s"], 1.0 / (params["beta"] + T), size=shape)
    elif model.name != "nbd":
        raise FitError(f"The customers' own randomness is not known for the {model.title} model.")
    a, b = np.zeros(shape), np.zeros(shape)
    for start, end, weight in zip(periods.ends[:-1], periods.ends[1:], periods.weights, strict=True):
        if model.name == "pareto":
            exposure = np.clip(np.minimum(death, end) - start, 0.0, None)
            count = rng.poisson(rate * exposure).astype(float)
        else:
            count = rng.poisson(rate * (end - start)).astype(float)
        if model.name in ("bgnbd", "mbgnbd"):
            count = np.minimum(count, left)  # the purchase after which the customer drops out is the last
            left -= count
        a += weight * count
        b += weight * weight * count
    return a, b


@dataclass(frozen=True)
class VarianceTerms:
    """Per unique history, the terms of a customer's variance given the parameters (module docstring).

    Attributes
    ----------
    expected_a, expected_a_squared, expected_b
        E[A], E[A^2] and E[B] per history row (``Histories.rows``): P(alive) x the moments of a customer alive at T.
    inverse, inverse_squared
        E[nu^-1] and E[nu^-2] per spend history (``SpendHistories.rows``); None with the mean-spend fallback.
    spend_shape
        Gamma-Gamma's p, or with the mean-spend fallback the mean spend per purchase.
    """

    expected_a: np.ndarray
    expected_a_squared: np.ndarray
    expected_b: np.ndarray
    inverse: np.ndarray | None
    inverse_squared: np.ndarray | None
    spend_shape: float

    def purchase_variances(self, rows: np.ndarray) -> np.ndarray:
        """Var A of customers whose history rows are ``rows``."""
        return take(self.expected_a_squared - self.expected_a**2, rows)

    def value_variances(self, rows: np.ndarray, spend_rows: np.ndarray, margin: float) -> np.ndarray:
        """Var V at ``margin`` of customers whose history rows and spend histories are ``rows`` and ``spend_rows``."""
        if self.inverse is None or self.inverse_squared is None:
            return margin**2 * self.spend_shape**2 * self.purchase_variances(rows)
        p = self.spend_shape
        value = np.empty(len(rows))
        # Chunk by chunk, so that the per-customer terms are never whole columns (millions of customers).
        for part in row_chunks(len(rows)):
            row, spend_row = rows[part], spend_rows[part]
            a, a2, b = self.expected_a[row], self.expected_a_squared[row], self.expected_b[row]
            inv, inv2 = self.inverse[spend_row], self.inverse_squared[spend_row]
            value[part] = margin**2 * (p * b * inv2 + p**2 * (a2 * inv2 - a**2 * inv**2))
        return value


def variance_terms(
    purchases: PurchaseModel,
    spend: GammaGamma,
    histories: Histories,
    spend_histories: SpendHistories,
    periods: Periods,
    seed: int = 0,
) -> VarianceTerms:
    """The variance terms of every unique history (``VarianceTerms``), found once however many customers share one.

    The simulated moments depend on the histories' unique (x, T) pairs and ``seed`` only, so any engine that finds
    the same pairs gets the same terms.

    Raises
    ------
    FitError
        Gamma-Gamma's q + p x is at most 2 for some customers: their spend per purchase has no variance.
    """
    mean_a, mean_a2, mean_b = moments_if_alive(purchases, histories.pairs, periods, np.random.default_rng(seed))
    rows = histories.rows
    p_alive = np.asarray(purchases.p_alive(rows[:, 0], rows[:, 1], rows[:, 2]), float)
    of_row = histories.pair_of_row
    expected_a, expected_a2, expected_b = (p_alive * values[of_row] for values in (mean_a, mean_a2, mean_b))
    if spend.name == "mean_spend":
        return VarianceTerms(expected_a, expected_a2, expected_b, None, None, spend.mean_spend())
    p, q, gamma = (spend.params_[k] for k in ("p", "q", "gamma"))
    x, m = spend_histories.rows[:, 0], spend_histories.rows[:, 1]
    shape, scale = q + p * x, gamma + x * m
    if (shape <= 2).any():
        raise FitError(
            f"Gamma-Gamma's q = {q:.3g} gives the spend per purchase of customers without repeat purchases an "
            "infinite variance (q + p x must exceed 2), so the predictive intervals cannot add the customers' own "
            "randomness."
        )
    inverse, inverse_squared = scale / (shape - 1), scale**2 / ((shape - 1) * (shape - 2))
    return VarianceTerms(expected_a, expected_a2, expected_b, inverse, inverse_squared, p)


def customer_variances(
    purchases: PurchaseModel,
    spend: GammaGamma,
    histories: Histories,
    spend_histories: SpendHistories,
    periods: Periods,
    margin: float,
    seed: int = 0,
) -> pd.DataFrame:
    """Each customer's variance of A (weighted purchases) and of V (weighted value at margin) given the parameters.

    Parameters
    ----------
    purchases, spend
        The fitted models (Gamma-Gamma or the mean-spend fallback).
    histories, spend_histories
        The customers' unique histories (``Histories.from_summary``, ``SpendHistories.from_summary``).
    periods
        The periods and weights of the total.
    margin
        Margin of the value.
    seed
        Seed of the simulated futures.

    Returns
    -------
    pandas.DataFrame
        One row per customer (in the histories' order), columns purchases (Var A) and value (Var V).

    Raises
    ------
    FitError
        Gamma-Gamma's q + p x is at most 2 for some customers: their spend per purchase has no variance.
    """
    terms = variance_terms(purchases, spend, histories, spend_histories, periods, seed)
    rows, spend_rows = histories.row_of_customer, spend_histories.row_of_customer
    return pd.DataFrame(
        {"purchases": terms.purchase_variances(rows), "value": terms.value_variances(rows, spend_rows, margin)},
        copy=False,
    )


def predictive_interval(
    totals: np.ndarray, variance: np.ndarray, ci_level: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of realised totals: parameter draws plus the customers' own spread, at level ``ci_level``.

    The quantiles are those of the mixture: each draw's total plus ``DEVIATES_PER_DRAW`` normal deviates of the
    total's standard deviation given the parameters.

    Parameters
    ----------
    totals
        Shape (totals, draws): each total's expectation under the parameter draws.
    variance
        Shape (totals,): each total's variance given the parameters (the sum of its customers' ``value``).
    ci_level
        Level of the interval.
    seed
        Seed of the normal deviates added to the draws.

    Returns
    -------
    (lower, upper)
        One pair per total, never below 0.
    """
    totals = np.asarray(totals, float)
    spread = np.sqrt(np.asarray(variance, dtype=float))
    deviates = np.random.default_rng(seed).standard_normal(size=(DEVIATES_PER_DRAW, totals.shape[-1]))
    levels = [(1 - ci_level) / 2, (1 + ci_level) / 2]
    lower, upper = np.empty(len(totals)), np.empty(len(totals))
    for i in range(len(totals)):  # one total at a time: draws x deviates values each, however many segments
        lower[i], upper[i] = np.quantile(totals[i] + spread[i] * deviates, levels)
    return np.maximum(lower, 0.0), np.maximum(upper, 0.0)
