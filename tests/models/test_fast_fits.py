"""The NumPy BG/NBD and Gamma-Gamma fits against lifetimes' own fitters.

BetaGeo and GammaGamma minimise lifetimes' objective with an analytic gradient instead of autograd's.
These tests check that this changes nothing that lifetimes computes: the objective and its gradient, the
fitted parameters (same start, optimiser and tolerance), the log-likelihood, the standard errors (from
gradient differences instead of second differences of the log-likelihood) and the predictions.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from forecast.errors import ForecastWarning
from forecast.models import BetaGeo, GammaGamma
from forecast.models.bgnbd import _BetaGeoObjective
from forecast.models.fitting import _numerical_hessian, unique_rows
from forecast.models.gamma_gamma import _GammaGammaObjective

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from autograd import value_and_grad
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import ConvergenceError

# Parameters and predictions agree to rounding (1e-12 and better on these data); this is the promise.
PARAMS_REL = 1e-6
# On random data sets of tens to hundreds of customers the optimiser stops near its rounding floor.
SMALL_DATA_PARAMS_REL = 1e-5


def purchase_rows(summary: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    unique, weights = unique_rows({name: summary[name] for name in ("frequency", "recency", "T")})
    return {name: unique[name].to_numpy() for name in unique.columns}, weights


def spend_rows(summary: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    unique, weights = unique_rows({name: repeat[name] for name in ("frequency", "monetary_value")})
    return {name: unique[name].to_numpy() for name in unique.columns}, weights


def lifetimes_fit(fitter_class: type, data: dict[str, np.ndarray], weights: np.ndarray):
    """lifetimes' fitter on the same weighted unique rows, or None when it does not converge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fitter_class().fit(*data.values(), weights=weights)
        except (ConvergenceError, np.linalg.LinAlgError):
            return None


@pytest.fixture(scope="module")
def full_cdnow_summary() -> pd.DataFrame:
    """Full CDNOW (23,570 customers) at the end of the calibration period, 1997-09-30, in weeks."""
    from forecast.config import load_config
    from forecast.data.ingest import read_transactions
    from forecast.data.summary import summarize
    from tests.conftest import CONFIGS

    config = load_config(CONFIGS / "cdnow.yaml")
    return summarize(read_transactions(config.data).connection, dt.date(1997, 9, 30), 7.0)


@pytest.fixture(scope="module")
def simulated_summary(tmp_path_factory) -> pd.DataFrame:
    """5,000 customers simulated from BG/NBD with Gamma-Gamma spend (seeded), summarised by day in weeks."""
    from forecast.config import DataConfig
    from forecast.data.ingest import read_transactions
    from forecast.data.simulate import write_simulated_log
    from forecast.data.summary import summarize

    end = dt.date(2021, 6, 30)
    path = tmp_path_factory.mktemp("simulated") / "log.parquet"
    write_simulated_log(path, 5_000, end=end, seed=7)
    return summarize(read_transactions(DataConfig(path=str(path))).connection, end, 7.0)


@pytest.fixture(scope="module", params=["cdnow_sample", "full_cdnow", "simulated"])
def summary(request, cdnow_sample_summary, full_cdnow_summary, simulated_summary) -> pd.DataFrame:
    return {"cdnow_sample": cdnow_sample_summary, "full_cdnow": full_cdnow_summary, "simulated": simulated_summary}[
        request.param
    ]


def relative(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    return float(np.max(np.abs(ours - theirs) / np.abs(theirs)))


def test_objectives_equal_lifetimes_likelihoods_and_autograd_gradients(summary):
    """Value and gradient at several points, against lifetimes' function and autograd (penalizer 0)."""
    data, weights = purchase_rows(summary)
    args = (data["frequency"].astype(int), data["recency"], data["T"], weights, 0.0)
    objective = _BetaGeoObjective(data, weights)
    for log_params in (np.full(4, 0.1), np.log([0.24, 4.4, 0.79, 2.4]), np.log([2.0, 0.5, 3.0, 0.2])):
        value, gradient = objective(log_params)
        expected_value, expected_gradient = value_and_grad(BetaGeoFitter._negative_log_likelihood)(log_params, *args)
        assert value == pytest.approx(expected_value, rel=1e-12)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-9, atol=1e-12 * np.abs(expected_gradient).max())
    data, weights = spend_rows(summary)
    args = (data["frequency"], data["monetary_value"], weights, 0.0)
    objective = _GammaGammaObjective(data, weights)
    for log_params in (np.full(3, 0.1), np.log([6.25, 3.74, 15.44]), np.log([0.5, 0.9, 200.0])):
        value, gradient = objective(log_params)
        expected_value, expected_gradient = value_and_grad(GammaGammaFitter._negative_log_likelihood)(log_params, *args)
        assert value == pytest.approx(expected_value, rel=1e-12)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-9, atol=1e-12 * np.abs(expected_gradient).max())


def test_bgnbd_fit_reproduces_lifetimes(summary):
    """Parameters to 1e-6 (in fact ~1e-13), a log-likelihood no lower, and the same predictions to 1e-6."""
    data, weights = purchase_rows(summary)
    fast = _BetaGeoObjective.maximise(data, weights)  # the fast path itself, not lifetimes as its fallback
    model = BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])
    assert list(model.params_.values()) == fast.tolist()
    fitter = lifetimes_fit(BetaGeoFitter, data, weights)
    assert fitter is not None
    theirs = fitter.params_[["r", "alpha", "a", "b"]].to_numpy()
    assert relative(fast, theirs) < PARAMS_REL
    lifetimes_ll = BetaGeo._log_likelihood(theirs, data, weights)
    assert model.result_.log_likelihood >= lifetimes_ll - 1e-9 * abs(lifetimes_ll)
    x, t_x, T = (summary[name].to_numpy(dtype=float) for name in ("frequency", "recency", "T"))
    for t in (1.0, 39.0, 52.0):
        ours = model.expected_purchases(t, x, t_x, T)
        assert relative(ours, fitter.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)) < 1e-6
    assert relative(model.p_alive(x, t_x, T), fitter.conditional_probability_alive(x, t_x, T)) < 1e-6


@pytest.mark.parametrize(
    "failure", [ArithmeticError("overflow in exp"), ValueError("math domain error"), ConvergenceError("no")]
)
def test_a_failing_fast_fit_warns_and_falls_back_to_lifetimes_fitter(cdnow_sample_summary, monkeypatch, failure):
    """A fault of the fast objective is not the user's: lifetimes' fitter decides, and a ForecastWarning says so.

    The fallback gives the fast fit's parameters (to rounding), so the warning is the only trace it leaves.
    """
    s = cdnow_sample_summary
    fast = BetaGeo().fit(s["frequency"], s["recency"], s["T"])

    def failing(*_args, **_penalties):
        raise failure

    monkeypatch.setattr(_BetaGeoObjective, "maximise", classmethod(failing))
    with pytest.warns(ForecastWarning, match="The fast BG/NBD fit failed") as caught:
        model = BetaGeo().fit(s["frequency"], s["recency"], s["T"])
    (message,) = [str(w.message) for w in caught if issubclass(w.category, ForecastWarning)]
    assert f"{type(failure).__name__}: {failure}" in message
    assert "lifetimes' own fitter was used" in message
    ours, theirs = np.array(list(model.params_.values())), np.array(list(fast.params_.values()))
    assert relative(ours, theirs) < PARAMS_REL


def test_gamma_gamma_fast_fit_failure_warns_too(cdnow_sample_summary, monkeypatch):
    s = cdnow_sample_summary
    fast = GammaGamma().fit(s["frequency"], s["monetary_value"])

    def failing(*_args, **_penalties):
        raise ArithmeticError("overflow in exp")

    monkeypatch.setattr(_GammaGammaObjective, "maximise", classmethod(failing))
    with pytest.warns(ForecastWarning, match=r"The fast Gamma-Gamma fit failed \(ArithmeticError: overflow in exp\)"):
        model = GammaGamma().fit(s["frequency"], s["monetary_value"])
    ours, theirs = np.array(list(model.params_.values())), np.array(list(fast.params_.values()))
    assert relative(ours, theirs) < PARAMS_REL


def test_a_fast_fit_that_succeeds_does_not_warn(cdnow_sample_summary):
    s = cdnow_sample_summary
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForecastWarning)
        BetaGeo().fit(s["frequency"], s["recency"], s["T"])
        GammaGamma().fit(s["frequency"], s["monetary_value"])


def test_gamma_gamma_fit_reproduces_lifetimes(summary):
    data, weights = spend_rows(summary)
    fast = _GammaGammaObjective.maximise(data, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForecastWarning)  # full CDNOW has repeat buyers who spent 0
        model = GammaGamma().fit(summary["frequency"], summary["monetary_value"])
    assert list(model.params_.values()) == fast.tolist()
    fitter = lifetimes_fit(GammaGammaFitter, data, weights)
    assert fitter is not None
    theirs = fitter.params_[["p", "q", "v"]].to_numpy()
    assert relative(fast, theirs) < PARAMS_REL
    lifetimes_ll = GammaGamma._log_likelihood(theirs, data, weights)
    assert model.result_.log_likelihood >= lifetimes_ll - 1e-9 * abs(lifetimes_ll)
    x, m = summary["frequency"].to_numpy(dtype=float), summary["monetary_value"].to_numpy(dtype=float)
    m = np.where(x > 0, m, 0.0)
    assert relative(model.expected_spend(x, m), fitter.conditional_expected_average_profit(x, m)) < 1e-6


def test_log_likelihoods_equal_lifetimes_formulas(summary):
    """The totals the fit reports: lifetimes' mean negative log-likelihood times the total weight."""
    data, weights = purchase_rows(summary)
    params = np.array([0.24, 4.4, 0.79, 2.4])
    args = (data["frequency"], data["recency"], data["T"], weights, 0.0)
    expected = -BetaGeoFitter._negative_log_likelihood(np.log(params), *args) * weights.sum()
    assert BetaGeo._log_likelihood(params, data, weights) == pytest.approx(expected, rel=1e-12)
    data, weights = spend_rows(summary)
    params = np.array([6.25, 3.74, 15.44])
    args = (data["frequency"], data["monetary_value"], weights, 0.0)
    expected = -GammaGammaFitter._negative_log_likelihood(np.log(params), *args) * weights.sum()
    assert GammaGamma._log_likelihood(params, data, weights) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("objective_class", "rows"), [(_BetaGeoObjective, purchase_rows), (_GammaGammaObjective, spend_rows)]
)
def test_hessian_from_gradients_equals_second_differences_of_lifetimes_likelihood(summary, objective_class, rows):
    """The standard errors' Hessian: 2 x 4 gradients agree with the ~40-evaluation second differences to 1e-4."""
    data, weights = rows(summary)
    log_params = np.log(objective_class.maximise(data, weights))
    objective = objective_class(data, weights)

    def neg_ll(x: np.ndarray) -> float:
        return objective(x)[0] * objective.total_weight

    expected = _numerical_hessian(neg_ll, log_params)
    np.testing.assert_allclose(objective.hessian(log_params), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_standard_errors_equal_lifetimes_autograd_standard_errors(cdnow_sample_summary):
    """Same SEs as lifetimes' autograd Hessian, on the published CDNOW cohort, to 1e-4."""
    s = cdnow_sample_summary
    data, weights = purchase_rows(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = BetaGeoFitter().fit(*data.values(), weights=weights)
        spend_data, spend_weights = spend_rows(s)
        spend_fitter = GammaGammaFitter().fit(*spend_data.values(), weights=spend_weights)
    model = BetaGeo().fit(s["frequency"], s["recency"], s["T"])
    spend = GammaGamma().fit(s["frequency"], s["monetary_value"])
    for ours, theirs, names in (
        (model, fitter, ("r", "alpha", "a", "b")),
        (spend, spend_fitter, ("p", "q", "v")),
    ):
        errors = list(ours.result_.standard_errors.values())
        assert relative(errors, theirs.standard_errors_[list(names)].to_numpy()) < 1e-4


def simulate_summary(rng: np.random.Generator, customers: int, purchase: tuple, spend: tuple) -> pd.DataFrame:
    """Per-customer summaries drawn from BG/NBD (r, alpha, a, b) with Gamma-Gamma spend (p, q, gamma), in weeks."""
    r, alpha, a, b = purchase
    p, q, gamma = spend
    rows = []
    for _ in range(customers):
        T = float(rng.integers(1, 53))
        rate, dropout = rng.gamma(r, 1 / alpha), rng.beta(a, b)
        times, t = [], rng.exponential(1 / rate)
        while t < T:
            times.append(round(t, 2))
            if rng.random() < dropout:
                break
            t += rng.exponential(1 / rate)
        x = len(times)
        nu = rng.gamma(q, 1 / gamma)
        mean_spend = round(rng.gamma(p * x, 1 / (nu * x)), 2) if x else 0.0
        rows.append((x, times[-1] if x else 0.0, T, mean_spend))
    return pd.DataFrame(rows, columns=["frequency", "recency", "T", "monetary_value"])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    customers=st.integers(30, 400),
    purchase=st.tuples(st.floats(0.2, 3.0), st.floats(0.5, 20.0), st.floats(0.3, 3.0), st.floats(0.5, 5.0)),
    spend=st.tuples(st.floats(1.0, 10.0), st.floats(1.5, 8.0), st.floats(5.0, 50.0)),
)
# A line search underflowed alpha to 0 here, and math.log(0) raised instead of stepping back as lifetimes does.
@example(seed=3044349, customers=30, purchase=(1.59375, 15.56640625, 1.625, 1.75), spend=(2.0, 2.0, 5.0))
def test_fits_on_random_small_data_reproduce_lifetimes_where_both_converge(seed, customers, purchase, spend):
    """Where both converge: a log-likelihood no lower than lifetimes' (1e-9 relative) and, unless a parameter
    drifts towards 0 or infinity (a flat likelihood), the same parameters to 1e-6. Small data sets leave
    the optimiser near its rounding floor, so either fit may stop early where the other does not; the
    models then fall back to lifetimes' fitter."""
    summary = simulate_summary(np.random.default_rng(seed), customers, purchase, spend)
    assume((summary["frequency"] > 0).sum() >= 3 and summary["monetary_value"].nunique() > 2)
    for objective_class, fitter_class, rows, names in (
        (_BetaGeoObjective, BetaGeoFitter, purchase_rows, ["r", "alpha", "a", "b"]),
        (_GammaGammaObjective, GammaGammaFitter, spend_rows, ["p", "q", "v"]),
    ):
        data, weights = rows(summary)
        fitter = lifetimes_fit(fitter_class, data, weights)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ours = objective_class.maximise(data, weights)
        except ConvergenceError:
            continue
        if fitter is None:
            continue
        theirs = fitter.params_[names].to_numpy()
        objective = objective_class(data, weights)
        ll_ours, ll_theirs = objective.log_likelihood(ours), objective.log_likelihood(theirs)
        assert ll_ours >= ll_theirs - 1e-9 * abs(ll_theirs)
        if np.all(np.abs(np.log(theirs)) < 5):
            assert relative(ours, theirs) < SMALL_DATA_PARAMS_REL
