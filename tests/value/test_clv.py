"""Predictive CLV against a hand computation, the heuristic's worked examples, tiers and lifespan."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import mpmath as mp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.data.compress import Histories
from forecast.errors import FitError, ForecastWarning
from forecast.models import BetaGeo, ModifiedBetaGeo, ParetoNBD, fit_models
from forecast.value.clv import (
    LIFETIME_MAX_MONTHS,
    assign_tiers,
    continuous_discount_rate,
    discounted_purchases,
    discounted_purchases_if_alive,
    heuristic_clv,
    heuristic_inputs,
    observed_lifespan_years,
    pareto_nbd_dert,
    purchases_if_alive,
    require_finite,
    score_customers,
    score_lifetime,
)
from forecast.value.valuation import Valuation
from tests import reference as ref
from tests.conftest import model_with_params

#: 12 months in weeks at 1% a month and margin 0.3, the CDNOW configs' valuation.
WEEKLY = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)


@pytest.fixture(scope="module")
def models(cdnow_sample_summary):
    return fit_models(cdnow_sample_summary, "bgnbd")


@pytest.mark.parametrize(("value", "per_year", "years", "clv"), ref.HEURISTIC_WORKED_EXAMPLES)
def test_heuristic_reproduces_worked_examples(value, per_year, years, clv):
    """1,000 x 6 x 5 = 30,000; 5,000 x 4 x 8 = 160,000; 800 x 5 x 3 = 12,000 (seed articles, tests/reference.py)."""
    assert heuristic_clv(value, per_year, years) == clv


def test_heuristic_frequent_small_buyer_beats_rare_big_buyer():
    """200 x 1 = 200 vs 75 x 3 = 225 per year; over 3 years 675 (seed articles)."""
    assert heuristic_clv(200, 1, 1) == 200
    assert heuristic_clv(75, 3, 1) == 225
    assert heuristic_clv(75, 3, 3) == 675
    assert heuristic_clv(75, 3, 3, margin=0.5) == 337.5


def test_clv_equals_hand_computed_discounted_sum(models, cdnow_sample_summary):
    """CLV = sum_k m * E[spend] * (E[X(t_k)] - E[X(t_k-1)]) / (1 + d)^k with t_k = k months in weeks."""
    purchases, spend = models
    customers = cdnow_sample_summary.iloc[:5]
    scores = score_customers(customers, purchases, spend, replace(WEEKLY, horizon_months=6, monthly_discount_rate=0.02))
    for customer_id, row in customers.iterrows():
        args = ([row["frequency"]], [row["recency"]], [row["T"]])
        total = 0.0
        for k in range(1, 7):
            now = purchases.expected_purchases(k * 30.4375 / 7, *args)[0]
            before = purchases.expected_purchases((k - 1) * 30.4375 / 7, *args)[0]
            total += (now - before) / 1.02**k
        spend_per_purchase = spend.expected_spend([row["frequency"]], [row["monetary_value"]])[0]
        assert scores.loc[customer_id, "clv"] == pytest.approx(0.3 * spend_per_purchase * total, rel=1e-12)
        assert scores.loc[customer_id, "expected_purchases"] == pytest.approx(
            purchases.expected_purchases(6 * 30.4375 / 7, *args)[0], rel=1e-12
        )


@settings(max_examples=25, deadline=None)
@given(low=st.floats(0, 0.05), step=st.floats(0.001, 0.05))
def test_clv_falls_as_discount_rate_rises(models, cdnow_sample_summary, low, step):
    purchases, spend = models
    customers = cdnow_sample_summary.iloc[:50]
    cheap = score_customers(customers, purchases, spend, replace(WEEKLY, monthly_discount_rate=low))["clv"]
    dear = score_customers(customers, purchases, spend, replace(WEEKLY, monthly_discount_rate=low + step))["clv"]
    assert (dear <= cheap).all()
    assert dear.sum() < cheap.sum()


def test_heuristic_inputs_use_own_value_and_repeat_rate():
    summary = pd.DataFrame(
        {"frequency": [3, 0], "T": [365.25 / 7 * 2, 10.0], "revenue": [400.0, 50.0]}, index=["a", "b"]
    )
    inputs = heuristic_inputs(summary, 7.0)
    assert inputs.loc["a", "avg_purchase_value"] == pytest.approx(100.0)
    assert inputs.loc["a", "purchases_per_year"] == pytest.approx(1.5)
    assert inputs.loc["b", "purchases_per_year"] == 0.0


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from([0.0, -1.0, 0.5, 13.0, 52.0, np.nan]), st.floats(0, 1e4)),
        min_size=1,
        max_size=30,
    ),
    integer_frequency=st.booleans(),
)
def test_heuristic_inputs_equal_the_formulas_bit_for_bit(rows, integer_frequency):
    """The in-place computation gives exactly revenue / (x + 1) and where(years > 0, x / years, 0), years = T in
    years, including T = 0, negative or missing (a rate of 0)."""
    summary = pd.DataFrame(rows, columns=["frequency", "T", "revenue"])
    summary["frequency"] = summary["frequency"].astype(np.int64 if integer_frequency else float)
    inputs = heuristic_inputs(summary, 7.0)
    years = summary["T"].to_numpy(float) * 7.0 / 365.25
    frequency = summary["frequency"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(years > 0, frequency / years, 0.0)
    expected = pd.DataFrame(
        {"avg_purchase_value": summary["revenue"].to_numpy(float) / (frequency + 1), "purchases_per_year": rate}
    )
    pd.testing.assert_frame_equal(inputs, expected, check_exact=True)
    assert summary["frequency"].dtype == (np.int64 if integer_frequency else float)  # the summary is left alone


def test_tiers_take_the_configured_shares_from_the_top():
    clv = pd.Series(np.arange(100, dtype=float), index=[f"c{i:03d}" for i in range(100)])
    tiers = assign_tiers(clv, {"top 1%": 0.01, "next 4%": 0.04, "next 15%": 0.15, "rest": 0.80})
    assert tiers["c099"] == "top 1%"
    assert (tiers == "next 4%").sum() == 4
    assert (tiers == "next 15%").sum() == 15
    assert (tiers == "rest").sum() == 80
    assert tiers["c000"] == "rest"


def _tiers_by_sorting(clv: pd.Series, tiers: dict[str, float]) -> list[str]:
    """Reference: rank every customer by CLV (ties by id as text), then cut the ranks at the tier shares."""
    ranked = pd.DataFrame({"clv": clv.to_numpy(), "id": clv.index.astype(str)}).sort_values(
        ["clv", "id"], ascending=[False, True], kind="stable"
    )
    positions = np.empty(len(clv), dtype=int)
    positions[ranked.index.to_numpy()] = np.arange(len(clv))
    bounds = np.cumsum(list(tiers.values())) * len(clv)
    codes = np.searchsorted(bounds, positions, side="right").clip(max=len(tiers) - 1)
    return [list(tiers)[c] for c in codes]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
    st.sampled_from([{"top": 0.1, "middle": 0.3, "rest": 0.6}, {"none": 0.0, "half": 0.5, "rest": 0.5}]),
)
def test_tiers_equal_a_full_ranking_with_ties_broken_by_id(values, random, tiers):
    """The partition-based tiers equal ranking everybody, with many ties at the cuts and ids in any order."""
    ids = [f"c{i}" for i in range(len(values))]
    random.shuffle(ids)
    clv = pd.Series(np.array(values, dtype=float), index=ids)
    assert assign_tiers(clv, tiers).astype(str).tolist() == _tiers_by_sorting(clv, tiers)


def test_scores_equal_the_direct_per_customer_expectation(cdnow_sample_summary, models):
    """Scores from the factorised expectation (P(alive) per row x purchases if alive per (x, T) pair) equal the
    direct formula E[X(t) | x, t_x, T] evaluated for every customer."""
    summary = cdnow_sample_summary
    purchases, spend = models
    scores = score_customers(summary, purchases, spend, WEEKLY)
    columns = [summary[c].to_numpy(float) for c in ("frequency", "recency", "T")]
    expected, discounted = discounted_purchases(purchases, *columns, WEEKLY)
    spend_per_purchase = spend.expected_spend(summary["frequency"], summary["monetary_value"])
    np.testing.assert_allclose(scores["expected_purchases"], expected, rtol=1e-12)
    np.testing.assert_allclose(scores["expected_spend"], spend_per_purchase, rtol=0)
    np.testing.assert_allclose(scores["clv"], 0.3 * spend_per_purchase * discounted, rtol=1e-12)
    np.testing.assert_allclose(scores["p_alive"], purchases.p_alive(*columns), rtol=0)


def test_scores_gathered_by_chunks_equal_whole_array_indexing_bit_for_bit(cdnow_sample_summary, models):
    """Scores gathered from the unique histories a chunk at a time (5 customers here), with the CLV multiplied in
    place, equal margin x spend x (P(alive) x discounted purchases if alive) indexed over all customers at once."""
    from unittest import mock

    from forecast.data import compress

    summary = cdnow_sample_summary
    purchases, spend = models
    histories, spend_histories = compress.Histories.from_summary(summary), compress.SpendHistories.from_summary(summary)
    with mock.patch.object(compress, "CHUNK_ROWS", 5):
        scores = score_customers(summary, purchases, spend, WEEKLY, histories, spend_histories)
    p_alive = purchases.p_alive(*histories.rows.T)
    expected, discounted = purchases_if_alive(purchases, histories.pairs, WEEKLY)
    rows = histories.row_of_customer.astype(np.intp)
    spend_per_purchase = spend.expected_spend(*spend_histories.rows.T)[spend_histories.row_of_customer.astype(np.intp)]
    by_hand = pd.DataFrame(
        {
            "p_alive": p_alive[rows],
            "expected_purchases": (p_alive * expected[histories.pair_of_row])[rows],
            "expected_spend": spend_per_purchase,
            "clv": 0.3 * spend_per_purchase * (p_alive * discounted[histories.pair_of_row])[rows],
        },
        index=summary.index,
    )
    pd.testing.assert_frame_equal(scores, by_hand, check_exact=True)


def test_observed_lifespan_from_churn():
    """Of 4 customers acquired before the 1-year window, 1 bought in it: churn 75%, lifespan 1 / 0.75 years."""
    first = pd.to_datetime(["2017-06-01"] * 4 + ["2019-03-01"])
    last = pd.to_datetime(["2018-02-01", "2018-05-01", "2018-12-01", "2019-06-01", "2019-03-01"])
    summary = pd.DataFrame({"first_purchase": first, "last_purchase": last})
    window_days = 365.25
    as_of = dt.date(2019, 12, 31)
    churn = 3 / 4
    assert (pd.Timestamp(as_of) - pd.Timedelta(days=window_days)) > pd.Timestamp("2018-12-01")
    assert observed_lifespan_years(summary, as_of) == pytest.approx(1 / churn)


def test_require_finite_names_column_and_customers():
    frame = pd.DataFrame({"clv": [1.0, np.inf], "p_alive": [0.5, 0.2]}, index=["ok", "heavy"])
    with pytest.raises(FitError, match=r"1 customers \(columns clv; customers heavy\)"):
        require_finite(frame, "The predictions")


# --- lifetime CLV ----------------------------------------------------------------------------------------------

#: Histories from a new customer to heavy buyers (x, T in weeks): the lifetime sum must hold for all of them.
LIFETIME_PAIRS = np.array(
    [[0, 1.0], [0, 38.86], [1, 38.86], [2, 38.86], [5, 20.0], [20, 78.0], [100, 78.0], [200, 300.0], [1000, 78.0]]
)
LIFETIME_MODELS = [
    (BetaGeo, ref.BGNBD_CDNOW_SAMPLE),
    (ModifiedBetaGeo, ref.MBGNBD_CDNOW_SAMPLE),
    (ParetoNBD, ref.PARETO_CDNOW_SAMPLE),
]


@pytest.mark.parametrize("purchase_model", ["bgnbd", "mbgnbd", "pareto"])
def test_lifetime_clv_is_at_least_the_clv_and_its_first_months_are_the_clv(cdnow_sample_summary, purchase_model):
    """clv_lifetime >= clv for every customer, and the first 12 months of its series are the 12-month clv (1e-9).

    Both discount month k at 1 / (1 + d)^k; the lifetime series goes on past the horizon without end.
    """
    histories, spend_histories = Histories.from_summary(cdnow_sample_summary), None
    purchases, spend = fit_models(cdnow_sample_summary, purchase_model, histories)
    scores = score_customers(cdnow_sample_summary, purchases, spend, WEEKLY, histories, spend_histories)
    sums = discounted_purchases_if_alive(purchases, histories.pairs, WEEKLY, [WEEKLY.horizon_months, 36])
    lifetime = score_lifetime(scores, histories, WEEKLY, (sums[0][:, [1]], sums[1]))
    assert (lifetime["clv_lifetime"] >= scores["clv"]).all()
    assert (lifetime["clv_lifetime"] >= lifetime["clv_matched"]).all()
    assert (lifetime["clv_matched"] >= scores["clv"]).all()
    first_year = score_lifetime(scores, histories, WEEKLY, (sums[0][:, [0]], sums[1]))["clv_matched"]
    np.testing.assert_allclose(first_year, scores["clv"], rtol=1e-9, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize(("model_class", "params"), LIFETIME_MODELS)
def test_lifetime_sum_equals_a_2000_year_month_by_month_sum(model_class, params):
    """The lifetime sum (months one by one to 36, then Chebyshev blocks until the tail bound is 1e-10 of the sum)
    equals the plain month-by-month sum over 2,000 years (24,000 months, whose tail after that is below 1e-100) to
    1e-6 relative (it agrees to about 1e-11), for new customers and heavy buyers alike."""
    model = model_with_params(model_class, params)
    x, T = LIFETIME_PAIRS[:, 0], LIFETIME_PAIRS[:, 1]
    alive = model.p_alive(x, T, T)
    months = np.arange(LIFETIME_MAX_MONTHS + 1)
    if_alive = np.array([model.expected_purchases(k * 30.4375 / 7, x, T, T) / alive for k in months])
    brute = (np.diff(if_alive, axis=0) / 1.01 ** months[1:, None]).sum(axis=0)
    over_spans, lifetime = discounted_purchases_if_alive(model, LIFETIME_PAIRS, WEEKLY, [36])
    np.testing.assert_allclose(lifetime, brute, rtol=1e-6, atol=0)
    np.testing.assert_allclose(over_spans[:, 0], (np.diff(if_alive[:37], axis=0) / 1.01 ** months[1:37, None]).sum(0),
                               rtol=1e-12, atol=0)  # fmt: skip


def test_pareto_nbd_dert_matches_btyd():
    """The closed form equals R BTYD 2.4.3 ``pnbd.DERT`` = 6.22828547348117 for x = 2, t_x = 30.43, T = 38.86 at
    BTYD's CDNOW-sample fit, delta = 0.15 / 52 a week (docs REFERENCE.md "DERT"; tests/reference.py), to 1e-12, and
    CLVTools 0.11.2's value at its own fit (6.22792325440761) to its fit's 6e-5."""
    model = model_with_params(ParetoNBD, ref.BTYD_PARETO_CDNOW_SAMPLE)
    x, t_x, T = ([v] for v in ref.BTYD_DERT_CUSTOMER)
    dert = pareto_nbd_dert(model, np.array(x), np.array(t_x), np.array(T), ref.BTYD_DERT_DELTA)[0]
    assert dert == pytest.approx(ref.BTYD_DERT, rel=1e-12)
    assert dert == pytest.approx(ref.CLVTOOLS_DERT, rel=1e-4)


def _mpmath_pareto_nbd_dert(params: dict[str, float], x: float, t_x: float, T: float, delta: float) -> float:
    """DERT of Pareto/NBD from its definition, by numerical integration at 30 digits (no closed form used).

    Given lambda and mu, a customer with x purchases, the last at t_x, observed to T is alive at T with likelihood
    lambda^x e^-(lambda + mu) T and died at u in (t_x, T] with density lambda^x e^-lambda u mu e^-mu u (Fader &
    Hardie 2005, note 009, eq. 2); alive at T, the discounted purchases to come are
    integral_0^inf e^-delta t lambda e^-mu t dt = lambda / (delta + mu). So with Gamma(r, alpha) and Gamma(s, beta)
    priors, DERT = E[lambda^(x + 1) e^-lambda T] E[e^-mu T / (delta + mu)] / (alive term + integral of the dead
    term over u), every expectation a numerical integral over the prior.
    """
    mp.mp.dps = 30
    r, alpha, s, beta = (mp.mpf(params[k]) for k in ("r", "alpha", "s", "beta"))
    x, t_x, T, delta = (mp.mpf(v) for v in (x, t_x, T, delta))

    def over_lambda(power: mp.mpf, u: mp.mpf) -> mp.mpf:
        density = alpha**r / mp.gamma(r)
        return mp.quad(lambda lam: density * lam ** (r - 1 + power) * mp.exp(-(alpha + u) * lam), [0, 1, mp.inf])

    def over_mu(f):
        density = beta**s / mp.gamma(s)
        return mp.quad(lambda mu: density * mu ** (s - 1) * mp.exp(-beta * mu) * f(mu), [0, 1, mp.inf])

    alive = over_lambda(x, T) * over_mu(lambda mu: mp.exp(-mu * T))
    died = mp.quad(
        lambda u: over_lambda(x, u) * over_mu(lambda mu: mu * mp.exp(-mu * u)), [t_x, T], method="gauss-legendre"
    )
    to_come = over_lambda(x + 1, T) * over_mu(lambda mu: mp.exp(-mu * T) / (delta + mu))
    return float(to_come / (alive + died))


@pytest.mark.slow
@pytest.mark.parametrize("history", [(0, 0.0, 38.86), ref.BTYD_DERT_CUSTOMER, (7, 35.0, 38.86), (26, 30.86, 31.0)])
def test_pareto_nbd_dert_equals_the_integral_of_its_definition(history):
    """The closed form (Fader, Hardie & Lee 2005, "RFM and CLV", eq. 2) equals an independent mpmath integration
    of the definition (``_mpmath_pareto_nbd_dert``, 30 digits) to 1e-6 at BTYD's CDNOW-sample fit, delta = 0.15 / 52
    a week, for a one-time buyer, Hardie's customer (x = 2, t_x = 30.43, T = 38.86, whose integral also reproduces
    BTYD's 6.22828547348117 to 15 digits), a lapsing and a heavy recent buyer. (About 2.5 s per customer.)"""
    params = ref.BTYD_PARETO_CDNOW_SAMPLE
    model = model_with_params(ParetoNBD, params)
    x, t_x, T = history
    expected = _mpmath_pareto_nbd_dert(params, x, t_x, T, ref.BTYD_DERT_DELTA)
    dert = pareto_nbd_dert(model, np.array([x]), np.array([t_x]), np.array([T]), ref.BTYD_DERT_DELTA)[0]
    assert dert == pytest.approx(expected, rel=1e-6)


def test_monthly_pareto_nbd_lifetime_is_the_continuous_dert_discounted_by_up_to_a_month():
    """Month k's purchases, made in (k - 1, k], are discounted at e^-delta k instead of e^-delta t: so the monthly
    lifetime sum lies between e^-delta and 1 times the continuous DERT at delta = ln(1 + d) a month, and close to
    delta / (e^delta - 1) of it (the ratio for a constant rate: 0.99503 at 1% a month), for every history."""
    model = model_with_params(ParetoNBD, ref.PARETO_CDNOW_SAMPLE)
    x, T = LIFETIME_PAIRS[:, 0], LIFETIME_PAIRS[:, 1]
    _, monthly = discounted_purchases_if_alive(model, LIFETIME_PAIRS, WEEKLY, [])
    delta = continuous_discount_rate(WEEKLY)
    assert delta == pytest.approx(np.log(1.01) * 7 / 30.4375, rel=1e-15)
    dert = pareto_nbd_dert(model, x, T, T, delta)
    month = np.log(1.01)
    assert (monthly <= dert).all() and (monthly >= np.exp(-month) * dert).all()
    np.testing.assert_allclose(monthly / dert, month / np.expm1(month), rtol=1e-4)


def test_lifetime_sum_converges_to_btyd_dert_times_spend_as_the_months_shrink():
    """The same summation with steps of 1/4 and 1/8 month (the rate per step (1 + d)^(1 / n) - 1), extrapolated to
    step 0 (Richardson: the error is first order in the step), equals BTYD's DERT (6.22828547348117, tests/reference.py)
    x Gamma-Gamma expected spend (24.6540311704301) x margin to 1e-4: the lifetime CLV is BTYD's, discounted by whole
    months. The monthly value itself is 0.5% lower at 15% a year (``test_monthly_pareto_nbd_lifetime_...``)."""
    model = model_with_params(ParetoNBD, ref.BTYD_PARETO_CDNOW_SAMPLE)
    monthly_rate = np.expm1(ref.BTYD_DERT_DELTA * 30.4375 / 7)  # continuous 0.15 / 52 a week, as a monthly rate
    x, t_x, T = ref.BTYD_DERT_CUSTOMER
    alive = model.p_alive(np.array([x]), np.array([t_x]), np.array([T]))[0]

    def clv_by_steps(steps_per_month: int) -> float:
        step = Valuation(horizon_months=1, monthly_discount_rate=(1 + monthly_rate) ** (1 / steps_per_month) - 1,
                         margin=0.3, days_per_unit=7.0 * steps_per_month)  # fmt: skip
        _, lifetime = discounted_purchases_if_alive(model, np.array([[x, T]]), step, [])
        return float(0.3 * ref.BTYD_DERT_CUSTOMER_EXPECTED_SPEND * alive * lifetime[0])

    extrapolated = 2 * clv_by_steps(8) - clv_by_steps(4)
    assert extrapolated == pytest.approx(0.3 * ref.BTYD_DERT_CUSTOMER_EXPECTED_SPEND * ref.BTYD_DERT, rel=1e-4)


def test_lifetime_clv_is_empty_with_a_warning_without_discounting(cdnow_sample_summary, models):
    """At d = 0 the lifetime sum may be infinite (E[X(t)] grows without bound): clv_lifetime is NaN, with a
    warning that names the rate; clv_matched is still the undiscounted sum over its span."""
    purchases, spend = models
    flat = replace(WEEKLY, monthly_discount_rate=0.0)
    histories = Histories.from_summary(cdnow_sample_summary)
    scores = score_customers(cdnow_sample_summary, purchases, spend, flat, histories)
    sums = discounted_purchases_if_alive(purchases, histories.pairs, flat, [12])
    with pytest.warns(ForecastWarning, match="clv_lifetime is left empty: at a monthly discount rate of 0"):
        lifetime = score_lifetime(scores, histories, flat, sums)
    assert lifetime["clv_lifetime"].isna().all()
    np.testing.assert_allclose(lifetime["clv_matched"], scores["clv"], rtol=1e-9)
