"""The Gamma-Gamma spend model (Fader & Hardie 2013) and its fit on the repeat buyers' spend."""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Self, overload

import numpy as np
import pandas as pd
from scipy.special import digamma, gammaln

from forecast.data.compress import (
    as_floats,
)
from forecast.errors import FitError, ForecastWarning
from forecast.models._lifetimes import (
    GammaGammaFitter,
    _check_inputs,
)
from forecast.models.base import ArrayLike, _like_input, _Model
from forecast.models.fitting import (
    _distinct,
    _Objective,
    unique_rows,
)

FREQUENCY_SPEND_CORRELATION_LIMIT = 0.3


class _GammaGammaObjective(_Objective):
    """Gamma-Gamma: lifetimes' ``GammaGammaFitter._negative_log_likelihood`` with its gradient.

    A repeat buyer's log-likelihood, for x repeat purchases averaging m, with s = x m the total spend:
    ln Gamma(p x + q) - ln Gamma(p x) - ln Gamma(q) - ln m - p x ln(1 + gamma / s) - q ln(1 + gamma / s)
    - q ln(s / gamma), lifetimes' form rearranged so that no two large sums cancel (the line search
    compares values that differ in the 14th digit near the optimum). Only ln(1 + gamma / s) is evaluated
    row by row; the rest is summed by distinct x or once.

    References
    ----------
    Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (1a); Hardie, note 025 (the log-likelihood).
    """

    size = 3

    def __init__(
        self, data: dict[str, np.ndarray], weights: np.ndarray, penalizer: float = 0.0, shrinkage: float = 0.0
    ) -> None:
        super().__init__(data, weights, penalizer)
        x, m = np.asarray(data["frequency"], dtype=float), np.asarray(data["monetary_value"], dtype=float)
        self.shrinkage = float(shrinkage)
        self.centre = shrinkage_centre(m, weights)
        self._x_values, x_codes = _distinct(x)
        self._x_weights = np.bincount(x_codes, weights=weights, minlength=len(self._x_values))
        self._weights, self._weights_x = weights, weights * x
        self._spend, self._inverse_spend = x * m, 1.0 / (x * m)
        self._log_m = float(weights @ np.log(m))
        self._log_spend = float(weights @ np.log(self._spend))

    def negative_log_likelihood(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, gamma = np.exp(log_params)
        px, x_weights, total = p * self._x_values, self._x_weights, self.total_weight
        log_ratio = np.log1p(gamma * self._inverse_spend)  # ln(1 + gamma / s)
        inverse_total = 1.0 / (self._spend + gamma)
        w_log, wx_log = self._weights @ log_ratio, self._weights_x @ log_ratio
        log_spend_over_gamma = self._log_spend - total * np.log(gamma)  # sum of w ln(s / gamma); np.log as for alpha
        ll = (
            x_weights @ (gammaln(px + q) - gammaln(px)) - total * gammaln(q) - self._log_m
            - p * wx_log - q * w_log - q * log_spend_over_gamma
        )  # fmt: skip
        d_p = x_weights @ (self._x_values * (digamma(px + q) - digamma(px))) - wx_log
        d_q = x_weights @ digamma(px + q) - total * digamma(q) - w_log - log_spend_over_gamma
        d_gamma = total * q / gamma - p * (self._weights_x @ inverse_total) - q * (self._weights @ inverse_total)
        gradient = np.array([d_p * p, d_q * q, d_gamma * gamma])  # chain rule to log-parameters
        return -float(ll) / total, -gradient / total

    def penalty(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        """lifetimes' penalty plus the shrinkage, ``shrinkage * sum((ln params - centre) ** 2)``, and its gradient."""
        value, gradient = super().penalty(log_params)
        offset = log_params - self.centre
        return value + self.shrinkage * float(offset @ offset), gradient + 2.0 * self.shrinkage * offset

    @property
    def penalised(self) -> bool:
        return bool(self.penalizer or self.shrinkage)

    @classmethod
    def maximise(cls, data: dict[str, np.ndarray], weights: np.ndarray, **penalties: float) -> np.ndarray:
        """``GammaGammaFitter.fit`` with this objective: lifetimes' input checks and minimisation."""
        _check_inputs(data["frequency"], monetary_value=data["monetary_value"])
        return super().maximise(data, weights, **penalties)


def shrinkage_centre(monetary_value: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Where the shrinkage pulls the log-parameters: p = q = 1 and gamma = the buyers' mean average spend, the
    parameters that are 0 on log scale when spend is measured in units of its mean (so the pull does not depend
    on the currency)."""
    mean = float(weights @ monetary_value) / float(weights.sum()) if len(weights) else 1.0
    return np.array([0.0, 0.0, math.log(mean) if mean > 0 else 0.0])


class GammaGamma(_Model):
    """Gamma-Gamma spend model: average spend per purchase, independent of the purchase process.

    z ~ Gamma(p, nu) per purchase, nu ~ Gamma(q, gamma) across customers. Fitted on repeat buyers
    with a positive average spend; the parameter lifetimes calls ``v`` is the paper's ``gamma``.

    References
    ----------
    Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (1a) and (5).
    """

    name = "gamma_gamma"
    title = "Gamma-Gamma"
    param_names: ClassVar[tuple[str, ...]] = ("p", "q", "gamma")
    lifetimes_names: ClassVar[tuple[str, ...]] = ("p", "q", "v")
    fitter_class = GammaGammaFitter
    convergence_advice = "the heuristic CLV until there are more repeat buyers"
    objective: ClassVar[type[_Objective] | None] = _GammaGammaObjective

    def __init__(self, penalizer: float = 0.0, shrinkage: float = 0.0) -> None:
        """Store the settings.

        Parameters
        ----------
        penalizer
            lifetimes' ``penalizer_coef``: ``penalizer * (p^2 + q^2 + gamma^2)`` is added to the mean negative
            log-likelihood per repeat buyer (gamma in currency units). 0 is maximum likelihood.
        shrinkage
            Weight of a ridge on the log-parameters, ``shrinkage * [(ln p)^2 + (ln q)^2 + (ln(gamma / m))^2]``
            with m the buyers' mean average spend, also added to the mean: it keeps a fit whose likelihood
            runs off (all buyers alike) finite, does not depend on the currency, and, unlike lifetimes' penalty,
            does not pull q below 1 (an undefined mean spend). 0 is none.
        """
        super().__init__(penalizer)
        self.shrinkage = shrinkage

    def _penalties(self) -> dict[str, float]:
        return {"penalizer": self.penalizer, "shrinkage": self.shrinkage}

    def _lifetimes_fitter_class(self) -> type | None:
        return None if self.shrinkage else self.fitter_class  # lifetimes has no shrinkage

    def _penalty_hessian(
        self, params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray
    ) -> np.ndarray | None:
        """lifetimes' penalty's Hessian plus the shrinkage's, 2 shrinkage I, per repeat buyer."""
        hessian = super()._penalty_hessian(params, data, weights)
        if not self.shrinkage:
            return hessian
        shrinkage = 2.0 * self.shrinkage * float(weights.sum()) * np.eye(len(params))
        return shrinkage if hessian is None else hessian + shrinkage

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        return _GammaGammaObjective(data, weights).log_likelihood(params)

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike, weights: ArrayLike | None = None) -> Self:
        """Fit on the customers with at least one repeat purchase and a positive average spend.

        Parameters
        ----------
        frequency
            Repeat purchases per customer.
        monetary_value
            Mean amount of each customer's repeat purchases (currency units).
        weights
            Customers each row stands for (default 1 per row), for a summary already compressed.

        Returns
        -------
        self
        """
        frequency = as_floats(frequency)
        repeat = frequency > 0  # the only customers the fit and its warnings count
        unique, counts = unique_rows(
            {"frequency": frequency[repeat], "monetary_value": as_floats(monetary_value)[repeat]},
            None if weights is None else as_floats(weights)[repeat],
        )
        return self.fit_unique(unique["frequency"].to_numpy(), unique["monetary_value"].to_numpy(), counts)

    def fit_unique(self, frequency: ArrayLike, monetary_value: ArrayLike, counts: ArrayLike) -> Self:
        """Fit on unique (frequency, monetary_value) rows in lexicographic order, weighted by their counts.

        What ``fit`` does once it has compressed the customers: pass rows that are already unique and sorted
        (``SpendHistories`` holds them), as the result depends on the rows' order at the level of rounding.
        Rows without a repeat purchase or a positive average spend are left out, as in ``fit``.

        Parameters
        ----------
        frequency
            Repeat purchases of each unique row.
        monetary_value
            Mean amount of the repeat purchases (currency units).
        counts
            Customers each row stands for.

        Returns
        -------
        self
        """
        frequency, monetary_value, counts = as_floats(frequency), as_floats(monetary_value), as_floats(counts)
        repeat = frequency > 0
        usable = repeat & (monetary_value > 0)
        repeat_buyers, usable_buyers = int(counts[repeat].sum()), int(counts[usable].sum())
        if usable_buyers < 2:
            raise FitError(
                f"The Gamma-Gamma spend model needs repeat buyers with a positive average spend; the data has "
                f"{usable_buyers}. Use a longer observation period or check the amounts."
            )
        if usable_buyers < repeat_buyers:
            warnings.warn(
                f"{repeat_buyers - usable_buyers:,} repeat buyers with an average spend of 0 or less were "
                "left out of the Gamma-Gamma fit.",
                ForecastWarning,
                stacklevel=2,
            )
        # Boolean selections are contiguous copies, as the fit's sums want them (see PurchaseModel.fit_unique).
        data = {"frequency": frequency[usable], "monetary_value": monetary_value[usable]}
        if np.ptp(data["monetary_value"]) == 0:
            raise FitError(
                "Every repeat buyer has the same average spend, so the Gamma-Gamma spend model has nothing to fit. "
                "Use the heuristic CLV, or check that the amount column is the purchase value."
            )
        self._fit_compressed(data, counts[usable])
        if self.params_["q"] <= 1:
            warnings.warn(
                f"Gamma-Gamma q = {self.params_['q']:.3f} <= 1: the population mean spend is undefined and spend "
                "forecasts for customers with few purchases are unreliable.",
                ForecastWarning,
                stacklevel=2,
            )
        return self

    @overload
    def expected_spend(self, frequency: pd.Series, monetary_value: ArrayLike) -> pd.Series: ...
    @overload
    def expected_spend(self, frequency: np.ndarray, monetary_value: ArrayLike) -> np.ndarray: ...
    def expected_spend(self, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray | pd.Series:
        """Expected average spend per future purchase given each customer's history (currency units).

        Customers with no repeat purchase get the population mean, p * gamma / (q - 1).

        Parameters
        ----------
        frequency
            Repeat purchases per customer.
        monetary_value
            Mean amount of each customer's repeat purchases (currency units).

        Returns
        -------
        pandas.Series or numpy.ndarray
            E[spend | x, m]: a Series named ``expected_spend`` on ``frequency``'s index (customer_id) when
            ``frequency`` is a Series, else an array.

        References
        ----------
        Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (5).
        """
        x = np.asarray(frequency, float)
        m = np.where(x > 0, np.asarray(monetary_value, float), 0.0)
        with np.errstate(all="ignore"):
            values = self._fitter().conditional_expected_average_profit(x, m)
        return _like_input(np.asarray(values, dtype=float), frequency, "expected_spend")

    def average_spend_density(
        self, z: ArrayLike, frequency: ArrayLike, customers: ArrayLike | None = None
    ) -> np.ndarray:
        """Model density of a customer's observed average spend, mixed over the customers' repeat purchases.

        For a customer with x repeat purchases the average spend z has density
        Gamma(p x + q) / (Gamma(p x) Gamma(q)) gamma^q x^(p x) z^(p x - 1) / (gamma + x z)^(p x + q);
        the result averages it over ``frequency`` (the repeat buyers), the curve to compare with
        the histogram of their observed averages.

        Parameters
        ----------
        z
            Average spend per purchase (currency units) at which to evaluate the density.
        frequency
            Repeat purchases of each repeat buyer (x > 0).
        customers
            How many repeat buyers each entry of ``frequency`` stands for (default one each).

        Returns
        -------
        numpy.ndarray
            Density per currency unit, shaped like ``z``.

        References
        ----------
        Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (3).
        """
        p, q, gamma = (self.params_[k] for k in self.param_names)
        points = np.asarray(z, float)
        frequency = np.asarray(frequency, float)
        each = np.ones(len(frequency)) if customers is None else np.asarray(customers, float)
        grouped = pd.Series(each).groupby(frequency).sum()
        x_values, weights = grouped.index.to_numpy(float), grouped.to_numpy() / grouped.sum()
        density = np.zeros(points.shape)
        positive = points > 0
        zs = points[positive]
        for x, weight in zip(x_values, weights, strict=True):
            px = p * x
            log_density = (
                gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma) + px * np.log(x)
                + (px - 1) * np.log(zs) - (px + q) * np.log(gamma + x * zs)
            )  # fmt: skip
            density[positive] += weight * np.exp(log_density)
        return density

    def mean_spend(self) -> float:
        """Population mean spend per purchase, p * gamma / (q - 1); infinite when q <= 1."""
        p, q, gamma = (self.params_[k] for k in self.param_names)
        return p * gamma / (q - 1) if q > 1 else math.inf


def warn_if_spend_correlated(correlation: float) -> None:
    """Warn when repeat buyers' frequency and average spend correlate (Gamma-Gamma assumes independence)."""
    if abs(correlation) > FREQUENCY_SPEND_CORRELATION_LIMIT:
        warnings.warn(
            f"Frequency and average spend of repeat buyers are correlated ({correlation:.2f}); Gamma-Gamma "
            "assumes they are independent, so spend forecasts may be biased.",
            ForecastWarning,
            stacklevel=3,
        )
