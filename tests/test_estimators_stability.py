"""Models on degenerate and extreme data: finite predictions or a clear FitError, never a NaN or a crash.

High-precision references are computed with mpmath at 60 digits from Euler's transformation of the
hypergeometric term (Abramowitz & Stegun 15.3.3), which converges for any number of purchases.
"""

from __future__ import annotations

import warnings

import mpmath as mp
import numpy as np
import pandas as pd
import pytest

from forecast.clv import score_customers
from forecast.errors import FitError, ForecastWarning
from forecast.estimators import BetaGeo, FitResult, GammaGamma, ModifiedBetaGeo, ParetoNBD, fit_models

from . import reference as ref

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import ModifiedBetaGeoFitter

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


def test_pareto_nbd_nan_for_heavy_buyers_is_a_clear_fit_error():
    """lifetimes' Pareto/NBD returns NaN at x=1,000 over 520 weeks: a FitError that names the history."""
    model = fitted(ParetoNBD, ref.PARETO_CDNOW_SAMPLE)
    with pytest.raises(FitError, match=r"NaN or infinite for 1 customer histories, e.g. \(x=1000, t_x=520, T=520\)"):
        model.expected_purchases(52, [2, 1000], [30.0, 520.0], [39.0, 520.0])
    with pytest.raises(FitError, match="Use purchase_model: bgnbd"):
        model.p_alive([10_000], [520.0], [520.0])


def test_scores_never_contain_nan_with_heavy_buyers():
    summary = pd.DataFrame(
        {"frequency": [2, 10_000], "recency": [30.0, 520.0], "T": [39.0, 520.0], "monetary_value": [20.0, 30.0]},
        index=pd.Index(["light", "heavy"], name="customer_id"),
    )
    spend = fitted(GammaGamma, ref.GAMMA_GAMMA_CDNOW_SAMPLE)
    scores = score_customers(summary, fitted(BetaGeo, ref.BGNBD_CDNOW_SAMPLE), spend, 12, 0.01, 0.3, 7.0)
    assert np.isfinite(scores.to_numpy()).all()
    assert scores.loc["heavy", "expected_purchases"] > 900
    with pytest.raises(FitError, match="Pareto/NBD"):
        score_customers(summary, fitted(ParetoNBD, ref.PARETO_CDNOW_SAMPLE), spend, 12, 0.01, 0.3, 7.0)


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
    scores = score_customers(summary, purchases, spend, 12, 0.01, 0.3, 7.0)
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
