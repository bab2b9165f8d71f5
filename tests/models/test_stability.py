"""Models on degenerate and extreme data: finite predictions or a clear FitError, never a NaN or a crash.

High-precision references are computed with mpmath at 60 digits from Euler's transformation of the
hypergeometric term (Abramowitz & Stegun 15.3.3), which converges for any number of purchases.
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from forecast.errors import FitError, ForecastWarning
from forecast.models import BetaGeo, FitResult, GammaGamma, ModifiedBetaGeo, ParetoNBD, fit_models
from forecast.value.clv import score_customers
from forecast.value.valuation import Valuation
from tests import reference as ref

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import ModifiedBetaGeoFitter, ParetoNBDFitter

# Heavy buyers: up to 50,000 purchases, 10 years of weekly history, horizons up to 10 years.
HEAVY_GRID = [
    (x, frac * T, T, t)
    for x in (0, 1, 10, 200, 2_000, 10_000, 50_000)
    for T in (1.0, 39.0, 520.0)
    for frac in (0.0, 0.5, 0.99, 1.0)
    for t in (1.0, 52.0, 520.0)
    if x > 0 or frac == 0.0
]


def fitted(model_class, params):
    model = model_class()
    model.result_ = FitResult(params, dict.fromkeys(params), None, 0.0, True, 1, 1)
    return model


def exact_expectation(params, t, x, t_x, T, modified: bool) -> float:
    """E[X(t) | x, t_x, T] of BG/NBD (FHL 2005 eq. 10) or MBG/NBD (Batislam et al. 2007), 60 digits."""
    mp.mp.dps = 60
    r, alpha, a, b = (mp.mpf(params[k]) for k in ("r", "alpha", "a", "b"))
    x, t_x, T, t = (mp.mpf(v) for v in (x, t_x, T, t))
    z = t / (alpha + T + t)
    shift = 0 if modified else 1  # BG/NBD has b + x - 1 where MBG/NBD has b + x
    c = a + b + x - shift
    product = (1 - z) ** (a - 1) * mp.hyp2f1(c - r - x, a - 1, c, z, maxterms=10**6)
    numerator = c / (a - 1) * (1 - product)
    dead = a / (b + x - shift) * ((alpha + T) / (alpha + t_x)) ** (r + x) if (x > 0 or modified) else 0
    return float(numerator / (1 + dead))


def exact_p_alive(params, x, t_x, T) -> float:
    """BG/NBD P(alive | x, t_x, T), Fader, Hardie & Lee (2005) note 021, 60 digits."""
    mp.mp.dps = 60
    r, alpha, a, b = (mp.mpf(params[k]) for k in ("r", "alpha", "a", "b"))
    if x == 0:
        return 1.0
    return float(1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)))


def test_bgnbd_log_likelihood_matches_hardie_note_027():
    """Hardie note 027 (quoted in pymc-marketing tests): r=0.25, alpha=4, a=0.8, b=2.5, T=40."""
    params = np.array([0.25, 4.0, 0.8, 2.5])
    one = np.ones(1)
    for x, t_x, expected in ((0, 0.0, -0.59947382), (200, 38.0, 100.7957)):
        data = {"frequency": np.array([x], float), "recency": np.array([t_x]), "T": np.array([40.0])}
        assert BetaGeo._log_likelihood(params, data, one) == pytest.approx(expected, abs=5e-5)


def test_bgnbd_stays_exact_for_heavy_buyers():
    """lifetimes' BG/NBD (with its own Euler fallback) is finite and within 1e-6 of 60-digit arithmetic."""
    model = fitted(BetaGeo, ref.BGNBD_CDNOW_SAMPLE)
    for x, t_x, T, t in HEAVY_GRID:
        expected = exact_expectation(ref.BGNBD_CDNOW_SAMPLE, t, x, t_x, T, modified=False)
        got = model.expected_purchases(t, [x], [t_x], [T])[0]
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-300), (x, t_x, T, t)
        alive = model.p_alive([x], [t_x], [T])[0]
        assert alive == pytest.approx(exact_p_alive(ref.BGNBD_CDNOW_SAMPLE, x, t_x, T), rel=1e-6, abs=1e-300)


def test_bgnbd_heavy_buyer_active_to_the_end_is_credited_with_their_rate():
    """x = 10,000 purchases over 520 weeks, the last at T: about 19.2 a week, so about 1,000 in 52 weeks."""
    model = fitted(BetaGeo, ref.BGNBD_CDNOW_SAMPLE)
    assert model.p_alive([10_000], [520.0], [520.0])[0] == pytest.approx(0.99992, abs=1e-5)
    assert model.expected_purchases(52, [10_000], [520.0], [520.0])[0] == pytest.approx(
        exact_expectation(ref.BGNBD_CDNOW_SAMPLE, 52, 10_000, 520, 520, modified=False), rel=1e-9
    )


def test_mbgnbd_stable_path_reproduces_lifetimes_and_stays_finite():
    """Where lifetimes is finite the stable form agrees to 1e-6; where lifetimes gives NaN it matches 60 digits."""
    params = ref.MBGNBD_CDNOW_SAMPLE
    model = fitted(ModifiedBetaGeo, params)
    fitter = ModifiedBetaGeoFitter()
    fitter.params_ = pd.Series(params)
    lifetimes_nan = 0
    for x, t_x, T, t in HEAVY_GRID:
        got = model.expected_purchases(t, [x], [t_x], [T])[0]
        with np.errstate(all="ignore"):
            theirs = fitter.conditional_expected_number_of_purchases_up_to_time(
                t, np.array([x], float), np.array([t_x]), np.array([T])
            )[0]
        if np.isfinite(theirs):
            assert got == pytest.approx(theirs, rel=1e-6, abs=1e-300), (x, t_x, T, t)
        else:
            lifetimes_nan += 1
        expected = exact_expectation(params, t, x, t_x, T, modified=True)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-300), (x, t_x, T, t)
    assert lifetimes_nan > 0  # the grid does reach lifetimes' overflow


# --- Pareto/NBD: the stable ln A_0 (forecast.models.pareto._pareto_nbd_log_a0) ------------------------------------

# lifetimes' tests (test_estimation.py, TestParetoNBDFitter.test_conditional_expectation_underflow), values quoted
# there: r, alpha, s, beta = 0.55, 10.58, 0.61, 11.67; E[X(10) | x, t_x = 200, T = 200] for x = 132 and 133.
PARETO_LIFETIMES_UNDERFLOW_PARAMS = {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67}
PARETO_LIFETIMES_UNDERFLOW_EXPECTATIONS = {132: 6.2060517889632418, 133: 6.2528722475748113}

# R package BTYD's walkthrough (cran.r-project.org/web/packages/BTYD/vignettes/BTYD-walkthrough.pdf), p. 8, quoted
# in lifetimes' tests: at BTYD's fit of the CDNOW sample, P(alive | x = 26, t_x = 30.86, T = 31) = 0.9979.
PARETO_BTYD_PARAMS = {"r": 0.5534, "alpha": 10.5802, "s": 0.6061, "beta": 11.6562}
PARETO_BTYD_P_ALIVE = 0.9979

# Parameters with alpha >> beta: z = (alpha - beta) / (alpha + u) near 1 for u = t_x or T below about 30, where
# scipy's 2F1 is NaN for heavy buyers and _hyp2f1_one integrates; and lifetimes' overflow test (alpha << beta,
# test_estimation.py, test_conditional_probability_alive_overflow_error).
PARETO_ALPHA_ABOVE_BETA = {"r": 2.0, "alpha": 300.0, "s": 2.0, "beta": 3.0}
PARETO_LIFETIMES_OVERFLOW_PARAMS = {"r": 10.465, "alpha": 7.98565181e-03, "s": 3.0516, "beta": 2.820}


def exact_pareto_log_a0(params, x, t_x, T) -> float:
    """ln A_0 from note 009 eq. (19)-(20) as written (no transformation), 60 digits."""
    mp.mp.dps = 60
    r, alpha, s, beta = (mp.mpf(params[k]) for k in ("r", "alpha", "s", "beta"))
    x, t_x, T = (mp.mpf(v) for v in (x, t_x, T))
    a = r + s + x
    top, b = (beta, r + x) if alpha < beta else (alpha, s + 1)
    diff = abs(alpha - beta)

    def term(u):
        return mp.hyp2f1(a, b, a + 1, diff / (top + u)) / (top + u) ** a

    return float(mp.log(term(t_x) - term(T)))


def test_pareto_nbd_expectation_reproduces_lifetimes_reference_values():
    """E[X(10) | x = 132 or 133, t_x = T = 200] = 6.2060517889632418, 6.2528722475748113 (lifetimes' tests)."""
    model = fitted(ParetoNBD, PARETO_LIFETIMES_UNDERFLOW_PARAMS)
    for x, expected in PARETO_LIFETIMES_UNDERFLOW_EXPECTATIONS.items():
        assert model.expected_purchases(10, [x], [200.0], [200.0])[0] == pytest.approx(expected, rel=1e-9)


def test_pareto_nbd_p_alive_matches_btyd_walkthrough():
    """P(alive | x = 26, t_x = 30.86, T = 31) = 0.9979 at r, alpha, s, beta = 0.5534, 10.5802, 0.6061, 11.6562."""
    model = fitted(ParetoNBD, PARETO_BTYD_PARAMS)
    assert model.p_alive([26], [30.86], [31.0])[0] == pytest.approx(PARETO_BTYD_P_ALIVE, abs=5e-5)


def test_pareto_nbd_stable_forms_equal_lifetimes_where_lifetimes_is_finite():
    """At the CDNOW-sample fit, for 0 < t_x < T (lifetimes finite): P(alive), E[X(t)] and each customer's
    log-likelihood equal lifetimes' to 1e-9 relative; likewise at lifetimes' overflow-test parameters."""
    from forecast.models.pareto import _pareto_nbd_log_likelihood

    grid = [
        (x, frac * T, T)
        for x in (0, 1, 2, 5, 10, 30, 100, 150)
        for T in (1.0, 39.0, 78.0)
        for frac in ((0.0,) if x == 0 else (0.25, 0.5, 0.9, 0.99))
    ]
    x, t_x, T = (np.array(column) for column in zip(*grid, strict=True))
    for params in (ref.PARETO_CDNOW_SAMPLE, PARETO_LIFETIMES_OVERFLOW_PARAMS):
        model = fitted(ParetoNBD, params)
        fitter = ParetoNBDFitter()
        fitter.params_ = dict(params)
        with np.errstate(all="ignore"):
            theirs_alive = fitter.conditional_probability_alive(x, t_x, T)
            theirs_ll = ParetoNBDFitter._conditional_log_likelihood(list(params.values()), x, t_x, T)
        assert np.isfinite(theirs_alive).all() and np.isfinite(theirs_ll).all()
        np.testing.assert_allclose(model.p_alive(x, t_x, T), theirs_alive, rtol=1e-9, atol=0)
        np.testing.assert_allclose(_pareto_nbd_log_likelihood(list(params.values()), x, t_x, T), theirs_ll, rtol=1e-9)
        for t in (1.0, 39.0, 52.0):
            with np.errstate(all="ignore"):
                theirs = fitter.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
            assert np.isfinite(theirs).all()
            np.testing.assert_allclose(model.expected_purchases(t, x, t_x, T), theirs, rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    ("params", "x", "t_x", "T"),
    [
        (ref.PARETO_CDNOW_SAMPLE, 1_000, 38.0, 39.0),  # heavy buyer, alpha < beta
        (ref.PARETO_CDNOW_SAMPLE, 200, 39.0 - 1e-6, 39.0),  # last purchase just before T
        ({**ref.PARETO_CDNOW_SAMPLE, "alpha": 11.669, "beta": 10.578}, 1_000, 38.0, 39.0),  # alpha > beta
        (PARETO_ALPHA_ABOVE_BETA, 5_000, 1.0, 39.0),  # z = 0.987: scipy's 2F1 overflows, _hyp2f1_one integrates
    ],
)
def test_pareto_nbd_log_a0_matches_60_digit_arithmetic(params, x, t_x, T):
    """ln A_0 by Euler's transformation equals note 009's own formula in 60-digit arithmetic to 1e-10 relative."""
    from forecast.models.pareto import _pareto_nbd_log_a0

    got = float(_pareto_nbd_log_a0(list(params.values()), x, t_x, T))
    assert got == pytest.approx(exact_pareto_log_a0(params, x, t_x, T), rel=1e-10)


def test_hyp2f1_one_is_exact_where_scipy_overflows():
    """2F1(1, 200; 221; 0.99): scipy's connection formula at z = 1 overflows (NaN); the integral matches mpmath."""
    from scipy.special import hyp2f1

    from forecast.models.pareto import _hyp2f1_one

    mp.mp.dps = 30
    assert np.isnan(hyp2f1(1.0, 200.0, 221.0, 0.99))
    assert _hyp2f1_one(200.0, 221.0, 0.99) == pytest.approx(float(mp.hyp2f1(1, 200, 221, 0.99)), rel=1e-12)
    # Elsewhere it is scipy's value.
    assert _hyp2f1_one(1000.05, 1001.1, 0.99) == hyp2f1(1.0, 1000.05, 1001.1, 0.99)


def test_pareto_nbd_heavy_buyer_at_end_of_observation_is_finite():
    """x = 200, t_x = T = 39 at the CDNOW-sample fit: lifetimes (scipy >= 1.15) gives NaN for P(alive), E[X(t)] and
    the customer's log-likelihood.

    A last purchase at T means alive at T (A_0 = 0): E[X(t)] is then the closed form
    (r + x) (beta + T) / ((alpha + T) (s - 1)) [1 - ((beta + T) / (beta + T + t))^(s - 1)] (note 009, eq. 41), and
    the likelihood Gamma(r + x) alpha^r beta^s / (Gamma(r) (alpha + T)^(r + x) (beta + T)^s) (eq. 18).
    """
    from scipy.special import gammaln

    from forecast.models.pareto import _pareto_nbd_log_likelihood

    params = ref.PARETO_CDNOW_SAMPLE
    model = fitted(ParetoNBD, params)
    r, alpha, s, beta = (params[k] for k in ("r", "alpha", "s", "beta"))
    x, T, t = 200, 39.0, 52.0
    assert model.p_alive([x], [T], [T])[0] == 1.0
    expected = (r + x) * (beta + T) / ((alpha + T) * (s - 1)) * (1 - ((beta + T) / (beta + T + t)) ** (s - 1))
    assert model.expected_purchases(t, [x], [T], [T])[0] == pytest.approx(expected, rel=1e-12)
    log_likelihood = (
        gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        - (r + x) * np.log(alpha + T) - s * np.log(beta + T)
    )  # fmt: skip
    assert _pareto_nbd_log_likelihood([r, alpha, s, beta], x, T, T) == pytest.approx(log_likelihood, rel=1e-12)


def test_pareto_nbd_expectation_at_s_equal_1_is_the_limit():
    """At s = 1 the bracket [1 - ((beta + T) / (beta + T + t))^(s - 1)] / (s - 1) is its limit ln(1 + t / (beta + T)),
    continuous with s = 1 -+ 1e-7."""
    history = ([3, 200], [30.0, 39.0], [39.0, 39.0])
    at_one, below, above = (
        fitted(ParetoNBD, {**ref.PARETO_CDNOW_SAMPLE, "s": s}).expected_purchases(52.0, *history)
        for s in (1.0, 1.0 - 1e-7, 1.0 + 1e-7)
    )
    np.testing.assert_allclose(at_one, below, rtol=1e-6)
    np.testing.assert_allclose(at_one, above, rtol=1e-6)


def test_pareto_nbd_heavy_buyers_get_finite_predictions():
    """x = 1,000 and 10,000 over 520 weeks, the last at T: about 1.9 and 19.2 a week, so > 90 and > 900 in 52 weeks."""
    model = fitted(ParetoNBD, ref.PARETO_CDNOW_SAMPLE)
    expected = model.expected_purchases(52, [2, 1_000, 10_000], [30.0, 520.0, 520.0], [39.0, 520.0, 520.0])
    assert np.isfinite(expected).all()
    assert expected[1] > 90 and expected[2] > 900
    np.testing.assert_array_equal(model.p_alive([1_000, 10_000], [520.0, 520.0], [520.0, 520.0]), [1.0, 1.0])


def test_pareto_nbd_fit_with_heavy_buyers_at_the_end_is_finite(cdnow_sample_summary):
    """The CDNOW sample plus heavy buyers whose last purchase is at T (lifetimes' likelihood is NaN for them):
    the fit converges with a finite log-likelihood and standard errors from a finite Hessian."""
    columns = ["frequency", "recency", "T"]
    heavy = pd.DataFrame(
        [(3_000, 39.0, 39.0), (5_000, 39.0, 39.0), (200, 39.0, 39.0), (10_000, 38.5, 39.0)], columns=columns
    )
    data = pd.concat([cdnow_sample_summary[columns], heavy], ignore_index=True)
    model = ParetoNBD().fit(data["frequency"], data["recency"], data["T"])
    assert math.isfinite(model.result_.log_likelihood)
    assert all(se is not None and math.isfinite(se) for se in model.result_.standard_errors.values())
    assert np.isfinite(model.p_alive(heavy["frequency"], heavy["recency"], heavy["T"])).all()


pareto_params = st.sampled_from(
    [ref.PARETO_CDNOW_SAMPLE, PARETO_BTYD_PARAMS, PARETO_ALPHA_ABOVE_BETA, PARETO_LIFETIMES_OVERFLOW_PARAMS]
)
pareto_history = st.tuples(
    st.integers(min_value=0, max_value=100_000),
    st.floats(min_value=0.5, max_value=520.0),
    st.one_of(st.just(1.0), st.just(1.0 - 1e-12), st.floats(min_value=0.0, max_value=1.0)),
).map(lambda h: (h[0], h[2] * h[1] if h[0] > 0 else 0.0, h[1]))


@settings(max_examples=150, deadline=None)
@given(params=pareto_params, history=pareto_history)
@example(params=PARETO_ALPHA_ABOVE_BETA, history=(5_000, 1.0, 20.0))  # z near 1: _hyp2f1_one integrates
@example(params=ref.PARETO_CDNOW_SAMPLE, history=(100_000, 520.0, 520.0))
@example(params=ref.PARETO_CDNOW_SAMPLE, history=(100_000, 520.0 - 1e-10, 520.0))
def test_pareto_nbd_predictions_are_bounded_monotone_and_continuous_at_the_end(params, history):
    """For x up to 100,000 and t_x anywhere in [0, T] (T itself and just below it included): P(alive) in [0, 1];
    E[X(t)] finite, >= 0 and non-decreasing in t; and moving the last purchase 1e-9 before T barely changes them
    (the odds of having died in between are about s 1e-9 / (beta + T))."""
    model = fitted(ParetoNBD, params)
    x, t_x, T = history
    alive = model.p_alive([x], [t_x], [T])[0]
    assert 0.0 <= alive <= 1.0
    expected = np.array([model.expected_purchases(t, [x], [t_x], [T])[0] for t in (0.0, 1.0, 52.0, 520.0)])
    assert np.isfinite(expected).all() and expected[0] == 0.0
    assert (np.diff(expected) >= 0).all()
    if x > 0:
        at_end = [model.p_alive([x], [T], [T])[0], model.expected_purchases(52.0, [x], [T], [T])[0]]
        before = [model.p_alive([x], [T - 1e-9], [T])[0], model.expected_purchases(52.0, [x], [T - 1e-9], [T])[0]]
        assert at_end == pytest.approx(before, rel=1e-7)


def test_scores_never_contain_nan_with_heavy_buyers():
    summary = pd.DataFrame(
        {"frequency": [2, 10_000], "recency": [30.0, 520.0], "T": [39.0, 520.0], "monetary_value": [20.0, 30.0]},
        index=pd.Index(["light", "heavy"], name="customer_id"),
    )
    spend = fitted(GammaGamma, ref.GAMMA_GAMMA_CDNOW_SAMPLE)
    weekly = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)
    scores = score_customers(summary, fitted(BetaGeo, ref.BGNBD_CDNOW_SAMPLE), spend, weekly)
    assert np.isfinite(scores.to_numpy()).all()
    assert scores.loc["heavy", "expected_purchases"] > 900
    pareto_scores = score_customers(summary, fitted(ParetoNBD, ref.PARETO_CDNOW_SAMPLE), spend, weekly)
    assert np.isfinite(pareto_scores.to_numpy()).all()
    assert pareto_scores.loc["heavy", "p_alive"] == 1.0  # last purchase at T
    assert pareto_scores.loc["heavy", "expected_purchases"] > 900


def summary_of(histories: list[tuple[int, float, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(histories, columns=["frequency", "recency", "T", "monetary_value"])
    frame.index = pd.Index([f"c{i}" for i in range(len(frame))], name="customer_id")
    return frame


def test_nobody_bought_twice_is_a_clear_fit_error():
    summary = summary_of([(0, 0.0, float(T), 0.0) for T in range(5, 40)])
    with pytest.raises(FitError, match=r"Nobody in the data made a repeat purchase.*longer observation period"):
        fit_models(summary, "bgnbd")


def test_single_customer_is_a_clear_fit_error():
    for model_class in (BetaGeo, ModifiedBetaGeo, ParetoNBD):
        with pytest.raises(FitError, match=r"only 1 distinct customer histories .* more customers"):
            model_class().fit([3], [10.0], [20.0])


def test_handful_of_customers_fits_with_finite_predictions():
    summary = summary_of([(0, 0, 20, 0), (1, 3, 20, 12.0), (2, 8, 20, 20.0), (0, 0, 10, 0), (5, 15, 18, 31.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForecastWarning)  # few customers: the information matrix may be singular
        purchases = BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])
    spend = fitted(GammaGamma, ref.GAMMA_GAMMA_CDNOW_SAMPLE)
    weekly = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)
    scores = score_customers(summary, purchases, spend, weekly)
    assert np.isfinite(scores.to_numpy()).all()
    assert scores["p_alive"].between(0, 1).all()


def test_gamma_gamma_on_a_handful_of_repeat_buyers_is_a_clear_fit_error():
    with pytest.raises(FitError, match=r"Gamma-Gamma model did not converge on 3 customers.*heuristic CLV"):
        GammaGamma().fit([1, 2, 5], [12.0, 20.0, 31.0])


def test_fit_that_does_not_converge_says_what_to_try():
    """Histories measured on a wildly wrong time scale (T = 1,000,000 units): BFGS stops with precision loss."""
    summary = summary_of([(x, tx, 1e6, 0.0) for x, tx in ((0, 0.0), (1, 3e5), (2, 8e5), (3, 1e6))] * 10)
    with pytest.raises(FitError, match=r"did not converge on 40 customers\. Try a longer calibration period"):
        BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])


def test_gamma_gamma_q_at_most_one_warns_that_the_mean_is_undefined():
    """Spend simulated from Gamma-Gamma with p=6, q=0.8, gamma=15 (seeded): the fit finds q below 1."""
    rng = np.random.default_rng(1)
    frequency = rng.integers(1, 6, 2000)
    nu = rng.gamma(0.8, 1 / 15.0, 2000)
    monetary_value = rng.gamma(6.0 * frequency, 1 / (nu * frequency))
    with pytest.warns(ForecastWarning, match=r"Gamma-Gamma q = 0\.\d+ <= 1: the population mean spend is undefined"):
        model = GammaGamma().fit(frequency, monetary_value)
    assert model.params_["q"] < 1
    assert model.mean_spend() == np.inf


def test_all_identical_spend_is_a_clear_fit_error():
    with pytest.raises(FitError, match=r"Every repeat buyer has the same average spend.*heuristic CLV"):
        GammaGamma().fit([1, 2, 3, 4], [10.0, 10.0, 10.0, 10.0])


def test_gamma_gamma_without_repeat_buyers_is_a_clear_fit_error():
    with pytest.raises(FitError, match="needs repeat buyers with a positive average spend; the data has 0"):
        GammaGamma().fit([0, 0, 1], [0.0, 0.0, 0.0])
