"""The NBD (Ehrenberg 1959): purchases at a steady Gamma-distributed rate, nobody drops out.

It is the limit of BG/NBD and MBG/NBD as a -> 0 and of Pareto/NBD as s -> 0: the model a purchase model with
dropout becomes when the data show no dropout (``forecast.models.catalog.fit_purchase_model`` fits it then).
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln

from forecast.models.base import ArrayLike, PurchaseModel
from forecast.models.fitting import (
    _distinct,
    _Objective,
    maximise_in_lifetimes_time,
)


class _NBDObjective(_Objective):
    """NBD: the mean negative log-likelihood of the histories with its gradient, in lifetimes' conventions.

    A customer's log-likelihood, for x repeat purchases in (0, T]:
    ln[Gamma(r + x) / Gamma(r)] + r ln alpha - (r + x) ln(alpha + T), BG/NBD's as a -> 0 (the timing of the
    purchases, t_x, tells nothing without dropout). The first term is summed by distinct x and the rest by
    distinct T, so an evaluation costs no pass over the rows.

    References
    ----------
    Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2), section 2
    (the NBD, their eq. (6) without dropout).
    """

    size = 2

    def __init__(self, data: dict[str, np.ndarray], weights: np.ndarray, penalizer: float = 0.0) -> None:
        super().__init__(data, weights, penalizer)
        x = np.asarray(data["frequency"], dtype=float)
        self._x_values, x_codes = _distinct(x)
        self._x_weights = np.bincount(x_codes, weights=weights, minlength=len(self._x_values))
        self._age_values, age_codes = _distinct(np.asarray(data["T"], dtype=float))
        self._age_weights = np.bincount(age_codes, weights=weights, minlength=len(self._age_values))
        self._age_weights_x = np.bincount(age_codes, weights=weights * x, minlength=len(self._age_values))

    def negative_log_likelihood(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha = np.exp(log_params)
        x, x_weights, total = self._x_values, self._x_weights, self.total_weight
        log_alpha = np.log(alpha)  # np.log: a line search may underflow alpha to 0 (see _BetaGeoObjective)
        log_age, inverse_age = np.log(alpha + self._age_values), 1.0 / (alpha + self._age_values)
        ll = (
            x_weights @ (gammaln(r + x) - gammaln(r)) + total * r * log_alpha
            - r * (self._age_weights @ log_age) - self._age_weights_x @ log_age
        )  # fmt: skip
        d_r = x_weights @ (digamma(r + x) - digamma(r)) + total * log_alpha - self._age_weights @ log_age
        d_alpha = total * r / alpha - r * (self._age_weights @ inverse_age) - self._age_weights_x @ inverse_age
        gradient = np.array([d_r * r, d_alpha * alpha])  # chain rule to log-parameters
        return -float(ll) / total, -gradient / total

    @classmethod
    def maximise(cls, data: dict[str, np.ndarray], weights: np.ndarray, **penalties: float) -> np.ndarray:
        """As ``BetaGeoFitter.fit`` would: lifetimes' input checks, time scale, start and minimisation."""
        return maximise_in_lifetimes_time(cls, data, weights, **penalties)


class NBD(PurchaseModel):
    """NBD: purchases at rate lambda ~ Gamma(r, alpha), for ever: P(alive) is 1.

    Given a history, lambda ~ Gamma(r + x, alpha + T), so E[X(t) | x, T] = (r + x) / (alpha + T) t.

    References
    ----------
    Ehrenberg (1959), "The pattern of consumer purchases", Applied Statistics 8(1); Fader, Hardie & Lee (2005),
    "Counting your customers the easy way", section 2.
    """

    name = "nbd"
    title = "NBD"
    param_names = ("r", "alpha")
    lifetimes_names = ("r", "alpha")
    fitter_class = None
    objective = _NBDObjective
    time_scaled_params = ("alpha",)

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        return _NBDObjective(data, weights).log_likelihood(params)

    def _conditional_expectation(
        self, t: float, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """E[X(t) | x, T] = (r + x) / (alpha + T) t: the posterior mean rate times t."""
        r, alpha = self.params_["r"], self.params_["alpha"]
        return np.asarray((r + frequency) / (alpha + T) * t + 0.0 * recency, dtype=float)

    def _probability_alive(self, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> np.ndarray:
        """1: nobody drops out."""
        return np.ones(np.broadcast(frequency, recency, T).shape)

    def expected_purchases_new(self, t: ArrayLike) -> np.ndarray:
        """Expected repeat purchases in ``t`` time units for a customer acquired at time 0: r t / alpha."""
        return np.asarray(self.params_["r"] / self.params_["alpha"] * np.asarray(t, float), dtype=float)

    def probability_of_purchases(self, n: int, t: ArrayLike) -> np.ndarray:
        """Probability that a customer acquired at time 0 makes exactly ``n`` repeat purchases in (0, t].

        P(X(t) = n) = Gamma(r + n) / (Gamma(r) n!) (alpha / (alpha + t))^r (t / (alpha + t))^n, shaped like ``t``.

        References
        ----------
        Fader, Hardie & Lee (2005), eq. (8) with a -> 0.
        """
        r, alpha = self.params_["r"], self.params_["alpha"]
        times = np.asarray(t, float)
        with np.errstate(divide="ignore"):
            log_p = (
                gammaln(r + n) - gammaln(r) - gammaln(n + 1.0)
                + r * np.log(alpha / (alpha + times)) + n * np.log(times / (alpha + times))
            )  # fmt: skip
        return np.asarray(np.exp(log_p), dtype=float)
