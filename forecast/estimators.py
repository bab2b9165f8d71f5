"""Purchase models (BG/NBD, MBG/NBD, Pareto/NBD) and the Gamma-Gamma spend model.

This is the only module that imports lifetimes. lifetimes supplies the conditional-expectation
formulas (MBG/NBD's and Pareto/NBD's in forms rewritten here to stay finite for heavy buyers) and fits
MBG/NBD and Pareto/NBD (maximum likelihood; Pareto/NBD on that stable likelihood). BG/NBD and Gamma-Gamma
are fitted here instead, by lifetimes' own minimisation (same objective, start, method and tolerance)
with a NumPy log-likelihood and its analytic gradient, several times faster on millions of customers;
tests/test_estimators_fast.py checks parameters, log-likelihoods, standard errors and predictions
against lifetimes' fitters. This module also adds what lifetimes lacks: fits on the compressed
summary (unique rows with weights), a total log-likelihood and standard errors that are comparable
across models, sanity checks, and JSON round trips without pickle.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy.integrate import quad
from scipy.special import digamma, expit, gammaln, hyp2f1
from threadpoolctl import threadpool_limits

from forecast.compress import Histories, SpendHistories, as_floats, distinct_counts, ranked_codes, sorted_unique_rows
from forecast.errors import FitError, ForecastWarning

with warnings.catch_warnings():
    # lifetimes sets a pandas option that pandas 3 removed, and silences FutureWarnings globally.
    warnings.simplefilter("ignore")
    from autograd import value_and_grad
    from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter, ParetoNBDFitter
    from lifetimes.fitters import BaseFitter
    from lifetimes.utils import ConvergenceError, _check_inputs
    from scipy.optimize import minimize
warnings.simplefilter("default", FutureWarning)

ArrayLike = np.ndarray | pd.Series
ParetoParams = Sequence[float] | np.ndarray  # r, alpha, s, beta
FREQUENCY_SPEND_CORRELATION_LIMIT = 0.3


def _numerical_hessian(func: Callable[[np.ndarray], float], x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian (lifetimes gives none for Pareto/NBD; one method for all models)."""
    n = len(x)
    hess = np.empty((n, n))
    eye = np.eye(n) * step
    for i in range(n):
        for j in range(i, n):
            value = (
                func(x + eye[i] + eye[j])
                - func(x + eye[i] - eye[j])
                - func(x - eye[i] + eye[j])
                + func(x - eye[i] - eye[j])
            ) / (4 * step * step)
            hess[i, j] = hess[j, i] = value
    return hess


def _hessian_from_gradients(
    gradient: Callable[[np.ndarray], np.ndarray], x: np.ndarray, step: float = 1e-4
) -> np.ndarray:
    """Central-difference Hessian from an analytic gradient: 2 n gradients instead of ~2 n^2 function values."""
    eye = np.eye(len(x)) * step
    hess = np.array([(gradient(x + e) - gradient(x - e)) / (2 * step) for e in eye])
    return (hess + hess.T) / 2


def unique_rows(columns: dict[str, ArrayLike], weights: ArrayLike | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Collapse identical rows into unique rows and their counts (the weights of a compressed fit).

    With ``weights`` (rows that already stand for several customers, e.g. a summary compressed by Spark),
    a unique row's weight is the sum of its rows' weights. The rows come out sorted, so the fit does not
    depend on the order the customers came in (DuckDB or Spark).
    """
    unique, _, counts = sorted_unique_rows(columns, None if weights is None else as_floats(weights))
    return unique, counts


#: Seed of NumPy's global generator while lifetimes fits (its Pareto/NBD fitter draws its start from it).
LIFETIMES_START_SEED = 0


@contextlib.contextmanager
def seeded_global_generator(seed: int) -> Iterator[None]:
    """Seed NumPy's legacy global generator for the block, then restore its state.

    lifetimes' Pareto/NBD fitter draws its starting point from the global generator, so unseeded fits
    differ in the fifth digit from run to run (and depend on whatever drew from it before).
    """
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002 (lifetimes uses the legacy global generator)
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _without_autograd_hessian(fitter_class: type) -> type:
    """The lifetimes fitter class with its maximisation unchanged but without its autograd Hessian.

    lifetimes' ``_fit`` runs ``scipy.optimize.minimize`` and then an autograd Hessian for its own
    standard errors, which this module does not use (it computes one Hessian for every model in
    ``_fit_compressed``). At 3.4 million customers (389,000 unique rows) that Hessian takes 2.3 s of
    a 5.6 s BG/NBD fit. The minimisation below is lifetimes' own call, argument for argument, so the
    parameters are bit-for-bit those of lifetimes (tests/test_compress.py checks it).
    """

    def _fit(
        self: Any, minimizing_function_args: tuple, initial_params: Any, params_size: int, disp: bool,
        tol: float = 1e-7, bounds: Any = None, **kwargs: Any,
    ) -> tuple[np.ndarray, float, np.ndarray]:  # fmt: skip
        options = {"disp": disp, **kwargs}
        x0 = 0.1 * np.ones(params_size) if initial_params is None else initial_params
        output = minimize(
            value_and_grad(self._negative_log_likelihood), jac=True, method=None, tol=tol, x0=x0,
            args=minimizing_function_args, options=options, bounds=bounds,
        )  # fmt: skip
        if not output.success:
            raise ConvergenceError("The model did not converge.")
        # lifetimes turns this matrix into its own (unused) variance estimates; the identity keeps them finite.
        return output.x, output.fun, np.eye(params_size)

    if getattr(fitter_class, "_fit", None) is not BaseFitter._fit:  # Pareto/NBD has its own _fit, no Hessian
        return fitter_class
    return type(fitter_class.__name__, (fitter_class,), {"_fit": _fit})


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and, for every value, the position of its distinct value (``ranked_codes``).

    The positions are intp: every evaluation of an objective gathers with them, and smaller codes would be
    converted each time.
    """
    codes, uniques = ranked_codes(values)
    return uniques, codes.astype(np.intp)


class _Objective(ABC):
    """A model's negative log-likelihood over log-parameters, with its analytic gradient, as lifetimes minimises it.

    Calling it gives lifetimes' objective (the weighted mean negative log-likelihood of the rows,
    penalizer 0) and its gradient. Terms that depend on one column only are summed once per distinct
    value of that column, so an evaluation costs a few passes over the rows rather than a dozen
    special-function calls per row.
    """

    size: ClassVar[int]  # number of parameters

    def __init__(self, data: dict[str, np.ndarray], weights: np.ndarray) -> None:
        self.total_weight = float(weights.sum())

    @abstractmethod
    def __call__(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood and its gradient at ``log_params`` (the papers' symbols, in order)."""

    @classmethod
    def maximise(cls, data: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """The lifetimes fitter's maximum-likelihood parameters, found with this objective.

        The minimisation is ``BaseFitter._fit``'s call: start 0.1 for every log-parameter, ``method=None``
        without bounds (BFGS in scipy), ``tol=1e-7``, so the optimiser takes lifetimes' steps up to rounding.
        Raises lifetimes' ConvergenceError, as its fitters do, when the optimiser reports failure.
        """
        output = minimize(
            cls(data, weights), x0=0.1 * np.ones(cls.size), jac=True, method="BFGS", tol=1e-7, options={"disp": False}
        )
        if not output.success:
            raise ConvergenceError("The model did not converge.")
        return np.exp(output.x)

    def log_likelihood(self, params: np.ndarray) -> float:
        """Total log-likelihood of the weighted rows at ``params``."""
        return -self(np.log(params))[0] * self.total_weight

    def hessian(self, log_params: np.ndarray) -> np.ndarray:
        """Hessian of the total negative log-likelihood over log-parameters, by differences of gradients."""
        return _hessian_from_gradients(lambda x: self(x)[1], log_params) * self.total_weight


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

    def __init__(self, data: dict[str, np.ndarray], weights: np.ndarray) -> None:
        super().__init__(data, weights)
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

    def __call__(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
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
        # ln(1 + e^d) and sigmoid(d) through e^-|d| <= 1: no overflow, and 5x faster than logaddexp and expit.
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
    def maximise(cls, data: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """``BetaGeoFitter.fit`` with this objective: lifetimes' input checks, time scale and minimisation."""
        frequency = data["frequency"].astype(int)  # lifetimes truncates, then checks
        _check_inputs(frequency, data["recency"], data["T"])
        scale = 1.0 / data["T"].max()  # lifetimes' _scale_time: the optimiser sees ages up to 1
        scaled = {"frequency": frequency, "recency": data["recency"] * scale, "T": data["T"] * scale}
        r, alpha, a, b = super().maximise(scaled, weights)
        return np.array([r, alpha / scale, a, b])


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

    def __init__(self, data: dict[str, np.ndarray], weights: np.ndarray) -> None:
        super().__init__(data, weights)
        x, m = np.asarray(data["frequency"], dtype=float), np.asarray(data["monetary_value"], dtype=float)
        self._x_values, x_codes = _distinct(x)
        self._x_weights = np.bincount(x_codes, weights=weights, minlength=len(self._x_values))
        self._weights, self._weights_x = weights, weights * x
        self._spend, self._inverse_spend = x * m, 1.0 / (x * m)
        self._log_m = float(weights @ np.log(m))
        self._log_spend = float(weights @ np.log(self._spend))

    def __call__(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
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

    @classmethod
    def maximise(cls, data: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """``GammaGammaFitter.fit`` with this objective: lifetimes' input checks and minimisation."""
        _check_inputs(data["frequency"], monetary_value=data["monetary_value"])
        return super().maximise(data, weights)


#: Above this variance of a log-parameter (a standard error of 10), the data do not identify the parameter.
MAX_LOG_PARAM_VARIANCE = 100.0


@dataclass(frozen=True)
class FitResult:
    """What a fit learned: parameters, uncertainty and diagnostics (all JSON-serialisable)."""

    params: dict[str, float]
    standard_errors: dict[str, float | None]
    covariance_log_params: list[list[float]] | None
    log_likelihood: float
    converged: bool
    customers: int
    unique_rows: int

    @property
    def identified(self) -> bool:
        """Whether the data pin every parameter down: an invertible information matrix whose log-parameter
        standard errors stay below 10 (a factor of e^10 either way); a maximum on the boundary (a, b -> 0) is not."""
        if self.covariance_log_params is None:
            return False
        return bool(np.all(np.diag(np.asarray(self.covariance_log_params)) < MAX_LOG_PARAM_VARIANCE))


class _Model(ABC):
    """Shared plumbing: fit (lifetimes' maximisation), check, compute the total log-likelihood and SEs.

    Subclasses declare the model's name, the papers' parameter symbols, the lifetimes fitter with its
    parameter names, and the total log-likelihood (from lifetimes' own formula, un-normalised). A model
    that declares an ``objective`` (its likelihood with an analytic gradient) is maximised by lifetimes'
    minimisation of it (``_maximise``) and gets its Hessian from gradient differences.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    lifetimes_names: ClassVar[tuple[str, ...]]
    fitter_class: ClassVar[type]
    objective: ClassVar[type[_Objective] | None] = None
    convergence_advice: ClassVar[str] = "another purchase_model (bgnbd, mbgnbd, pareto)"

    def __init__(self) -> None:
        self.result_: FitResult | None = None

    # --- to be declared by each model -------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        """Total log-likelihood of the weighted unique rows at ``params`` (the papers' symbols, in order)."""

    # --- shared ------------------------------------------------------------------------------------
    @property
    def params_(self) -> dict[str, float]:
        return self._result().params

    def _result(self) -> FitResult:
        if self.result_ is None:
            raise FitError(f"The {self.title} model is not fitted yet: call fit() or load an artifact first.")
        return self.result_

    def _fitter(self) -> Any:
        """A lifetimes fitter holding this model's parameters, built once per fit (predictions are hot paths)."""
        result = self._result()
        cached = getattr(self, "_lifetimes_fitter", None)
        if cached is not None and cached[0] is result:
            return cached[1]
        fitter = self.fitter_class()
        # A plain dict: lifetimes only looks parameters up by name, and a pandas Series lookup costs ~50x more.
        names = zip(self.param_names, self.lifetimes_names, strict=True)
        fitter.params_ = {name: result.params[p] for p, name in names}
        self._lifetimes_fitter = (result, fitter)
        return fitter

    def _maximise(self, data: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """Maximum-likelihood parameters (the papers' symbols, in order), as the lifetimes fitter finds them.

        With an ``objective``, by lifetimes' minimisation of it; if that reports failure (the two differ
        only by rounding) or its arithmetic fails, the lifetimes fitter decides, so a FitError always means
        lifetimes fails too, and a fault of the fast path is never the user's error.
        ``data`` holds the fitter's positional arguments in order: (frequency, recency, T), or
        (frequency, monetary_value) for Gamma-Gamma.
        """
        if self.objective is not None:
            with contextlib.suppress(ConvergenceError, ArithmeticError, ValueError):
                return self.objective.maximise(data, weights)
        fitter = _without_autograd_hessian(self.fitter_class)()
        with seeded_global_generator(LIFETIMES_START_SEED):
            fitter.fit(*data.values(), weights=weights)
        return np.array([float(fitter.params_[name]) for name in self.lifetimes_names])

    def _log_likelihood_and_hessian(
        self, params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Total log-likelihood at ``params`` and the Hessian of its negative over the log-parameters."""
        if self.objective is not None:
            objective = self.objective(data, weights)
            return objective.log_likelihood(params), objective.hessian(np.log(params))

        def neg_ll(log_params: np.ndarray) -> float:
            return -self._log_likelihood(np.exp(log_params), data, weights)

        return -neg_ll(np.log(params)), _numerical_hessian(neg_ll, np.log(params))

    def _fit_compressed(self, data: dict[str, np.ndarray], weights: np.ndarray) -> Self:
        try:
            # lifetimes prints the optimiser's report when it fails; the FitError says it instead. The fits'
            # dot products span at most a few million rows, where BLAS threads only add synchronisation
            # (a BG/NBD likelihood evaluation on 389,000 rows takes 5x longer with two threads on two busy cores).
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                threadpool_limits(limits=1, user_api="blas"),
            ):
                warnings.simplefilter("ignore", RuntimeWarning)
                vector = self._maximise(data, weights)
        except ConvergenceError:
            raise FitError(
                f"The {self.title} model did not converge on {int(weights.sum()):,} customers. Try a longer "
                f"calibration period, more customers, or {self.convergence_advice}."
            ) from None
        params = {p: float(v) for p, v in zip(self.param_names, vector, strict=True)}
        bad = {p: v for p, v in params.items() if not math.isfinite(v) or v <= 0}
        if bad:
            raise FitError(
                f"The {self.title} fit gave unusable parameters {bad} on {int(weights.sum()):,} customers; "
                "the data may be too small or degenerate. Check the summary with `forecast validate`."
            )
        with np.errstate(all="ignore"), threadpool_limits(limits=1, user_api="blas"):
            log_likelihood, hessian = self._log_likelihood_and_hessian(vector, data, weights)
        if not math.isfinite(log_likelihood):
            raise FitError(f"The {self.title} log-likelihood is not finite at the fitted parameters {params}.")
        standard_errors: dict[str, float | None] = dict.fromkeys(params)
        covariance: list[list[float]] | None = None
        try:
            cov_log = np.linalg.inv(hessian)
            variances = np.diag(cov_log) * vector**2  # delta method from log-parameters
            if np.all(np.isfinite(cov_log)) and np.all(variances > 0):
                standard_errors = {p: float(math.sqrt(v)) for p, v in zip(params, variances, strict=True)}
                covariance = cov_log.tolist()
        except np.linalg.LinAlgError:
            pass
        if covariance is None:
            warnings.warn(
                f"The {self.title} fit's information matrix is not invertible: standard errors and "
                "parameter-uncertainty intervals are unavailable. The data may be too small.",
                ForecastWarning,
                stacklevel=3,
            )
        self.result_ = FitResult(
            params=params,
            standard_errors=standard_errors,
            covariance_log_params=covariance,
            log_likelihood=log_likelihood,
            converged=True,
            customers=int(weights.sum()),
            unique_rows=len(weights),
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fitted model as plain JSON-serialisable data."""
        result = self._result()
        return {"name": self.name, **result.__dict__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a fitted model from ``to_dict`` output (no pickle, no code execution)."""
        model = cls()
        fields = set(FitResult.__dataclass_fields__)
        missing = fields - set(data)
        if data.get("name") != cls.name or missing:
            raise FitError(
                f"Not a {cls.title} model description (name {data.get('name')!r}, missing {sorted(missing)})."
            )
        params = data["params"]
        if set(params) != set(cls.param_names):
            raise FitError(f"A {cls.title} model needs parameters {cls.param_names}, got {sorted(params)}.")
        model.result_ = FitResult(**{k: data[k] for k in fields})
        return model


def _require_finite(
    values: np.ndarray, model: _Model, what: str, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """Return ``values`` if all are finite, else raise a FitError naming the first offending histories.

    The advice depends on why: a degenerate fit (no invertible information matrix, e.g. dropout parameters
    near 0 on a short calibration period) is a data problem; otherwise the model's formula overflows for
    very heavy buyers, where BG/NBD stays finite.
    """
    values = np.asarray(values, dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        x, t_x, age = (np.broadcast_to(np.asarray(v, float), values.shape)[bad] for v in (frequency, recency, T))
        examples = ", ".join(f"(x={a:g}, t_x={b:g}, T={c:g})" for a, b, c in list(zip(x, t_x, age, strict=True))[:3])
        result = model.result_
        # Fitted on data (more distinct histories than parameters) that do not identify the parameters.
        if result is not None and not result.identified and result.unique_rows > len(result.params):
            params = ", ".join(f"{name} {value:.3g}" for name, value in result.params.items())
            why = (
                f"the fit itself is degenerate ({params}; its information matrix is singular or nearly so), so the "
                "data up to as_of are too few or too short for this model. Use a later as_of, more customers, "
                "or another purchase_model."
            )
        else:
            why = "check those customers' transactions (a shared or test account?)."
        raise FitError(
            f"The {model.title} {what} are NaN or infinite for {int(bad.sum()):,} customer histories, "
            f"e.g. {examples}: {why}"
        )
    return values


class PurchaseModel(_Model):
    """Base for the purchase-and-dropout models; predictions take a horizon in model time units."""

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None) -> Self:
        """Fit by maximum likelihood on the unique (frequency, recency, T) rows, weighted by their counts.

        Parameters
        ----------
        frequency, recency, T
            Per-customer summary in model time units (see ``forecast.rfm.summarize``).
        weights
            Customers each row stands for (default 1 per row), for a summary already compressed.

        Returns
        -------
        self
        """
        unique, counts = unique_rows({"frequency": frequency, "recency": recency, "T": T}, weights)
        return self.fit_unique(
            unique["frequency"].to_numpy(), unique["recency"].to_numpy(), unique["T"].to_numpy(), counts
        )

    def fit_unique(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, counts: ArrayLike) -> Self:
        """Fit on unique (frequency, recency, T) rows in lexicographic order, weighted by their counts.

        What ``fit`` does once it has compressed the customers: pass rows that are already unique and sorted
        (``Histories`` holds them), as the result depends on the rows' order at the level of rounding.

        Parameters
        ----------
        frequency, recency, T
            The unique rows' columns, in model time units.
        counts
            Customers each row stands for.

        Returns
        -------
        self
        """
        # Contiguous columns: the sums of the fit may round differently over strided ones.
        data = {
            name: np.ascontiguousarray(as_floats(values))
            for name, values in (("frequency", frequency), ("recency", recency), ("T", T))
        }
        weights = as_floats(counts)
        if len(weights) == 0:
            raise FitError(f"The {self.title} model needs at least one customer.")
        if len(weights) < len(self.param_names):
            raise FitError(
                f"The {self.title} model has {len(self.param_names)} parameters but the data has only "
                f"{len(weights)} distinct customer histories ({int(weights.sum()):,} customers), so they cannot "
                "be estimated. Use a log with more customers (hundreds give stable estimates)."
            )
        if not (data["frequency"] > 0).any():
            raise FitError(
                f"Nobody in the data made a repeat purchase, so the {self.title} model cannot be fitted. "
                "Use a longer observation period."
            )
        return self._fit_compressed(data, weights)

    def _conditional_expectation(
        self, t: float, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """E[X(t) | x, t_x, T] by the model's formula (lifetimes' unless a model has a stabler form)."""
        return np.asarray(
            self._fitter().conditional_expected_number_of_purchases_up_to_time(t, frequency, recency, T), dtype=float
        )

    def expected_purchases(self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """Expected number of purchases in the next ``t`` time units given each customer's history."""
        with np.errstate(all="ignore"):
            values = self._conditional_expectation(
                t, np.asarray(frequency, float), np.asarray(recency, float), np.asarray(T, float)
            )
        # The closed forms, 1 - (...) * hyp2f1(...), round to about -1e-15 for short horizons.
        return np.maximum(_require_finite(values, self, "expected purchases", frequency, recency, T), 0.0)

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """Probability that each customer is still active at the end of observation."""
        with np.errstate(all="ignore"):
            values = self._fitter().conditional_probability_alive(
                np.asarray(frequency, float), np.asarray(recency, float), np.asarray(T, float)
            )
        return _require_finite(values, self, "probabilities of being alive", frequency, recency, T)

    def expected_purchases_new(self, t: ArrayLike) -> np.ndarray:
        """Expected repeat purchases in ``t`` time units for a customer acquired at time 0."""
        return np.asarray(self._fitter().expected_number_of_purchases_up_to_time(np.asarray(t, float)), dtype=float)

    def probability_of_purchases(self, n: int, t: ArrayLike) -> np.ndarray:
        """Probability that a customer acquired at time 0 makes exactly ``n`` repeat purchases in (0, t].

        Parameters
        ----------
        n
            Number of repeat purchases (0, 1, 2, ...).
        t
            Lengths of observation in model time units (one value per customer, or any array).

        Returns
        -------
        numpy.ndarray
            P(X(t) = n), shaped like ``t``.

        References
        ----------
        Fader, Hardie & Lee (2005), eq. (8) for BG/NBD; lifetimes' formula for MBG/NBD.
        """
        times = np.asarray(t, float)
        unique, codes = np.unique(times, return_inverse=True)
        fitter = self._fitter()
        with np.errstate(all="ignore"):
            values = np.array([float(fitter.probability_of_n_purchases_up_to_time(u, n)) for u in unique])
        return values[codes.reshape(times.shape)]


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

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        return _BetaGeoObjective(data, weights).log_likelihood(params)


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
        from scipy.special import expit, hyp2f1

        r, alpha, a, b = (self.params_[k] for k in self.param_names)
        x = frequency
        z = t / (alpha + T + t)
        product = np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - r, a - 1, a + b + x, z)
        numerator = (a + b + x) / (a - 1) * (1 - product)
        log_odds_dead = np.log(a / (b + x)) + (r + x) * np.log((alpha + T) / (alpha + recency))
        return np.asarray(numerator * expit(-log_odds_dead), dtype=float)


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
        """lifetimes' objective (weighted mean negative log-likelihood plus its L2 penalty), +inf outside the domain.

        Not finite (parameters the optimiser has pushed to overflow) counts as +inf, the worst value: a NaN
        would leave Nelder-Mead's comparisons undefined.
        """
        if np.any(np.asarray(params) <= 0.0):
            return np.inf
        row_ll = _pareto_nbd_log_likelihood(params, freq, rec, T)
        penalty = penalizer_coef * float(np.sum(np.asarray(params) ** 2))
        value = -float((weights * row_ll).sum() / weights.mean()) + penalty
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

    @staticmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        row_ll = _pareto_nbd_log_likelihood(params, data["frequency"], data["recency"], data["T"])
        return float(np.sum(weights * row_ll))

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """Probability that each customer is still active at the end of observation (1 when t_x = T).

        P(alive) = 1 / (1 + s / (r + s + x) (alpha + T)^(r + x) (beta + T)^s A_0), evaluated as the logistic
        function of minus the log-odds with the stable ln A_0 (``_pareto_nbd_log_a0``), so it is finite for any
        number of purchases, where lifetimes' formula gives NaN for heavy buyers with t_x = T.

        References
        ----------
        Fader & Hardie (2005), note 009, eq. (36) and (37).
        """
        with np.errstate(all="ignore"):
            values = expit(
                -_pareto_nbd_log_odds_dead(
                    [self.params_[k] for k in self.param_names],
                    np.asarray(frequency, float),
                    np.asarray(recency, float),
                    np.asarray(T, float),
                )
            )
        return _require_finite(values, self, "probabilities of being alive", frequency, recency, T)

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


PURCHASE_MODELS: dict[str, type[PurchaseModel]] = {m.name: m for m in (BetaGeo, ModifiedBetaGeo, ParetoNBD)}


def purchase_model(name: str) -> PurchaseModel:
    """A new, unfitted purchase model by its config name (bgnbd, mbgnbd, pareto)."""
    return PURCHASE_MODELS[name]()


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
    param_names = ("p", "q", "gamma")
    lifetimes_names = ("p", "q", "v")
    fitter_class = GammaGammaFitter
    convergence_advice = "the heuristic CLV until there are more repeat buyers"
    objective = _GammaGammaObjective

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

    def expected_spend(self, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
        """Expected average spend per future purchase given each customer's history (currency units).

        Customers with no repeat purchase get the population mean, p * gamma / (q - 1).
        """
        x = np.asarray(frequency, float)
        m = np.where(x > 0, np.asarray(monetary_value, float), 0.0)
        with np.errstate(all="ignore"):
            values = self._fitter().conditional_expected_average_profit(x, m)
        return np.asarray(values, dtype=float)

    def average_spend_density(self, z: ArrayLike, frequency: ArrayLike) -> np.ndarray:
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
        x_values, counts = distinct_counts(np.asarray(frequency, float))
        weights = counts / counts.sum()
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


def fit_models(
    summary: pd.DataFrame,
    model_name: str,
    histories: Histories | None = None,
    spend_histories: SpendHistories | None = None,
) -> tuple[PurchaseModel, GammaGamma]:
    """Fit a purchase model (bgnbd, mbgnbd, pareto) and Gamma-Gamma on a per-customer summary.

    Warns when repeat buyers' frequency and average spend are correlated (Gamma-Gamma assumes independence).

    Parameters
    ----------
    summary
        Output of ``forecast.rfm.summarize`` (indexed by customer_id).
    model_name
        The purchase model's config name.
    histories, spend_histories
        The summary's unique histories, if already computed (``Histories.from_summary``,
        ``SpendHistories.from_summary``): the fits take their rows and counts.
    """
    histories = histories if histories is not None else Histories.from_summary(summary)
    spend_histories = spend_histories if spend_histories is not None else SpendHistories.from_summary(summary)
    return fit_purchase_model(model_name, histories), fit_spend_model(spend_histories)


def fit_purchase_model(model_name: str, histories: Histories) -> PurchaseModel:
    """Fit a purchase model (bgnbd, mbgnbd, pareto) on a summary's unique (frequency, recency, T) histories."""
    rows = histories.rows
    return purchase_model(model_name).fit_unique(rows[:, 0], rows[:, 1], rows[:, 2], histories.counts)


def fit_spend_model(spend_histories: SpendHistories) -> GammaGamma:
    """Fit Gamma-Gamma on a summary's unique (frequency, monetary_value) histories.

    Warns when repeat buyers' frequency and average spend are correlated (Gamma-Gamma assumes independence).
    """
    spend_rows = spend_histories.rows
    spend = GammaGamma().fit_unique(spend_rows[:, 0], spend_rows[:, 1], spend_histories.counts)
    # The repeat buyers' correlation from their unique spend histories, each counted as often as it occurs.
    x, m = spend_rows[:, 0], spend_rows[:, 1]
    repeat = (x > 0) & (m > 0)
    if spend_histories.counts[repeat].sum() > 2:
        covariance = np.cov(x[repeat], m[repeat], fweights=spend_histories.counts[repeat])
        warn_if_spend_correlated(float(covariance[0, 1] / math.sqrt(covariance[0, 0] * covariance[1, 1])))
    return spend


def warn_if_spend_correlated(correlation: float) -> None:
    """Warn when repeat buyers' frequency and average spend correlate (Gamma-Gamma assumes independence)."""
    if abs(correlation) > FREQUENCY_SPEND_CORRELATION_LIMIT:
        warnings.warn(
            f"Frequency and average spend of repeat buyers are correlated ({correlation:.2f}); Gamma-Gamma "
            "assumes they are independent, so spend forecasts may be biased.",
            ForecastWarning,
            stacklevel=3,
        )
