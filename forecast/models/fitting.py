"""Maximum-likelihood machinery the models share: lifetimes' minimisation of an objective, Hessians, unique rows."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from forecast.data.compress import (
    as_floats,
    ranked_codes,
    sorted_unique_rows,
)
from forecast.models._lifetimes import (
    BaseFitter,
    ConvergenceError,
    _check_inputs,
    minimize,
    value_and_grad,
)

ArrayLike = np.ndarray | pd.Series


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


class OptimiserStoppedError(ConvergenceError):
    """lifetimes' ConvergenceError, with where the optimiser stopped: for telling a likelihood that runs off to
    the edge of the parameter space (no dropout) from a failure.

    Attributes
    ----------
    log_params
        The optimiser's last log-parameters, in the time scale it worked in.
    time_scale
        The factor lifetimes multiplied the ages by (1 / max T, ``_scale_time``), 1.0 where it did not: the
        time-scaled parameters (alpha, beta) are the model's times this factor.
    """

    def __init__(self, log_params: np.ndarray, time_scale: float = 1.0) -> None:
        super().__init__("The model did not converge.")
        self.log_params = np.asarray(log_params, dtype=float)
        self.time_scale = float(time_scale)


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
    ``_fit_compressed``), and on millions of customers that Hessian is a large part of a fit's time. The
    minimisation below is lifetimes' own call, argument for argument, so the parameters are bit-for-bit those
    of lifetimes (tests/data/test_compress.py checks it).
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
            raise OptimiserStoppedError(output.x, getattr(self, "_scale", 1.0))
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

    Calling it gives lifetimes' objective (the weighted mean negative log-likelihood of the rows, plus lifetimes'
    penalty ``penalizer * sum(params ** 2)`` on the parameters, not their logarithms) and its gradient. Terms that
    depend on one column only are summed once per distinct value of that column, so an evaluation costs a few
    passes over the rows rather than a dozen special-function calls per row.
    """

    size: ClassVar[int]  # number of parameters

    def __init__(self, data: dict[str, np.ndarray], weights: np.ndarray, penalizer: float = 0.0) -> None:
        self.total_weight = float(weights.sum())
        self.penalizer = float(penalizer)

    @abstractmethod
    def negative_log_likelihood(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood and its gradient at ``log_params`` (the papers' symbols, in order)."""

    @property
    def penalised(self) -> bool:
        """Whether a penalty is added to the likelihood."""
        return bool(self.penalizer)

    def penalty(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        """lifetimes' penalty, ``penalizer * sum(params ** 2)``, and its gradient in the log-parameters."""
        params = np.exp(log_params)
        return self.penalizer * float(np.sum(params**2)), 2.0 * self.penalizer * params**2

    def __call__(self, log_params: np.ndarray) -> tuple[float, np.ndarray]:
        """The penalised objective and its gradient at ``log_params``: what the optimiser minimises."""
        value, gradient = self.negative_log_likelihood(log_params)
        if self.penalised:  # without a penalty, exactly the likelihood's values (not + 0.0)
            penalty, penalty_gradient = self.penalty(log_params)
            value, gradient = value + penalty, gradient + penalty_gradient
        return value, gradient

    @classmethod
    def maximise(cls, data: dict[str, np.ndarray], weights: np.ndarray, **penalties: float) -> np.ndarray:
        """The lifetimes fitter's maximum-(penalised-)likelihood parameters, found with this objective
        (``lifetimes_minimisation``); ``penalties`` are the objective's penalty settings (``penalizer``)."""
        return lifetimes_minimisation(cls, data, weights, **penalties)

    def log_likelihood(self, params: np.ndarray) -> float:
        """Total log-likelihood of the weighted rows at ``params`` (without the penalty)."""
        return -self.negative_log_likelihood(np.log(params))[0] * self.total_weight

    def hessian(self, log_params: np.ndarray) -> np.ndarray:
        """Hessian of the total negative log-likelihood (without the penalty) over log-parameters, by differences
        of gradients."""
        return _hessian_from_gradients(lambda x: self.negative_log_likelihood(x)[1], log_params) * self.total_weight


def lifetimes_minimisation(
    objective: type[_Objective], data: dict[str, np.ndarray], weights: np.ndarray, **penalties: float
) -> np.ndarray:
    """The parameters that minimise ``objective`` on ``data``, as ``BaseFitter._fit`` finds them.

    The minimisation is ``BaseFitter._fit``'s call: start 0.1 for every log-parameter, ``method=None``
    without bounds (BFGS in scipy), ``tol=1e-7``, so the optimiser takes lifetimes' steps up to rounding.
    Raises lifetimes' ConvergenceError, as its fitters do, when the optimiser reports failure
    (``OptimiserStoppedError``, which says where it stopped).
    """
    output = minimize(
        objective(data, weights, **penalties), x0=0.1 * np.ones(objective.size), jac=True, method="BFGS", tol=1e-7,
        options={"disp": False},
    )  # fmt: skip
    if not output.success:
        raise OptimiserStoppedError(output.x)
    return np.exp(output.x)


def maximise_in_lifetimes_time(
    objective: type[_Objective], data: dict[str, np.ndarray], weights: np.ndarray, **penalties: float
) -> np.ndarray:
    """Maximise a purchase model's ``objective`` as ``BetaGeoFitter.fit`` does: lifetimes' input checks, then ages
    in units of the largest T (``_scale_time``), so that the start, the steps and the penalty on alpha are lifetimes'.

    Returns the parameters (r, alpha, ...) with alpha, the second, back in the data's time unit; a
    OptimiserStoppedError says the time scale it stopped in.
    """
    frequency = data["frequency"].astype(int)  # lifetimes truncates, then checks
    _check_inputs(frequency, data["recency"], data["T"])
    scale = 1.0 / data["T"].max()  # lifetimes' _scale_time: the optimiser sees ages up to 1
    scaled = {"frequency": frequency, "recency": data["recency"] * scale, "T": data["T"] * scale}
    try:
        params = lifetimes_minimisation(objective, scaled, weights, **penalties)
    except OptimiserStoppedError as exc:
        raise OptimiserStoppedError(exc.log_params, scale) from None
    params[1] /= scale
    return params


def penalty_hessian(penalised_params: np.ndarray, penalizer: float) -> np.ndarray:
    """Hessian over the log-parameters of lifetimes' penalty, ``penalizer * sum(params ** 2)``: diag(4 penalizer
    params^2), with the parameters as lifetimes penalises them (alpha in its rescaled time)."""
    return np.diag(4.0 * penalizer * np.asarray(penalised_params, dtype=float) ** 2)
