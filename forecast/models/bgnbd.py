"""BG/NBD (Fader, Hardie & Lee 2005): its likelihood with an analytic gradient, and the model."""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln

from forecast.models._lifetimes import (
    BetaGeoFitter,
)
from forecast.models.base import PurchaseModel
from forecast.models.fitting import (
    _distinct,
    _Objective,
    maximise_in_lifetimes_time,
)


class _BetaGeoObjective(_Objective):
    """BG/NBD: lifetimes' ``BetaGeoFitter._negative_log_likelihood`` with its gradient.

    A customer's log-likelihood, for x repeat purchases, the last at t_x, observed for T:
    ln[Gamma(r + x) / Gamma(r)] + r ln alpha + ln[B(a, b + x) / B(a, b)] - (r + x) ln(alpha + T)
    + [x > 0] ln(1 + e^d), with d = ln[a / (b + x - 1)] + (r + x) ln[(alpha + T) / (alpha + t_x)].
    The first line depends on x alone and the (r + x) ln(alpha + T) term on T and x linearly, so only
    the last term is evaluated row by row; its derivative in d is the probability, sigmoid(d), that the
    customer dropped out right after the last purchase.

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2), eq. (6);
    Hardie, note 004 (the log-likelihood in this form).
    """

    size = 4

    def __init__(self, data: dict[str, np.ndarray], weights: np.ndarray, penalizer: float = 0.0) -> None:
        super().__init__(data, weights, penalizer)
        x = np.asarray(data["frequency"], dtype=float)
        self._x_values, x_codes = _distinct(x)
        self._x_weights = np.bincount(x_codes, weights=weights, minlength=len(self._x_values))
        self._age_values, age_codes = _distinct(data["T"])
        self._age_weights = np.bincount(age_codes, weights=weights, minlength=len(self._age_values))
        self._age_weights_x = np.bincount(age_codes, weights=weights * x, minlength=len(self._age_values))
        repeat = x > 0
        self._last_values, self._last_codes = _distinct(data["recency"][repeat])
        self._repeat_x, self._repeat_weights = x[repeat], weights[repeat]
        self._repeat_x_codes, self._repeat_age_codes = x_codes[repeat], age_codes[repeat]

    def negative_log_likelihood(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha, a, b = np.exp(log_params)
        # np.log, not math.log: a line search may underflow alpha to 0, where lifetimes' objective is not finite
        # either (and the search steps back); math.log would raise instead.
        log_alpha = np.log(alpha)
        x, x_weights, total = self._x_values, self._x_weights, self.total_weight
        # Terms in x alone.
        ll = (
            x_weights
            @ (gammaln(r + x) - gammaln(r) + gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x))
            + total * r * log_alpha
        )
        d_r = x_weights @ (digamma(r + x) - digamma(r)) + total * log_alpha
        d_alpha = total * r / alpha
        d_a = x_weights @ (digamma(a + b) - digamma(a + b + x))
        d_b = x_weights @ (digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x))
        # -(r + x) ln(alpha + T), summed by distinct T.
        log_age, inverse_age = np.log(alpha + self._age_values), 1.0 / (alpha + self._age_values)
        ll -= r * (self._age_weights @ log_age) + self._age_weights_x @ log_age
        d_r -= self._age_weights @ log_age
        d_alpha -= r * (self._age_weights @ inverse_age) + self._age_weights_x @ inverse_age
        # ln(1 + e^d) for the repeat buyers, row by row.
        log_last, inverse_last = np.log(alpha + self._last_values), 1.0 / (alpha + self._last_values)
        log_ratio = log_age[self._repeat_age_codes] - log_last[self._last_codes]
        rate = r + self._repeat_x
        b_x = b + np.maximum(x, 1) - 1  # lifetimes' max(x, 1): finite for x = 0 too
        d = np.log(a / b_x)[self._repeat_x_codes] + rate * log_ratio
        # ln(1 + e^d) and sigmoid(d) through e^-|d| <= 1: no overflow, and one exp shared by both (logaddexp
        # and expit would each take their own).
        small = np.exp(-np.abs(d))
        ll += self._repeat_weights @ (np.maximum(d, 0.0) + np.log1p(small))
        dropped = self._repeat_weights * np.where(d > 0, 1.0, small) / (1.0 + small)
        d_r += dropped @ log_ratio
        d_alpha += (dropped * rate) @ (inverse_age[self._repeat_age_codes] - inverse_last[self._last_codes])
        d_a += dropped.sum() / a
        d_b -= dropped @ (1.0 / b_x)[self._repeat_x_codes]
        gradient = np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])  # chain rule to log-parameters
        return -float(ll) / total, -gradient / total

    @classmethod
    def maximise(cls, data: dict[str, np.ndarray], weights: np.ndarray, **penalties: float) -> np.ndarray:
        """``BetaGeoFitter.fit`` with this objective: lifetimes' input checks, time scale and minimisation."""
        return maximise_in_lifetimes_time(cls, data, weights, **penalties)


class BetaGeo(PurchaseModel):
    """BG/NBD: purchases at rate lambda ~ Gamma(r, alpha) while alive; dropout p ~ Beta(a, b) after each purchase.

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2), eq. (6).
    """

    name = "bgnbd"
    title = "BG/NBD"
    param_names = ("r", "alpha", "a", "b")
    lifetimes_names = ("r", "alpha", "a", "b")
    fitter_class = BetaGeoFitter
    objective = _BetaGeoObjective
    time_scaled_params = ("alpha",)
    dropout_param = "a"

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        return _BetaGeoObjective(data, weights).log_likelihood(params)
