"""Model fits against published values, and the invariants every fitted model must satisfy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.errors import ForecastWarning
from forecast.models import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD, fit_models
from tests import reference as ref


@pytest.fixture(scope="module")
def bgnbd(cdnow_sample_summary):
    s = cdnow_sample_summary
    return BetaGeo().fit(s["frequency"], s["recency"], s["T"])


@pytest.fixture(scope="module")
def gamma_gamma(cdnow_sample_summary):
    return GammaGamma().fit(cdnow_sample_summary["frequency"], cdnow_sample_summary["monetary_value"])


def test_bgnbd_matches_fader_hardie_lee_2005(bgnbd):
    """r, alpha, a, b = 0.2426, 4.4136, 0.7929, 2.4259; LL -9582.43 (Fader, Hardie & Lee 2005)."""
    for name, value in ref.BGNBD_CDNOW_SAMPLE.items():
        assert bgnbd.params_[name] == pytest.approx(value, abs=6e-5)
    assert bgnbd.result_.log_likelihood == pytest.approx(ref.BGNBD_CDNOW_SAMPLE_LOG_LIKELIHOOD, abs=0.01)
    assert bgnbd.result_.converged
    assert all(se is not None and 0 < se < bgnbd.params_[p] for p, se in bgnbd.result_.standard_errors.items())


def test_bgnbd_conditional_expectation_matches_hardie_spreadsheet(bgnbd):
    """x=2, t_x=30.43, T=38.86: E[X(39)] = 1.226, P(alive) = 0.727 (Hardie's spreadsheet via lifetimes tests)."""
    assert bgnbd.expected_purchases(39, [2], [30.43], [38.86])[0] == pytest.approx(
        ref.BGNBD_CONDITIONAL_EXPECTATION_39, abs=1e-3
    )
    assert bgnbd.p_alive([2], [30.43], [38.86])[0] == pytest.approx(ref.BGNBD_P_ALIVE, abs=1e-3)


def test_bgnbd_new_customer_expectations_match_btyd(bgnbd):
    """E[X(t)] for a new customer at t = 1, 3, 32, 52, 78 weeks (lifetimes tests; BTYD vignette)."""
    times = list(ref.BGNBD_NEW_CUSTOMER_EXPECTATIONS)
    expected = list(ref.BGNBD_NEW_CUSTOMER_EXPECTATIONS.values())
    assert bgnbd.expected_purchases_new(times) == pytest.approx(expected, rel=1e-3)


def test_pareto_nbd_matches_fader_hardie_lee_2005(cdnow_sample_summary):
    """r, alpha, s, beta = 0.553, 10.578, 0.606, 11.669; LL -9594.976 (FHL 2005; BTYD vignette)."""
    s = cdnow_sample_summary
    model = ParetoNBD().fit(s["frequency"], s["recency"], s["T"])
    for name, value in ref.PARETO_CDNOW_SAMPLE.items():
        assert model.params_[name] == pytest.approx(value, rel=2e-3)
    assert model.result_.log_likelihood == pytest.approx(ref.PARETO_CDNOW_SAMPLE_LOG_LIKELIHOOD, abs=0.05)


def test_mbgnbd_matches_lifetimes_and_btydplus(cdnow_sample_summary):
    """r, alpha, a, b = 0.525, 6.183, 0.891, 1.614 (lifetimes tests, agrees with R BTYDplus)."""
    s = cdnow_sample_summary
    model = ModifiedBetaGeo().fit(s["frequency"], s["recency"], s["T"])
    for name, value in ref.MBGNBD_CDNOW_SAMPLE.items():
        assert model.params_[name] == pytest.approx(value, rel=2e-3)


def test_gamma_gamma_matches_fader_hardie_2013(gamma_gamma):
    """p, q, gamma = 6.25, 3.74, 15.44; LL -4055.92 on 946 repeat buyers (Fader & Hardie 2013)."""
    for name, value in ref.GAMMA_GAMMA_CDNOW_SAMPLE.items():
        assert gamma_gamma.params_[name] == pytest.approx(value, abs=6e-3)
    assert gamma_gamma.result_.log_likelihood == pytest.approx(ref.GAMMA_GAMMA_CDNOW_SAMPLE_LOG_LIKELIHOOD, abs=0.01)
    assert gamma_gamma.result_.customers == 946


def test_gamma_gamma_expected_spend_of_first_ten_customers(gamma_gamma, cdnow_sample_summary):
    """24.65, 18.91, 35.17, ... (Hardie's spreadsheet, quoted in lifetimes tests)."""
    first = cdnow_sample_summary.iloc[:10]
    spend = gamma_gamma.expected_spend(first["frequency"], first["monetary_value"])
    assert spend.to_numpy() == pytest.approx(ref.GAMMA_GAMMA_FIRST_TEN_EXPECTED_SPEND, abs=5e-3)


def test_compressed_fit_equals_lifetimes_fit_on_all_rows(bgnbd, cdnow_sample_summary):
    """A weighted fit on unique rows gives lifetimes' parameters and standard errors on the expanded rows."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter

        s = cdnow_sample_summary
        full = BetaGeoFitter().fit(s["frequency"], s["recency"], s["T"])
    assert bgnbd.result_.unique_rows < len(s)
    for name in ("r", "alpha", "a", "b"):
        assert bgnbd.params_[name] == pytest.approx(full.params_[name], rel=1e-5)
        assert bgnbd.result_.standard_errors[name] == pytest.approx(full.standard_errors_[name], rel=1e-3)


def test_model_round_trips_through_json(bgnbd, gamma_gamma):
    for model in (bgnbd, gamma_gamma):
        rebuilt = type(model).from_dict(json.loads(json.dumps(model.to_dict())))
        assert rebuilt.result_ == model.result_
    rebuilt = BetaGeo.from_dict(json.loads(json.dumps(bgnbd.to_dict())))
    args = ([0, 3, 10], [0.0, 20.0, 30.0], [38.0, 38.0, 38.0])
    assert np.array_equal(rebuilt.expected_purchases(52, *args), bgnbd.expected_purchases(52, *args))


def test_time_unit_does_not_change_p_alive(cdnow_sample_summary, bgnbd):
    """Rescaling time (weeks to days) rescales alpha and leaves P(alive) and E[X] over the same span unchanged."""
    s = cdnow_sample_summary
    days = BetaGeo().fit(s["frequency"], s["recency"] * 7, s["T"] * 7)
    assert days.params_["alpha"] == pytest.approx(bgnbd.params_["alpha"] * 7, rel=1e-4)
    sample = s.iloc[:200]
    weekly = bgnbd.p_alive(sample["frequency"], sample["recency"], sample["T"])
    daily = days.p_alive(sample["frequency"], sample["recency"] * 7, sample["T"] * 7)
    assert daily.to_numpy() == pytest.approx(weekly.to_numpy(), abs=1e-4)


def test_fit_models_fits_both_and_does_not_warn_on_cdnow(cdnow_sample_summary):
    """Frequency-spend correlation on CDNOW is 0.114 (docs/reference.md): below the warning limit."""
    purchases, spend = fit_models(cdnow_sample_summary, "bgnbd")
    assert purchases.name == "bgnbd" and spend.name == "gamma_gamma"


def test_fit_models_warns_with_the_repeat_buyers_correlation(cdnow_sample_summary):
    """When average spend grows with frequency, the warning quotes the Pearson correlation over the repeat buyers
    (each customer once; found from their unique spend histories with counts)."""
    summary = cdnow_sample_summary.copy()
    repeat = summary["frequency"] > 0
    # Whole amounts, so that many repeat buyers share a spend history and the counts matter.
    noise = np.round(np.random.default_rng(0).gamma(2.0, 10.0, int(repeat.sum())))
    summary.loc[repeat, "monetary_value"] = 10.0 + 5.0 * summary.loc[repeat, "frequency"] + noise
    expected = np.corrcoef(summary.loc[repeat, "frequency"], summary.loc[repeat, "monetary_value"])[0, 1]
    assert 0.3 < expected < 0.99
    with pytest.warns(ForecastWarning, match=rf"correlated \({expected:.2f}\)"):
        fit_models(summary, "bgnbd")


history = st.tuples(
    st.integers(min_value=0, max_value=300),
    st.floats(min_value=0, max_value=1, allow_nan=False),
    st.floats(min_value=0.01, max_value=500, allow_nan=False),
).map(lambda h: (h[0], h[1] * h[2] if h[0] > 0 else 0.0, h[2]))


@settings(max_examples=200, deadline=None)
@given(history=history, t1=st.floats(0, 200), dt_=st.floats(0, 200))
def test_predictions_are_bounded_and_monotone(bgnbd, history, t1, dt_):
    """0 <= P(alive) <= 1; E[X(t)] is finite, >= 0 and never decreases in t; recency <= T by construction."""
    x, t_x, T = history
    p = bgnbd.p_alive([x], [t_x], [T])[0]
    assert 0.0 <= p <= 1.0
    e1 = bgnbd.expected_purchases(t1, [x], [t_x], [T])[0]
    e2 = bgnbd.expected_purchases(t1 + dt_, [x], [t_x], [T])[0]
    assert np.isfinite(e1) and np.isfinite(e2)
    assert 0.0 <= e1 <= e2 + 1e-9
