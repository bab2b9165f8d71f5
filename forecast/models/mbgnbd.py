"""MBG/NBD (Batislam, Denizel & Filiztekin 2007), with an expectation that stays finite for heavy buyers."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, hyp2f1

from forecast.models._lifetimes import (
    ModifiedBetaGeoFitter,
)
from forecast.models.base import PurchaseModel


class ModifiedBetaGeo(PurchaseModel):
    """MBG/NBD: BG/NBD where a customer may also drop out at time 0, before any repeat purchase.

    References
    ----------
    Batislam, Denizel & Filiztekin (2007), "Empirical validation and comparison of models for customer
    base analysis", International Journal of Research in Marketing 24(3).
    """

    name = "mbgnbd"
    title = "MBG/NBD"
    param_names = ("r", "alpha", "a", "b")
    lifetimes_names = ("r", "alpha", "a", "b")
    fitter_class = ModifiedBetaGeoFitter
    time_scaled_params = ("alpha",)
    dropout_param = "a"

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        mean_nll = ModifiedBetaGeoFitter._negative_log_likelihood(
            np.log(params), data["frequency"], data["recency"], data["T"], weights, 0.0
        )
        return -float(mean_nll) * float(weights.sum())

    def _conditional_expectation(
        self, t: float, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """E[X(t) | x, t_x, T] by a form that stays finite for customers with thousands of purchases.

        lifetimes evaluates 2F1(r + x, b + x + 1; a + b + x; z) (1 - z)^(r + x) with z = t / (alpha + T + t),
        which overflows (NaN) for x in the thousands. Euler's transformation
        2F1(A, B; C; z) = (1 - z)^(C - A - B) 2F1(C - A, C - B; C; z) turns the product into
        (1 - z)^(a - 1) 2F1(a + b - r, a - 1; a + b + x; z), whose parameters do not grow with x, and the
        denominator 1 + a / (b + x) ((alpha + T) / (alpha + t_x))^(r + x) is taken in log space.

        References
        ----------
        Batislam, Denizel & Filiztekin (2007), eq. (7); Abramowitz & Stegun (1972), 15.3.3.
        """

        r, alpha, a, b = (self.params_[k] for k in self.param_names)
        x = frequency
        z = t / (alpha + T + t)
        product = np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - r, a - 1, a + b + x, z)
        numerator = (a + b + x) / (a - 1) * (1 - product)
        log_odds_dead = np.log(a / (b + x)) + (r + x) * np.log((alpha + T) / (alpha + recency))
        return np.asarray(numerator * expit(-log_odds_dead), dtype=float)
