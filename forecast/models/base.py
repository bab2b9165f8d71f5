"""The model base classes: fitting on compressed histories, standard errors, checks, JSON round trips, predictions."""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self, overload

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from forecast.data.compress import (
    as_floats,
)
from forecast.errors import FitError, ForecastWarning, NotFittedError
from forecast.models._lifetimes import (
    ConvergenceError,
)
from forecast.models.fitting import (
    LIFETIMES_START_SEED,
    ArrayLike,
    OptimiserStoppedError,
    _numerical_hessian,
    _Objective,
    _without_autograd_hessian,
    penalty_hessian,
    seeded_global_generator,
    unique_rows,
)

#: Above this variance of a log-parameter (a standard error of 10), the data do not identify the parameter.
MAX_LOG_PARAM_VARIANCE = 100.0

#: Half-width of 95% intervals in standard errors: the standard normal's 97.5% quantile, norm.ppf(0.975).
Z_95 = 1.959963984540054


class ConvergenceFitError(FitError):
    """The optimiser stopped without converging: a FitError that also says where it stopped.

    Attributes
    ----------
    stopped_at
        The parameters where the optimiser stopped (the papers' symbols), None when it did not say.
    log_likelihood
        The total log-likelihood there, None when not known or not finite.
    """

    def __init__(self, message: str, stopped_at: dict[str, float] | None, log_likelihood: float | None) -> None:
        super().__init__(message)
        self.stopped_at = stopped_at
        self.log_likelihood = log_likelihood


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


class _Estimator:
    """scikit-learn's estimator contract without importing scikit-learn (60-90 ms more on every CLI run).

    Settings are the ``__init__`` arguments, stored under their own names; ``get_params`` and ``set_params``
    read and write them as ``sklearn.base.BaseEstimator`` does, so ``sklearn.base.clone`` works.
    """

    @classmethod
    def _init_parameters(cls) -> list[inspect.Parameter]:
        """The settings: ``__init__``'s named parameters, sorted by name (none when there is no ``__init__``)."""
        if cls.__init__ is object.__init__:
            return []
        parameters = inspect.signature(cls.__init__).parameters.values()
        kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        return sorted((p for p in parameters if p.name != "self" and p.kind not in kinds), key=lambda p: p.name)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings by name; with ``deep``, those of settings that are estimators too, as ``name__setting``."""
        params: dict[str, Any] = {}
        for parameter in self._init_parameters():
            value = getattr(self, parameter.name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                params.update((f"{parameter.name}__{k}", v) for k, v in value.get_params().items())
            params[parameter.name] = value
        return params

    def set_params(self, **params: Any) -> Self:
        """Change settings by name (``name__setting`` for a setting of a setting) and return self.

        Raises
        ------
        ValueError
            A name is not a setting of this estimator.
        """
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, delimiter, sub_key = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {sorted(valid)!r}."
                )
            if delimiter:
                nested.setdefault(name, {})[sub_key] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            valid[name].set_params(**sub_params)
        return self

    def _non_default_settings(self) -> dict[str, Any]:
        """The settings that differ from their defaults, by name."""
        return {
            p.name: getattr(self, p.name)
            for p in self._init_parameters()
            if p.default is inspect.Parameter.empty or getattr(self, p.name) != p.default
        }

    def _changed_settings(self) -> list[str]:
        """``name=value`` for each setting that differs from its default, as scikit-learn's repr shows them."""
        return [f"{name}={value!r}" for name, value in self._non_default_settings().items()]


class _Model(_Estimator, ABC):
    """Shared plumbing: fit (lifetimes' maximisation), check, compute the total log-likelihood and SEs.

    Subclasses declare the model's name, the papers' parameter symbols, the lifetimes fitter with its
    parameter names, and the total log-likelihood (from lifetimes' own formula, un-normalised). A model
    that declares an ``objective`` (its likelihood with an analytic gradient) is maximised by lifetimes'
    minimisation of it (``_maximise``) and gets its Hessian from gradient differences.

    As a scikit-learn estimator: ``__init__`` only stores settings, ``fit`` returns self, and what a fit learns
    ends in ``_`` and exists only after it (``result_``, ``params_``, ``log_likelihood_``); before, they raise
    ``NotFittedError``, which is a ``FitError`` and an ``AttributeError``.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    lifetimes_names: ClassVar[tuple[str, ...]]
    #: lifetimes' fitter of the model (None for a model lifetimes does not have).
    fitter_class: ClassVar[type | None]
    objective: ClassVar[type[_Objective] | None] = None
    convergence_advice: ClassVar[str] = "another purchase_model (bgnbd, mbgnbd, pareto)"
    #: Whether a failed fast fit is retried with lifetimes' own fitter (much slower; off for the many quick fits
    #: of the model selection, where a failure just rules the model out).
    lifetimes_fallback: bool = True
    #: Parameters lifetimes estimates in its rescaled time (ages up to 1, ``_scale_time``), so penalises there.
    time_scaled_params: ClassVar[tuple[str, ...]] = ()
    #: Whether lifetimes adds the penalty to the mean negative log-likelihood per customer (BG/NBD, MBG/NBD,
    #: Gamma-Gamma), so that it weighs as much as one customer's likelihood; Pareto/NBD adds it to the total.
    penalty_per_customer: ClassVar[bool] = True

    #: What the fit learned; set by ``fit`` and ``from_dict`` only, absent before.
    result_: FitResult

    def __init__(self, penalizer: float = 0.0) -> None:
        """Store the settings.

        Parameters
        ----------
        penalizer
            lifetimes' ``penalizer_coef``: ``penalizer * sum(params ** 2)`` is added to the objective lifetimes
            minimises (the mean negative log-likelihood per customer; the total for Pareto/NBD), with alpha and
            beta in lifetimes' rescaled time. 0 is maximum likelihood.
        """
        self.penalizer = penalizer

    # --- to be declared by each model -------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def _log_likelihood(params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray) -> float:
        """Total log-likelihood of the weighted unique rows at ``params`` (the papers' symbols, in order)."""

    # --- shared ------------------------------------------------------------------------------------
    @property
    def params_(self) -> dict[str, float]:
        """Fitted parameters by the papers' symbols."""
        return self._result().params

    @property
    def log_likelihood_(self) -> float:
        """Total log-likelihood of the fitted customers at ``params_``."""
        return self._result().log_likelihood

    def _result(self) -> FitResult:
        result: FitResult | None = getattr(self, "result_", None)
        if result is None:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                f"before using this estimator, or load a fitted {self.title} model with from_dict."
            )
        return result

    def summary(self) -> pd.DataFrame:
        """Parameter estimates with standard errors and 95% intervals; the fit's diagnostics in ``attrs``.

        Returns
        -------
        pandas.DataFrame
            Indexed by parameter (the papers' symbols, in ``param_names`` order) with columns ``estimate``,
            ``std_error`` (delta method) and ``lower_95``, ``upper_95`` (exp(ln theta -/+ 1.96 se(ln theta)), from
            the log-parameter covariance, so always positive); NaN where the information matrix was not
            invertible. ``attrs`` holds ``model``, ``log_likelihood``, ``customers``, ``unique_rows`` and
            ``converged``.

        Raises
        ------
        NotFittedError
            The model is not fitted.
        """
        result = self._result()
        estimate = np.array([result.params[p] for p in self.param_names])
        errors = (result.standard_errors.get(p) for p in self.param_names)
        std_error = np.array([np.nan if e is None else e for e in errors], dtype=float)
        log_se = np.full(len(estimate), np.nan)
        if result.covariance_log_params is not None:
            log_se = np.sqrt(np.diag(np.asarray(result.covariance_log_params, dtype=float)))
        frame = pd.DataFrame(
            {
                "estimate": estimate,
                "std_error": std_error,
                "lower_95": estimate * np.exp(-Z_95 * log_se),
                "upper_95": estimate * np.exp(Z_95 * log_se),
            },
            index=pd.Index(self.param_names, name="parameter"),
        )
        frame.attrs = {
            "model": self.name,
            "log_likelihood": result.log_likelihood,
            "customers": result.customers,
            "unique_rows": result.unique_rows,
            "converged": result.converged,
        }
        return frame

    def __repr__(self) -> str:
        """``BetaGeo()`` before fit; after, ``BetaGeo(r=0.2426, ...; 2,357 customers, log-likelihood -9582.4)``."""
        parts = self._changed_settings()
        result: FitResult | None = getattr(self, "result_", None)
        if result is None:
            return f"{type(self).__name__}({', '.join(parts)})"
        parts += [f"{p}={result.params[p]:.4g}" for p in self.param_names]
        fit = f"{result.customers:,} customers, log-likelihood {result.log_likelihood:.1f}"
        return f"{type(self).__name__}({', '.join(parts)}; {fit})"

    def _fitter(self) -> Any:
        """A lifetimes fitter holding this model's parameters, built once per fit (predictions are hot paths)."""
        result = self._result()
        cached = getattr(self, "_lifetimes_fitter", None)
        if cached is not None and cached[0] is result:
            return cached[1]
        if self.fitter_class is None:
            raise TypeError(f"lifetimes has no {self.title} fitter: the model computes its predictions itself.")
        fitter = self.fitter_class()
        # A plain dict: lifetimes only looks parameters up by name, and a pandas Series lookup costs far more.
        names = zip(self.param_names, self.lifetimes_names, strict=True)
        fitter.params_ = {name: result.params[p] for p, name in names}
        self._lifetimes_fitter = (result, fitter)
        return fitter

    def _maximise(self, data: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """Maximum-likelihood parameters (the papers' symbols, in order), as the lifetimes fitter finds them.

        With an ``objective``, by lifetimes' minimisation of it. If that reports failure (the two differ only
        by rounding) or its arithmetic fails, lifetimes' own fitter decides and a ForecastWarning says so: a
        FitError then always means lifetimes fails too, and a fault of the fast path is never the user's error.
        ``data`` holds the fitter's positional arguments in order: (frequency, recency, T), or
        (frequency, monetary_value) for Gamma-Gamma.
        """
        fast_failure: Exception | None = None
        if self.objective is not None:
            try:
                return self.objective.maximise(data, weights, **self._penalties())
            except (ConvergenceError, ArithmeticError, ValueError) as exc:
                fast_failure = exc
        fitter_class = self._lifetimes_fitter_class() if self.lifetimes_fallback else None
        if fitter_class is None:  # nothing else can decide: the fast fit's failure is the fit's
            raise fast_failure if isinstance(fast_failure, ConvergenceError) else ConvergenceError(str(fast_failure))
        fitter = _without_autograd_hessian(fitter_class)(penalizer_coef=self.penalizer)
        with seeded_global_generator(LIFETIMES_START_SEED):
            fitter.fit(*data.values(), weights=weights)
        if fast_failure is not None:
            warnings.warn(
                f"The fast {self.title} fit failed ({type(fast_failure).__name__}: {fast_failure}); lifetimes' own "
                "fitter was used instead (the same likelihood, start and optimiser, only slower).",
                ForecastWarning,
                stacklevel=4,
            )
        return np.array([float(fitter.params_[name]) for name in self.lifetimes_names])

    def _penalties(self) -> dict[str, float]:
        """The penalty settings of the model's objective, by name."""
        return {"penalizer": self.penalizer}

    def _lifetimes_fitter_class(self) -> type | None:
        """The lifetimes fitter that fits this model with these settings, None when lifetimes has none."""
        return self.fitter_class

    def _log_likelihood_and_hessian(
        self, params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Total log-likelihood at ``params`` and the Hessian of the negative of what the fit maximised (the
        log-likelihood, less the penalty when there is one) over the log-parameters."""
        if self.objective is not None:
            objective = self.objective(data, weights)
            log_likelihood, hessian = objective.log_likelihood(params), objective.hessian(np.log(params))
        else:

            def neg_ll(log_params: np.ndarray) -> float:
                return -self._log_likelihood(np.exp(log_params), data, weights)

            log_likelihood, hessian = -neg_ll(np.log(params)), _numerical_hessian(neg_ll, np.log(params))
        penalty = self._penalty_hessian(params, data, weights)
        return log_likelihood, hessian if penalty is None else hessian + penalty

    def _penalty_hessian(
        self, params: np.ndarray, data: dict[str, np.ndarray], weights: np.ndarray
    ) -> np.ndarray | None:
        """Hessian over the log-parameters of the penalty in total log-likelihood units (None without one)."""
        if not self.penalizer:
            return None
        per_customer = float(weights.sum()) if self.penalty_per_customer else 1.0
        return penalty_hessian(self._as_lifetimes_scales(params, data), self.penalizer) * per_customer

    def _as_lifetimes_scales(self, params: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
        """The parameters as lifetimes' optimiser sees them: the time-scaled ones in time units of max T."""
        scaled = np.array(params, dtype=float)
        for name in self.time_scaled_params:
            scaled[self.param_names.index(name)] /= float(data["T"].max())
        return scaled

    def _stopping_point(
        self, stopped: ConvergenceError, data: dict[str, np.ndarray], weights: np.ndarray
    ) -> tuple[dict[str, float] | None, float | None]:
        """Where a fit that did not converge stopped, and the log-likelihood there (Nones when not known)."""
        if not isinstance(stopped, OptimiserStoppedError):
            return None, None
        params = np.exp(stopped.log_params)
        for name in self.time_scaled_params:
            params[self.param_names.index(name)] /= stopped.time_scale
        with np.errstate(all="ignore"):
            log_likelihood = float(self._log_likelihood(params, data, weights))
        named = {p: float(v) for p, v in zip(self.param_names, params, strict=True)}
        return named, log_likelihood if math.isfinite(log_likelihood) else None

    def _fit_compressed(self, data: dict[str, np.ndarray], weights: np.ndarray) -> Self:
        try:
            # lifetimes prints the optimiser's report when it fails; the FitError says it instead. The fits'
            # dot products span at most a few million rows, where BLAS threads only add synchronisation (and
            # compete with the run's second thread for the cores).
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                threadpool_limits(limits=1, user_api="blas"),
            ):
                warnings.simplefilter("ignore", RuntimeWarning)
                vector = self._maximise(data, weights)
        except ConvergenceError as exc:
            raise ConvergenceFitError(
                f"The {self.title} model did not converge on {int(weights.sum()):,} customers. Try a longer "
                f"calibration period, more customers, or {self.convergence_advice}.",
                *self._stopping_point(exc, data, weights),
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
        """The fitted model as plain JSON-serialisable data: its name, the settings that differ from their
        defaults (a penalised fit's ``penalizer``), and what the fit learned."""
        result = self._result()
        return {"name": self.name, **self._non_default_settings(), **result.__dict__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a fitted model from ``to_dict`` output (no pickle, no code execution)."""
        settings = {p.name: data[p.name] for p in cls._init_parameters() if p.name in data}
        bad = {k: v for k, v in settings.items() if not _is_penalty(v)}
        if bad:
            raise FitError(f"A {cls.title} model's settings {bad} are not finite non-negative numbers.")
        model = cls(**settings)
        fields = set(FitResult.__dataclass_fields__)
        missing = fields - set(data)
        if data.get("name") != cls.name or missing:
            raise FitError(
                f"Not a {cls.title} model description (name {data.get('name')!r}, missing {sorted(missing)})."
            )
        params = data["params"]
        if set(params) != set(cls.param_names):
            raise FitError(f"A {cls.title} model needs parameters {cls.param_names}, got {sorted(params)}.")
        values = {k: data[k] for k in fields}
        if values["log_likelihood"] is None:  # a model without a likelihood (JSON null for NaN)
            values["log_likelihood"] = math.nan
        model.result_ = FitResult(**values)
        return model


def _is_penalty(value: Any) -> bool:
    """Whether ``value`` is a usable penalty setting: a finite non-negative number (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


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
        result = model._result()
        # Fitted on data (more distinct histories than parameters) that do not identify the parameters.
        if not result.identified and result.unique_rows > len(result.params):
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


def _like_input(values: np.ndarray, first: object, name: str) -> np.ndarray | pd.Series:
    """``values`` as a Series named ``name`` on ``first``'s index when ``first`` is a Series, else as they are."""
    if isinstance(first, pd.Series):
        return pd.Series(values, index=first.index, name=name)
    return values


class PurchaseModel(_Model):
    """Base for the purchase-and-dropout models; predictions take a horizon in model time units."""

    #: The parameter whose limit 0 means that nobody drops out (a, s), None for a model without dropout.
    dropout_param: ClassVar[str | None] = None

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None) -> Self:
        """Fit by maximum likelihood on the unique (frequency, recency, T) rows, weighted by their counts.

        Parameters
        ----------
        frequency, recency, T
            Per-customer summary in model time units (see ``forecast.data.summary.summarize``).
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

    def _probability_alive(self, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(alive | x, t_x, T) by the model's formula (lifetimes' unless a model has a stabler form)."""
        return np.asarray(self._fitter().conditional_probability_alive(frequency, recency, T), dtype=float)

    @overload
    def expected_purchases(self, t: float, frequency: pd.Series, recency: ArrayLike, T: ArrayLike) -> pd.Series: ...
    @overload
    def expected_purchases(self, t: float, frequency: np.ndarray, recency: ArrayLike, T: ArrayLike) -> np.ndarray: ...
    def expected_purchases(
        self, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray | pd.Series:
        """Expected number of purchases in the next ``t`` time units given each customer's history.

        Parameters
        ----------
        t
            Horizon in model time units.
        frequency, recency, T
            Per-customer summary in model time units (see ``forecast.data.summary.summarize``).

        Returns
        -------
        pandas.Series or numpy.ndarray
            E[X(t) | x, t_x, T]: a Series named ``expected_purchases`` on ``frequency``'s index (customer_id)
            when ``frequency`` is a Series, else an array.
        """
        with np.errstate(all="ignore"):
            values = self._conditional_expectation(
                t, np.asarray(frequency, float), np.asarray(recency, float), np.asarray(T, float)
            )
        # The closed forms, 1 - (...) * hyp2f1(...), round to about -1e-15 for short horizons.
        values = np.maximum(_require_finite(values, self, "expected purchases", frequency, recency, T), 0.0)
        return _like_input(values, frequency, "expected_purchases")

    @overload
    def p_alive(self, frequency: pd.Series, recency: ArrayLike, T: ArrayLike) -> pd.Series: ...
    @overload
    def p_alive(self, frequency: np.ndarray, recency: ArrayLike, T: ArrayLike) -> np.ndarray: ...
    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray | pd.Series:
        """Probability that each customer is still active at the end of observation.

        Parameters
        ----------
        frequency, recency, T
            Per-customer summary in model time units (see ``forecast.data.summary.summarize``).

        Returns
        -------
        pandas.Series or numpy.ndarray
            P(alive | x, t_x, T): a Series named ``p_alive`` on ``frequency``'s index (customer_id) when
            ``frequency`` is a Series, else an array.
        """
        with np.errstate(all="ignore"):
            values = self._probability_alive(
                np.asarray(frequency, float), np.asarray(recency, float), np.asarray(T, float)
            )
        values = _require_finite(values, self, "probabilities of being alive", frequency, recency, T)
        return _like_input(values, frequency, "p_alive")

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
