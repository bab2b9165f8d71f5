"""Time the model fits of ``fit_models(summary, "bgnbd")``: the lifetimes path against the fast path, one run.

The lifetimes path is what ``forecast.models`` did before the NumPy objectives: unique rows (here by
``numpy.unique(axis=0)``; factorize + lexsort then, a function since removed), lifetimes' BetaGeoFitter and
GammaGammaFitter (autograd gradient, no autograd Hessian) and a second-difference Hessian of lifetimes'
log-likelihood for the standard errors. The fast path is today's ``fit_models``. Each is timed 3 times (best
reported: the machine is shared); then the parameters, standard errors, log-likelihoods and predictions of the
two are compared.

Usage: python benchmarks/fits.py SUMMARY.parquet   (any per-customer summary indexed by customer_id with
frequency, recency, T, monetary_value, e.g. of the benchmark's 10M-transaction log: 3,401,361 customers).
Prints figures; nothing is asserted.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from forecast.data.compress import as_floats
from forecast.models import BetaGeo, GammaGamma, fit_models
from forecast.models.fitting import _numerical_hessian, _without_autograd_hessian

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter

REPEATS = 3


def best_of(function: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def numpy_unique_rows(columns: dict[str, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
    """The sorted unique rows and their counts by ``numpy.unique(axis=0)``, which sorts every row."""
    unique, counts = np.unique(np.column_stack(list(columns.values())), axis=0, return_counts=True)
    return pd.DataFrame(unique, columns=list(columns)), counts.astype(float)


def lifetimes_fit(fitter_class: type, unique: pd.DataFrame, weights: np.ndarray) -> dict[str, Any]:
    """lifetimes' fit on the weighted unique rows, then the SEs from second differences of its likelihood."""
    columns = [unique[name].to_numpy() for name in unique.columns]
    fitter = _without_autograd_hessian(fitter_class)().fit(*columns, weights=weights)
    params = fitter.params_.to_numpy()

    def neg_ll(log_params: np.ndarray) -> float:
        return float(fitter_class._negative_log_likelihood(log_params, *columns, weights, 0.0)) * weights.sum()

    covariance = np.linalg.inv(_numerical_hessian(neg_ll, np.log(params)))
    return {
        "params": params,
        "standard_errors": np.sqrt(np.diag(covariance)) * params,
        "log_likelihood": -neg_ll(np.log(params)),
    }


def lifetimes_path(summary: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    seconds = {}
    started = time.perf_counter()
    unique, weights = numpy_unique_rows({name: as_floats(summary[name]) for name in ("frequency", "recency", "T")})
    seconds["BG/NBD unique rows"] = time.perf_counter() - started
    started = time.perf_counter()
    purchases = lifetimes_fit(BetaGeoFitter, unique, weights)
    seconds["BG/NBD fit + SEs"] = time.perf_counter() - started
    started = time.perf_counter()
    frequency, spend = as_floats(summary["frequency"]), as_floats(summary["monetary_value"])
    usable = (frequency > 0) & (spend > 0)
    unique, weights = numpy_unique_rows({"frequency": frequency[usable], "monetary_value": spend[usable]})
    seconds["Gamma-Gamma unique rows"] = time.perf_counter() - started
    started = time.perf_counter()
    spending = lifetimes_fit(GammaGammaFitter, unique, weights)
    seconds["Gamma-Gamma fit + SEs"] = time.perf_counter() - started
    return purchases, spending, seconds


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs)) / np.abs(np.asarray(theirs))))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    summary = pd.read_parquet(path, columns=["frequency", "recency", "T", "monetary_value"])
    print(f"{path}: {len(summary):,} customers; best of {REPEATS} runs", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow_seconds, (purchases, spending, stages) = best_of(lambda: lifetimes_path(summary))
        print(f"lifetimes path: {slow_seconds:.2f} s  ({', '.join(f'{k} {v:.2f} s' for k, v in stages.items())})")
        fast_seconds, (bgnbd, gamma_gamma) = best_of(lambda: fit_models(summary, "bgnbd"))
        bg_seconds, _ = best_of(lambda: BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"]))
        gg_seconds, _ = best_of(lambda: GammaGamma().fit(summary["frequency"], summary["monetary_value"]))
    print(
        f"fast path (fit_models): {fast_seconds:.2f} s  (BetaGeo.fit {bg_seconds:.2f} s, GammaGamma.fit "
        f"{gg_seconds:.2f} s, each with its unique rows and SEs); {slow_seconds / fast_seconds:.1f}x faster"
    )
    print("max relative difference, fast vs lifetimes path:")
    for model, reference in ((bgnbd, purchases), (gamma_gamma, spending)):
        result = model.result_
        print(
            f"  {model.title}: parameters {relative(list(result.params.values()), reference['params']):.1e}, "
            f"standard errors {relative(list(result.standard_errors.values()), reference['standard_errors']):.1e}, "
            f"log-likelihood {abs(result.log_likelihood / reference['log_likelihood'] - 1):.1e}"
        )
    x, t_x, T, m = (summary[name].to_numpy(dtype=float) for name in ("frequency", "recency", "T", "monetary_value"))
    fitter = BetaGeoFitter()
    fitter.params_ = dict(zip(("r", "alpha", "a", "b"), purchases["params"], strict=True))
    spend_fitter = GammaGammaFitter()
    spend_fitter.params_ = dict(zip(("p", "q", "v"), spending["params"], strict=True))
    m = np.where(x > 0, m, 0.0)
    differences = {
        "expected purchases (52)": relative(
            bgnbd.expected_purchases(52, x, t_x, T),
            fitter.conditional_expected_number_of_purchases_up_to_time(52, x, t_x, T),
        ),
        "P(alive)": relative(bgnbd.p_alive(x, t_x, T), fitter.conditional_probability_alive(x, t_x, T)),
        "expected spend": relative(
            gamma_gamma.expected_spend(x, m), spend_fitter.conditional_expected_average_profit(x, m)
        ),
    }
    print("  predictions: " + ", ".join(f"{name} {value:.1e}" for name, value in differences.items()))


if __name__ == "__main__":
    main()
