"""Tests of forecast.evaluation.predictive_counts: P(X(t) = n | x, t_x, T) of BG/NBD, MBG/NBD and Pareto/NBD."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.errors import FitError
from forecast.evaluation.predictive_counts import log_count_probability
from forecast.models import BetaGeo, ModifiedBetaGeo, ParetoNBD, PurchaseModel
from forecast.models.base import FitResult

#: CDNOW-sample fits: BG/NBD and Pareto/NBD of Fader, Hardie & Lee (2005), MBG/NBD of lifetimes' tests.
PARAMS = {
    "bgnbd": (BetaGeo, {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}),
    "mbgnbd": (ModifiedBetaGeo, {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}),
    "pareto": (ParetoNBD, {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}),
}
HISTORIES = np.array(
    [[0, 0, 38.0], [0, 0, 0.5], [1, 2.0, 39.0], [2, 30.43, 38.86], [7, 35.0, 39.0], [26, 30.86, 31.0], [60, 38.9, 39.0]]
)


def fitted(name: str) -> PurchaseModel:
    """A model with the published parameters (no fit needed)."""
    model_class, params = PARAMS[name]
    model = model_class()
    model.result_ = FitResult(params, dict.fromkeys(params), None, 0.0, True, 1, 1)
    return model


def probabilities(model: PurchaseModel, t: float, histories: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """P(X(t) = n | history) for every count (rows) and history (columns)."""
    x, t_x, age = histories.T
    return np.exp(np.array([log_count_probability(model, t, x, t_x, age, np.full(len(x), float(n))) for n in counts]))


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto"])
def test_the_distribution_sums_to_one_and_its_mean_is_the_models_expectation(name: str) -> None:
    """Sum over n of P(X(13) = n) is 1 and sum of n P(X(13) = n) is the model's E[X(13) | x, t_x, T], to 1e-10: the
    distribution is the one behind each model's conditional expectation."""
    model = fitted(name)
    counts = np.arange(0, 600)
    p = probabilities(model, 13.0, HISTORIES, counts)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-10)
    expected = model.expected_purchases(13.0, *HISTORIES.T)
    np.testing.assert_allclose(counts @ p, expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto"])
def test_a_customer_just_acquired_gets_the_models_new_customer_distribution(name: str) -> None:
    """At x = t_x = T = 0 the conditional distribution is the unconditional one: Fader, Hardie & Lee (2005) eq. (8)
    for BG/NBD, lifetimes' MBG/NBD formula, and the Pareto/NBD integral (``probability_of_purchases``)."""
    model = fitted(name)
    for n in (0, 1, 3, 7):
        ours = np.exp(log_count_probability(model, 13.0, np.zeros(1), np.zeros(1), np.zeros(1), np.array([n])))
        np.testing.assert_allclose(ours, model.probability_of_purchases(n, np.array([13.0])), rtol=1e-12)


def test_pareto_matches_the_closed_form_of_hardie_note_028() -> None:
    """lifetimes' ``conditional_probability_of_n_purchases_up_to_time`` (Fader & Hardie, note 028, eq. 16) at the
    CDNOW fit, over a 39-week holdout, to 1e-12."""
    from lifetimes import ParetoNBDFitter

    fitter = ParetoNBDFitter()
    fitter.params_ = PARAMS["pareto"][1]
    model = fitted("pareto")
    for x, t_x, age in HISTORIES[[0, 2, 3, 4, 5]]:
        for n in (0, 1, 2, 5):
            ours = np.exp(log_count_probability(model, 39.0, *(np.array([v]) for v in (x, t_x, age, n))))[0]
            theirs = float(fitter.conditional_probability_of_n_purchases_up_to_time(n, 39.0, x, t_x, age))
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), (x, t_x, age, n)


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto"])
def test_extreme_histories_and_counts_stay_finite(name: str) -> None:
    """Thousands of purchases, a purchase every day of the window, a brand-new customer with hundreds: finite
    log-probabilities (tests/reference.py: predictions must stay finite for very heavy buyers)."""
    x = np.array([0.0, 0.0, 5000.0, 1.0, 3000.0])
    t_x = np.array([0.0, 0.0, 38.9, 1.0, 39.0])
    age = np.array([50.0, 0.1, 39.0, 39.0, 39.0])
    n = np.array([91.0, 500.0, 0.0, 2000.0, 91.0])
    values = log_count_probability(fitted(name), 13.0, x, t_x, age, n)
    assert np.all(np.isfinite(values)) and np.all(values <= 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.floats(0.0, 1.0), st.floats(0.5, 60.0), st.integers(0, 30), st.sampled_from(list(PARAMS)))
def test_probabilities_are_probabilities(x: int, share: float, age: float, n: int, name: str) -> None:
    """ln P is finite and at most 0 for any history (t_x between 0 and T, t_x = 0 without repeat purchases)."""
    t_x = share * age if x > 0 else 0.0
    value = log_count_probability(fitted(name), 13.0, np.array([x]), np.array([t_x]), np.array([age]), np.array([n]))
    assert np.isfinite(value[0]) and value[0] <= 0.0


def test_a_model_without_a_distribution_is_a_fit_error() -> None:
    """A purchase model this module does not know, and that brings no ``log_count_probability``, cannot be scored."""

    class Unknown(BetaGeo):
        name = "unknown"

    model = Unknown()
    model.result_ = fitted("bgnbd").result_
    with pytest.raises(FitError, match="no predictive distribution"):
        log_count_probability(model, 13.0, np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1))


def test_the_window_length_is_in_model_time_units() -> None:
    """13 weeks in weeks and 91 days in days give the same probabilities (alpha rescaled by 7)."""
    weeks = fitted("bgnbd")
    days = BetaGeo()
    params = dict(PARAMS["bgnbd"][1], alpha=PARAMS["bgnbd"][1]["alpha"] * 7)
    days.result_ = FitResult(params, dict.fromkeys(params), None, 0.0, True, 1, 1)
    x, t_x, age = HISTORIES.T
    n = np.arange(len(x), dtype=float)
    np.testing.assert_allclose(
        log_count_probability(weeks, 13.0, x, t_x, age, n), log_count_probability(days, 91.0, x, t_x * 7, age * 7, n)
    )
