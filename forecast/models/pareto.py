"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987) in a form that stays finite at and near t_x = T."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.integrate import quad
from scipy.special import expit, gammaln, hyp2f1

from forecast.models._lifetimes import (
    ParetoNBDFitter,
)
from forecast.models.base import ArrayLike, PurchaseModel

ParetoParams = Sequence[float] | np.ndarray  # r, alpha, s, beta


def _hyp2f1_one(b: ArrayLike, c: ArrayLike, z: ArrayLike) -> np.ndarray:
    """Gauss's 2F1(1, b; c; z) for 0 <= z < 1 and c > b > 0, with a quadrature where scipy's value is not finite.

    Over this range the function is E[1 / (1 - z V)] for V ~ Beta(b, c - b), so it lies in [1, 1 / (1 - z)].
    scipy's hyp2f1 gives it to about 1e-13 (checked against mpmath for b, c up to 1e5), except that near z = 1
    it uses the connection formula at z = 1, whose gamma functions overflow once c exceeds about 170: NaN for
    z above about 0.9 and large b. Those entries only are integrated (``_hyp2f1_one_by_quadrature``).

    References
    ----------
    Abramowitz & Stegun (1972), 15.3.1 (Euler's integral).
    """
    b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (b, c, z)))
    values = np.array(hyp2f1(1.0, b, c, z), dtype=float)
    for i in np.flatnonzero(~np.isfinite(values) & np.isfinite(z)):
        values.flat[i] = _hyp2f1_one_by_quadrature(float(b.flat[i]), float(c.flat[i]), float(z.flat[i]))
    return values


def _hyp2f1_one_by_quadrature(b: float, c: float, z: float) -> float:
    """2F1(1, b; c; z), 0 <= z < 1, c > b > 0, from Euler's integral E[1 / (1 - z V)], V ~ Beta(b, c - b).

    With V = exp(-t / b) the Beta density is proportional to w(t) = e^-t (b (1 - e^(-t/b)))^(c - b - 1) on
    (0, inf), so the value is int w(t) / (1 - z e^(-t/b)) dt / int w(t) dt: bounded integrands, and no Beta
    function to normalise by (scipy's betaln is off by about 1e-10 at b = 1e5). 1 / (1 - z e^(-t/b)) falls from
    1 / (1 - z) over t ~ b (1 - z), where the integrals are split so that the adaptive rule sees the peak.
    """
    sigma, y = c - b, 1.0 - z

    def weight(t: float) -> float:
        return float(np.exp((sigma - 1.0) * np.log(-b * np.expm1(-t / b)) - t))

    def integrand(t: float) -> float:
        return weight(t) / (y - z * np.expm1(-t / b))  # 1 - z e^(-t/b), without cancellation near z = 1

    split = min(b * y, 1.0)

    def integral(f: Callable[[float], float]) -> float:
        return sum(
            quad(f, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)[0] for lo, hi in ((0.0, split), (split, np.inf))
        )

    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quad's roundoff notices at a 1e-12 target; the value is good to ~1e-12
        return integral(integrand) / integral(weight)


def _log1mexp(a: np.ndarray) -> np.ndarray:
    """ln(1 - e^a) for a <= 0, accurate for a near 0 and for a very negative (-inf at a = 0)."""
    with np.errstate(divide="ignore"):
        return np.where(a > -math.log(2.0), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def _pareto_nbd_log_a0(params: ParetoParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
    """ln A_0 of the Pareto/NBD likelihood, finite for any number of purchases and -inf (A_0 = 0) at t_x = T.

    A_0 = G(t_x) - G(T), G(u) = 2F1(a, b; a + 1; z(u)) / (m + u)^a, with a = r + s + x, m = max(alpha, beta),
    n = min(alpha, beta), z(u) = (m - n) / (m + u), and b = r + x if alpha < beta else s + 1. lifetimes takes
    ln A_0 with scipy's logsumexp, which gives NaN (scipy >= 1.15) for two equal terms above e^709, i.e. at
    t_x = T for a heavy buyer, and its 2F1 overflows from a few thousand purchases on. Euler's transformation
    2F1(a, b; a + 1; z) = (1 - z)^(1 - b) 2F1(1, a + 1 - b; a + 1; z), with 1 - z = (n + u) / (m + u), gives

        ln G(u) = (1 - b) ln(n + u) + (b - 1 - a) ln(m + u) + ln 2F1(1, a + 1 - b; a + 1; z(u)),

    a 2F1 between 1 and 1 / (1 - z) (``_hyp2f1_one``). Then ln A_0 = ln G(t_x) + ln(1 - e^d), d = ln G(T) - ln G(t_x)
    <= 0, with d summed term by term (ln(n + T) - ln(n + t_x) = log1p((T - t_x) / (n + t_x)), ...) so that it keeps
    its digits as t_x approaches T. (The Pfaff form 2F1(1, b; a + 1; z / (z - 1)) is not used: scipy is wrong by
    up to 100% there once alpha and beta differ by more than a factor of 2, z / (z - 1) < -1.)

    References
    ----------
    Fader & Hardie (2005), "A note on deriving the Pareto/NBD model and related expressions", note 009,
    eq. (19) and (20); Abramowitz & Stegun (1972), 15.3.3 (Euler's transformation).
    """
    r, alpha, s, beta = (float(p) for p in params)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    a = r + s + x
    b = r + x if alpha < beta else s + 1.0
    m, n = max(alpha, beta), min(alpha, beta)
    log_f_tx = np.log(_hyp2f1_one(a + 1 - b, a + 1, (m - n) / (m + t_x)))
    log_f_T = np.log(_hyp2f1_one(a + 1 - b, a + 1, (m - n) / (m + T)))
    log_g_tx = (1 - b) * np.log(n + t_x) + (b - 1 - a) * np.log(m + t_x) + log_f_tx
    gap = T - t_x
    d = (1 - b) * np.log1p(gap / (n + t_x)) + (b - 1 - a) * np.log1p(gap / (m + t_x)) + log_f_T - log_f_tx
    return np.asarray(log_g_tx + _log1mexp(np.minimum(d, 0.0)), dtype=float)


def _pareto_nbd_log_odds_dead(params: ParetoParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
    """ln[(1 - P(alive)) / P(alive)] = ln[s / (r + s + x) (alpha + T)^(r + x) (beta + T)^s A_0] (note 009, eq. 36)."""
    r, alpha, s, beta = (float(p) for p in params)
    x, T = np.asarray(x, dtype=float), np.asarray(T, dtype=float)
    return np.asarray(
        math.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + T) + s * np.log(beta + T)
        + _pareto_nbd_log_a0(params, x, t_x, T),
        dtype=float,
    )  # fmt: skip


def _pareto_nbd_log_likelihood(params: ParetoParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
    """Per-customer Pareto/NBD log-likelihood (note 009, eq. 18), with the stable ln A_0 of ``_pareto_nbd_log_a0``.

    ln L = ln[Gamma(r + x) alpha^r beta^s / Gamma(r)]
           + ln[(alpha + T)^-(r + x) (beta + T)^-s + s / (r + s + x) A_0], the last term by logaddexp.
    lifetimes' ``ParetoNBDFitter._conditional_log_likelihood`` with the same arguments; equal where it is finite.

    References
    ----------
    Fader & Hardie (2005), note 009, eq. (18).
    """
    r, alpha, s, beta = (float(p) for p in params)
    x, T = np.asarray(x, dtype=float), np.asarray(T, dtype=float)
    log_alive_term = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    log_dead_term = math.log(s) - np.log(r + s + x) + _pareto_nbd_log_a0(params, x, t_x, T)
    return np.asarray(
        gammaln(r + x) - gammaln(r) + r * math.log(alpha) + s * math.log(beta)
        + np.logaddexp(log_alive_term, log_dead_term),
        dtype=float,
    )  # fmt: skip


class _StableParetoNBDFitter(ParetoNBDFitter):
    """lifetimes' Pareto/NBD fitter (its Nelder-Mead from its random start) on the stable log-likelihood.

    lifetimes' objective calls ``ParetoNBDFitter._conditional_log_likelihood`` by name, so both are replaced.
    Where lifetimes' likelihood is finite the two agree to about 1e-12 (on the CDNOW sample the fitted parameters
    are lifetimes' to the last bit); where it is NaN (heavy buyers, e.g. with t_x = T), lifetimes' Nelder-Mead
    stalls at its random start, and this one goes on.
    """

    @staticmethod
    def _conditional_log_likelihood(params: Any, freq: Any, rec: Any, T: Any) -> np.ndarray:
        return _pareto_nbd_log_likelihood(params, freq, rec, T)

    @staticmethod
    def _negative_log_likelihood(
        params: Any, freq: Any, rec: Any, T: Any, weights: Any, penalizer_coef: float
    ) -> float:
        """lifetimes' objective (total negative log-likelihood plus its L2 penalty, over the mean weight), +inf
        outside the domain.

        lifetimes divides the weighted total by the mean weight, which is 1 on one row per customer; its penalty
        is divided by it here too, so that a fit on unique rows with their counts is the fit on the customers'
        rows (lifetimes adds the penalty undivided, so its compressed fit is penalised more).
        Not finite (parameters the optimiser has pushed to overflow) counts as +inf, the worst value: a NaN
        would leave Nelder-Mead's comparisons undefined.
        """
        if np.any(np.asarray(params) <= 0.0):
            return np.inf
        row_ll = _pareto_nbd_log_likelihood(params, freq, rec, T)
        penalty = penalizer_coef * float(np.sum(np.asarray(params) ** 2))
        value = -float(((weights * row_ll).sum() - penalty) / weights.mean())
        return value if math.isfinite(value) else np.inf


class ParetoNBD(PurchaseModel):
    """Pareto/NBD: purchases at rate lambda ~ Gamma(r, alpha); lifetimes exponential with mu ~ Gamma(s, beta).

    References
    ----------
    Schmittlein, Morrison & Colombo (1987), "Counting your customers", Management Science 33(1);
    Fader & Hardie (2005), note 009, eq. (18).
    """

    name = "pareto"
    title = "Pareto/NBD"
    param_names = ("r", "alpha", "s", "beta")
    lifetimes_names = ("r", "alpha", "s", "beta")
    fitter_class = _StableParetoNBDFitter
    time_scaled_params = ("alpha", "beta")
    penalty_per_customer = False
    dropout_param = "s"

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        row_ll = _pareto_nbd_log_likelihood(params, data["frequency"], data["recency"], data["T"])
        return float(np.sum(weights * row_ll))

    def _probability_alive(self, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(alive | x, t_x, T), 1 when t_x = T.

        P(alive) = 1 / (1 + s / (r + s + x) (alpha + T)^(r + x) (beta + T)^s A_0), evaluated as the logistic
        function of minus the log-odds with the stable ln A_0 (``_pareto_nbd_log_a0``), so it is finite for any
        number of purchases, where lifetimes' formula gives NaN for heavy buyers with t_x = T.

        References
        ----------
        Fader & Hardie (2005), note 009, eq. (36) and (37).
        """
        params = [self.params_[k] for k in self.param_names]
        return np.asarray(expit(-_pareto_nbd_log_odds_dead(params, frequency, recency, T)), dtype=float)

    def _conditional_expectation(
        self, t: float, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """E[X(t) | x, t_x, T], through P(alive) so that it is finite for any number of purchases.

        Note 009's eq. (41) divided by the likelihood is
        P(alive) (r + x) (beta + T) / (alpha + T) [1 - ((beta + T) / (beta + T + t))^(s - 1)] / (s - 1);
        lifetimes evaluates it as exp(ln(numerator) - ln L), which is NaN wherever its ln L is. The bracket over
        s - 1 is -expm1(-(s - 1) l) / (s - 1), l = ln(1 + t / (beta + T)), accurate near s = 1, with limit l at s = 1.

        References
        ----------
        Fader & Hardie (2005), note 009, eq. (41).
        """
        r, alpha, s, beta = (self.params_[k] for k in self.param_names)
        alive = expit(-_pareto_nbd_log_odds_dead((r, alpha, s, beta), frequency, recency, T))
        log_growth = np.log1p(t / (beta + T))
        per_unit = log_growth if s == 1 else -np.expm1((1 - s) * log_growth) / (s - 1)
        return np.asarray(alive * (r + frequency) / (alpha + T) * (beta + T) * per_unit, dtype=float)

    def probability_of_purchases(self, n: int, t: ArrayLike) -> np.ndarray:
        """Probability that a customer acquired at time 0 makes exactly ``n`` repeat purchases in (0, t].

        lifetimes has no unconditional formula for Pareto/NBD, so it is integrated here: given a lifetime
        tau ~ Exponential(mu), purchases in (0, min(t, tau)] are NBD(r, alpha), and mu ~ Gamma(s, beta) gives
        P(X(t) = n) = (beta / (beta + t))^s NBD(n; t) + integral_0^t s beta^s / (beta + u)^(s + 1) NBD(n; u) du.

        References
        ----------
        Schmittlein, Morrison & Colombo (1987); Fader & Hardie (2005), note 009.
        """
        r, alpha, s, beta = (self.params_[k] for k in self.param_names)
        times = np.asarray(t, float)
        unique, codes = np.unique(times, return_inverse=True)
        log_coefficient = gammaln(r + n) - gammaln(r) - gammaln(n + 1)

        def nbd(u: float) -> float:
            if u <= 0:
                return 1.0 if n == 0 else 0.0
            return float(np.exp(log_coefficient + r * np.log(alpha / (alpha + u)) + n * np.log(u / (alpha + u))))

        def death_density(u: float) -> float:
            return s * beta**s / (beta + u) ** (s + 1)

        values = np.array(
            [
                (beta / (beta + u)) ** s * nbd(u) + quad(lambda v: death_density(v) * nbd(v), 0.0, u, limit=200)[0]
                for u in unique
            ]
        )
        return values[codes.reshape(times.shape)]
