"""The predictive distribution of a customer's purchase count in a coming window: P(X(t) = n | x, t_x, T).

A customer who is alive at the end of observation T is, for every model here, a new customer of the same model
with updated parameters: given alive, lambda ~ Gamma(r + x, alpha + T) and the dropout parameter has its
posterior too (independent of lambda, because the likelihood of an alive customer factorises). So

    P(X(t) = n | x, t_x, T) = P(alive) P_new(X(t) = n; updated) + (1 - P(alive)) [n = 0],

with P_new the model's own probability for a customer acquired at time 0:

- BG/NBD: updated (r + x, alpha + T, a, b + x), P_new by Fader, Hardie & Lee (2005) eq. (8);
- MBG/NBD: updated (r + x, alpha + T, a, b + x + 1) (it also survived the chance to leave at time 0), and after
  that the BG/NBD process (a dropout chance after each purchase), so eq. (8) again;
- Pareto/NBD: updated (r + x, alpha + T, s, beta + T), P_new integrated over the lifetime
  (Gauss-Legendre on the window).

The mean of this distribution is each model's conditional expectation E[X(t) | x, t_x, T] (the tests check it).

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2), eq. (8) and (10);
Fader & Hardie (2005), note 009 (Pareto/NBD) and note 028 ("The Pareto/NBD conditional PMF");
Batislam, Denizel & Filiztekin (2007) (MBG/NBD).
"""

from __future__ import annotations

import numpy as np
from scipy.special import betainc, betaln, gammaln, logsumexp

from forecast.errors import FitError
from forecast.models import PurchaseModel

#: Gauss-Legendre nodes for the Pareto/NBD lifetime integral over the window (exact for polynomials of degree
#: 127; the integrand is smooth and at most one purchase-count peak wide).
GAUSS_NODES = 64
#: Rows evaluated at once in the Pareto/NBD integral (rows x nodes floats per temporary array).
ROWS_PER_CHUNK = 8192


def log_count_probability(
    model: PurchaseModel, t: float, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, n: np.ndarray
) -> np.ndarray:
    """ln P(X(t) = n | x, t_x, T): the log-probability that each customer makes exactly n purchases in the next t.

    Parameters
    ----------
    model
        A fitted BG/NBD, MBG/NBD or Pareto/NBD model (or any model with a ``log_count_probability`` method of this
        signature).
    t
        Length of the window in model time units.
    frequency, recency, T
        Each customer's summary at the start of the window, in model time units.
    n
        Purchases each customer made in the window (non-negative integers).

    Returns
    -------
    numpy.ndarray
        One log-probability per customer (finite, at most 0).

    Raises
    ------
    FitError
        The model has no predictive distribution here, or it is not finite for some customers.
    """
    x, t_x, age, count = (np.asarray(v, dtype=float) for v in (frequency, recency, T, n))
    own = getattr(model, "log_count_probability", None)
    if callable(own):
        return np.asarray(own(t, x, t_x, age, count), dtype=float)
    log_alive_pmf, p_alive = _alive_log_pmf(model, t, x, t_x, age, count)
    with np.errstate(divide="ignore"):
        dead = np.where(count == 0, np.log1p(-np.minimum(p_alive, 1.0)), -np.inf)
        values = np.logaddexp(np.log(p_alive) + log_alive_pmf, dead)
    if not np.all(np.isfinite(values)):
        bad = int((~np.isfinite(values)).sum())
        raise FitError(f"The {model.title} probabilities of the purchase counts are not finite for {bad:,} rows.")
    return np.minimum(values, 0.0)


def _alive_log_pmf(
    model: PurchaseModel, t: float, x: np.ndarray, t_x: np.ndarray, age: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ln P(X(t) = n | alive at T) with the model's updated parameters, and P(alive) (1 for a model without dropout)."""
    params = model.params_
    if model.name in ("bgnbd", "mbgnbd"):
        b = params["b"] + x + (1.0 if model.name == "mbgnbd" else 0.0)
        log_pmf = bgnbd_log_pmf(n, t, params["r"] + x, params["alpha"] + age, params["a"], b)
        return log_pmf, np.asarray(model.p_alive(x, t_x, age), dtype=float)
    if model.name == "pareto":
        log_pmf = pareto_log_pmf(n, t, params["r"] + x, params["alpha"] + age, params["s"], params["beta"] + age)
        return log_pmf, np.asarray(model.p_alive(x, t_x, age), dtype=float)
    if set(params) == {"r", "alpha"}:  # the NBD: no dropout, lambda ~ Gamma(r + x, alpha + T)
        return nbd_log_pmf(n, t, params["r"] + x, params["alpha"] + age), np.ones_like(x)
    raise FitError(f"The {model.title} model has no predictive distribution of purchase counts to score it with.")


def nbd_log_pmf(n: np.ndarray, t: float | np.ndarray, r: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """ln P(N = n) for purchases at rate lambda ~ Gamma(r, rate alpha) over t: NBD(r, alpha / (alpha + t)).

    References
    ----------
    Fader, Hardie & Lee (2005), eq. (2) integrated over lambda (the NBD model, Ehrenberg 1959).
    """
    return np.asarray(
        gammaln(r + n) - gammaln(r) - gammaln(n + 1.0) + r * np.log(alpha / (alpha + t)) + n * np.log(t / (alpha + t)),
        dtype=float,
    )


def bgnbd_log_pmf(
    n: np.ndarray, t: float, r: np.ndarray, alpha: np.ndarray, a: float | np.ndarray, b: np.ndarray
) -> np.ndarray:
    """ln P(X(t) = n) of BG/NBD for a customer acquired at time 0 (Fader, Hardie & Lee 2005, eq. 8).

    P(X(t) = n) = B(a, b + n) / B(a, b) NBD(n) + [n > 0] B(a + 1, b + n - 1) / B(a, b) P(N >= n), with N the NBD
    count over t: the customer is alive after n purchases, or left after the n-th. P(N >= n) is the regularised
    incomplete beta I_q(n, r), q = t / (alpha + t); where it underflows (far in the tail), the geometric bound
    NBD(n) / (1 - q (r + n) / (n + 1)) of the tail from n on is used, which is its value to first order.
    """
    n, r, alpha, b = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (n, r, alpha, b)))
    a = np.broadcast_to(np.asarray(a, dtype=float), n.shape)
    log_nbd = nbd_log_pmf(n, t, r, alpha)
    log_beta_ab = betaln(a, b)
    alive = betaln(a, b + n) - log_beta_ab + log_nbd
    repeat = n > 0
    if not repeat.any():
        return np.asarray(alive, dtype=float)
    q = t / (alpha[repeat] + t)
    nr, rr = n[repeat], r[repeat]
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.log(betainc(nr, rr, q))
        ratio = q * (rr + nr) / (nr + 1.0)
        bound = log_nbd[repeat] - np.log1p(-np.minimum(ratio, 1.0 - 1e-12))
    tail = np.where(np.isfinite(tail), tail, bound)
    left = betaln(a[repeat] + 1.0, b[repeat] + nr - 1.0) - log_beta_ab[repeat] + tail
    values = alive.copy()
    values[repeat] = np.logaddexp(alive[repeat], left)
    return np.asarray(values, dtype=float)


def pareto_log_pmf(n: np.ndarray, t: float, r: np.ndarray, alpha: np.ndarray, s: float, beta: np.ndarray) -> np.ndarray:
    """ln P(X(t) = n) of Pareto/NBD for a customer acquired at time 0.

    With the lifetime tau ~ Exponential(mu), mu ~ Gamma(s, beta): P(tau > u) = (beta / (beta + u))^s and
    P(X(t) = n) = P(tau > t) NBD(n; t) + integral_0^t s beta^s / (beta + u)^(s + 1) NBD(n; u) du, the integral by
    Gauss-Legendre with ``GAUSS_NODES`` nodes, summed in log space.

    References
    ----------
    Schmittlein, Morrison & Colombo (1987); Fader & Hardie (2005), note 028 (a closed form of the same quantity).
    """
    n, r, alpha, beta = (a.ravel() for a in np.broadcast_arrays(*(np.asarray(v, float) for v in (n, r, alpha, beta))))
    nodes, weights = np.polynomial.legendre.leggauss(GAUSS_NODES)
    u = (nodes + 1.0) * (t / 2.0)
    log_w = np.log(weights * (t / 2.0))
    log_s = float(np.log(s))
    values = np.empty(n.shape, dtype=float)
    for start in range(0, len(n), ROWS_PER_CHUNK):
        part = slice(start, start + ROWS_PER_CHUNK)
        nn, rr, aa, bb = (v[part, None] for v in (n, r, alpha, beta))
        survive_all = s * np.log(bb / (bb + t)) + nbd_log_pmf(nn, t, rr, aa)
        die_at = log_s + s * np.log(bb) - (s + 1.0) * np.log(bb + u) + nbd_log_pmf(nn, u, rr, aa) + log_w
        values[part] = np.logaddexp(survive_all[:, 0], logsumexp(die_at, axis=1))
    return values
