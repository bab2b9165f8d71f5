"""Tests of forecast.value.uncertainty: parameter draws, CLV intervals, predictive intervals of realised totals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.config import load_config
from forecast.data.ingest import read_transactions
from forecast.data.summary import summarize
from forecast.errors import FitError
from forecast.models import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD, fit_models
from forecast.value.clv import assign_tiers, discounted_purchases, purchases_if_alive, score_customers
from forecast.value.segments import ALL, SegmentCells
from forecast.value.uncertainty import (
    Histories,
    clv_draws,
    parameter_draws,
)
from forecast.value.valuation import Valuation
from tests import reference as ref
from tests.conftest import model_with_params
from tests.value.simulated_futures import predictive_totals

WEEK = 7.0
#: 12 months in weeks at 1% a month and margin 0.3, the CDNOW configs' valuation.
WEEKLY = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=WEEK)


@pytest.fixture(scope="module")
def cdnow_sample():
    """The CDNOW sample (2,357 customers, calibration weeks 1-39) with BG/NBD and Gamma-Gamma fits."""
    config = load_config(Path(__file__).parents[2] / "configs" / "cdnow_sample.yaml")
    transactions = read_transactions(config.data)
    assert config.as_of is not None
    summary = summarize(transactions.connection, config.as_of, WEEK)
    purchases, spend = fit_models(summary, "bgnbd")
    scores = score_customers(summary, purchases, spend, WEEKLY)
    return summary, purchases, spend, scores


@pytest.mark.parametrize(
    ("model_class", "params"),
    [
        (BetaGeo, ref.BGNBD_CDNOW_SAMPLE),
        (ModifiedBetaGeo, ref.MBGNBD_CDNOW_SAMPLE),
        (ParetoNBD, ref.PARETO_CDNOW_SAMPLE),
    ],
)
def test_expectation_factorises_into_p_alive_times_purchases_if_alive(model_class, params):
    """E[X(t) | x, t_x, T] = P(alive) x E[X(t) | alive at T, x, T] for all three models.

    Parameters: the CDNOW estimates in tests/reference.py (Fader, Hardie & Lee 2005; lifetimes tests).
    """
    model = model_with_params(model_class, params)
    frequency = np.array([0, 0, 1, 2, 2, 7, 26, 40], float)
    recency = np.array([0, 0, 5.0, 30.43, 10.0, 20.0, 30.857, 38.0])
    T = np.array([10.0, 38.86, 38.86, 38.86, 38.86, 38.86, 31.0, 39.0])
    summary = pd.DataFrame({"frequency": frequency, "recency": recency, "T": T})
    histories = Histories.from_summary(summary)
    _, if_alive = purchases_if_alive(model, histories.pairs, WEEKLY)
    factored = (model.p_alive(*histories.rows.T) * if_alive[histories.pair_of_row])[histories.row_of_customer]
    _, direct = discounted_purchases(model, frequency, recency, T, WEEKLY)
    np.testing.assert_allclose(factored, direct, rtol=1e-9)


def test_parameter_draws_follow_the_fitted_log_normal(cdnow_sample):
    """Log-parameter draws have the fitted values as mean and covariance_log_params as covariance."""
    _, purchases, _, _ = cdnow_sample
    draws = parameter_draws(purchases, 4000, np.random.default_rng(1))
    logs = np.log([[m.params_[p] for p in purchases.param_names] for m in draws])
    centre = np.log([purchases.params_[p] for p in purchases.param_names])
    covariance = np.asarray(purchases.result_.covariance_log_params)
    standard_errors = np.sqrt(np.diag(covariance))
    assert np.all(np.abs(logs.mean(axis=0) - centre) < 4 * standard_errors / np.sqrt(4000))
    np.testing.assert_allclose(np.cov(logs, rowvar=False), covariance, rtol=0.1, atol=0.1 * standard_errors.max() ** 2)
    again = parameter_draws(purchases, 3, np.random.default_rng(1))
    assert [m.params_ for m in again] == [m.params_ for m in draws[:3]]


def test_parameter_draws_need_a_covariance():
    """A fit whose information matrix was not invertible has no intervals: a FitError says what to do."""
    model = model_with_params(BetaGeo, {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4})
    with pytest.raises(FitError, match="interval_draws: 0"):
        parameter_draws(model, 10, np.random.default_rng(0))


def _cells(scores: pd.DataFrame) -> SegmentCells:
    tiers = assign_tiers(scores["clv"], {"top 5%": 0.05, "next 15%": 0.15, "rest": 0.8})
    return SegmentCells.of(pd.DataFrame({"segment": tiers}, index=scores.index), [None, "segment"])


def test_intervals_contain_the_point_estimate_and_totals_add_up(cdnow_sample):
    """Every customer's interval and the total's interval contain the point CLV; tier totals sum to the whole."""
    summary, purchases, spend, scores = cdnow_sample
    result = clv_draws(summary, purchases, spend, WEEKLY, _cells(scores), 0.9, 200, seed=3)
    tolerance = 1e-9 * scores["clv"].abs().max()
    assert (result.customers["clv_lower"] <= scores["clv"] + tolerance).all()
    assert (result.customers["clv_upper"] >= scores["clv"] - tolerance).all()
    assert (result.customers["clv_upper"] > result.customers["clv_lower"]).mean() > 0.99
    total = result.clv_totals.loc[("all", ALL)].to_numpy()
    lower, upper = result.interval(total)
    assert lower < scores["clv"].sum() < upper
    np.testing.assert_allclose(result.clv_totals.loc["value_tier"].sum(axis=0).to_numpy(), total, rtol=1e-12)


def test_totals_at_risk_are_the_totals_of_the_customers_at_risk(cdnow_sample):
    """The per-draw totals of the customers marked at risk equal the per-draw totals of a run on those customers
    alone (the same seed draws the same parameters); segments with nobody at risk total exactly 0; marking
    customers at risk leaves every total unchanged."""
    summary, purchases, spend, scores = cdnow_sample
    args = (summary, purchases, spend, WEEKLY)
    tiers = pd.DataFrame({"segment": assign_tiers(scores["clv"], {"top 5%": 0.05, "next 15%": 0.15, "rest": 0.8})})
    # Nobody in the top tier is at risk here, so one segment has no customer at risk.
    at_risk = (scores["p_alive"] < 0.5).to_numpy() & (tiers["segment"] != "top 5%").to_numpy()
    cells = SegmentCells.of(tiers, [None, "segment"])
    marked = clv_draws(*args, cells, draws=50, seed=4, at_risk=at_risk)
    unmarked = clv_draws(*args, cells, draws=50, seed=4)
    alone = clv_draws(
        summary[at_risk], purchases, spend, WEEKLY, SegmentCells.of(tiers[at_risk], [None, "segment"]), draws=50, seed=4
    )
    assert unmarked.risk_totals is None and marked.risk_totals is not None
    pd.testing.assert_frame_equal(marked.clv_totals, unmarked.clv_totals, rtol=1e-12)
    pd.testing.assert_frame_equal(marked.risk_totals.loc[alone.clv_totals.index], alone.clv_totals, rtol=1e-9)
    assert 0 < at_risk.sum() < len(at_risk)
    assert (marked.risk_totals.loc[("value_tier", "top 5%")] == 0).all()
    assert len(marked.risk_totals) == len(alone.clv_totals) + 1


def test_intervals_are_reproducible_and_independent_of_chunking(cdnow_sample):
    """The same seed gives the same draws whatever the chunk size; another seed gives other total draws.

    Per-customer intervals come from the delta method, so they do not depend on the draws at all.
    """
    summary, purchases, spend, scores = cdnow_sample
    args = (summary, purchases, spend, WEEKLY, _cells(scores), 0.9, 50)
    first = clv_draws(*args, seed=7)
    chunked = clv_draws(*args, seed=7, chunk_customers=300)
    other = clv_draws(*args, seed=8)
    pd.testing.assert_frame_equal(first.customers, chunked.customers, rtol=1e-12)
    pd.testing.assert_frame_equal(first.clv_totals, chunked.clv_totals, rtol=1e-12)
    pd.testing.assert_frame_equal(first.customers, other.customers, rtol=1e-12)
    assert not np.allclose(first.clv_totals.to_numpy(), other.clv_totals.to_numpy())


def test_intervals_worked_on_two_chunks_at_once_are_identical_to_the_bit(cdnow_sample):
    """Chunks are worked on by two threads; their per-cell sums are added in chunk order, so 24 chunks of 100
    customers give the same bytes every time, and the same figures as one chunk."""
    summary, purchases, spend, scores = cdnow_sample
    args = (summary, purchases, spend, WEEKLY, _cells(scores), 0.9, 50)
    runs = [clv_draws(*args, seed=7, chunk_customers=100) for _ in range(3)]
    whole = clv_draws(*args, seed=7, chunk_customers=len(summary))
    for run in runs[1:]:
        pd.testing.assert_frame_equal(run.customers, runs[0].customers, check_exact=True)
        pd.testing.assert_frame_equal(run.clv_totals, runs[0].clv_totals, check_exact=True)
        pd.testing.assert_frame_equal(run.spend_totals, runs[0].spend_totals, check_exact=True)
    pd.testing.assert_frame_equal(runs[0].customers, whole.customers, check_exact=True)
    pd.testing.assert_frame_equal(runs[0].clv_totals, whole.clv_totals, rtol=1e-12)


def test_first_order_propagation_matches_exact_recomputation_under_draws(cdnow_sample):
    """The linearised figures agree with recomputing every CLV under each parameter draw.

    On the 2,357-customer sample (large standard errors, so the hardest case for a linearisation): the totals
    of the first-order expansion follow the exact per-draw totals (correlation > 0.98; measured 0.998) and
    give the same 90% interval within 1% (measured 0.4%); each customer's delta-method interval has the width of the
    quantiles of 1,000 exact recomputations within 10%.
    """
    summary, purchases, spend, _ = cdnow_sample
    result = clv_draws(summary, purchases, spend, WEEKLY, None, 0.9, 200, seed=5)
    rng = np.random.default_rng(5)
    purchase_draws, spend_draws = parameter_draws(purchases, 200, rng), parameter_draws(spend, 200, rng)
    exact = np.array(
        [score_customers(summary, p, g, WEEKLY)["clv"].sum() for p, g in zip(purchase_draws, spend_draws, strict=True)]
    )
    linear = result.clv_totals.to_numpy()[0]
    assert np.corrcoef(linear, exact)[0, 1] > 0.98
    np.testing.assert_allclose(result.interval(linear), result.interval(exact), rtol=0.01)

    some = summary.iloc[::250]
    rng = np.random.default_rng(11)
    purchase_draws, spend_draws = parameter_draws(purchases, 1000, rng), parameter_draws(spend, 1000, rng)
    per_draw = np.column_stack(
        [
            score_customers(some, p, g, WEEKLY)["clv"].to_numpy()
            for p, g in zip(purchase_draws, spend_draws, strict=True)
        ]
    )
    lower, upper = np.quantile(per_draw, [0.05, 0.95], axis=1)
    ours = result.customers.loc[some.index]
    exact_width = upper - lower
    np.testing.assert_allclose(ours["clv_upper"] - ours["clv_lower"], exact_width, rtol=0.1)


def test_intervals_widen_with_fewer_customers(cdnow_sample):
    """Refitting on a fifth of the customers widens the total's relative interval and each customer's."""
    summary, purchases, spend, _ = cdnow_sample
    subset = summary.sample(frac=0.2, random_state=0)
    small_purchases, small_spend = fit_models(subset, "bgnbd")
    full = clv_draws(summary, purchases, spend, WEEKLY, draws=200)
    small = clv_draws(subset, small_purchases, small_spend, WEEKLY)

    def relative_width(bounds: pd.DataFrame) -> pd.Series:
        return (bounds["clv_upper"] - bounds["clv_lower"]) / bounds[["clv_lower", "clv_upper"]].mean(axis=1)

    per_customer = relative_width(small.customers) / relative_width(full.customers.loc[subset.index])
    assert per_customer.median() > 1.5
    full_lower, full_upper = full.interval(full.clv_totals.to_numpy()[0])
    small_lower, small_upper = small.interval(small.clv_totals.to_numpy()[0])
    full_width = (full_upper - full_lower) / full.clv_totals.to_numpy()[0].mean()
    small_width = (small_upper - small_lower) / small.clv_totals.to_numpy()[0].mean()
    # Parameter uncertainty shrinks like 1 / sqrt(customers): about sqrt(5) = 2.2 times narrower.
    assert small_width > 1.5 * full_width


def test_predictive_totals_centre_on_the_expected_purchases(cdnow_sample):
    """The mean simulated holdout purchases equal the sum of conditional expectations (BG/NBD, 39 weeks)."""
    summary, purchases, spend, _ = cdnow_sample
    totals = predictive_totals(summary, purchases, spend, 39.0, draws=400, seed=0, parameter_uncertainty=False)
    expected = purchases.expected_purchases(39.0, summary["frequency"], summary["recency"], summary["T"]).sum()
    standard_error = totals["purchases"].std() / np.sqrt(len(totals))
    assert abs(totals["purchases"].mean() - expected) < 4 * standard_error
    assert expected == pytest.approx(1653, rel=0.01)  # docs/reference.md (Backtest): 1,653 holdout purchases


def test_gamma_gamma_draws_with_q_at_most_one_are_dropped_with_a_warning(cdnow_sample):
    """Draws where the population mean spend is undefined (q <= 1) are left out, with a warning."""
    summary, purchases, spend, _ = cdnow_sample
    covariance = np.diag([0.0, 0.0064, 0.0]).tolist()  # log q has a standard error of 0.08
    wide = GammaGamma.from_dict(
        {**spend.to_dict(), "params": {**spend.params_, "q": 1.15}, "covariance_log_params": covariance}
    )
    with pytest.warns(UserWarning) as caught:
        result = clv_draws(summary, purchases, wide, WEEKLY, draws=200)
    messages = [str(warning.message) for warning in caught]
    assert any("left out of the intervals" in message for message in messages)
    assert 0 < 200 - result.new_customer_purchases.shape[0] <= 20
    # At q = 1.15 the spend of one-time buyers has no variance: the totals' intervals cover the parameters only.
    assert any("parameters' uncertainty only" in message for message in messages) and not result.predictive
