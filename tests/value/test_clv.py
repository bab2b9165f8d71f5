"""Predictive CLV against a hand computation, the heuristic's worked examples, tiers and lifespan."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.errors import FitError
from forecast.models import fit_models
from forecast.value.clv import (
    assign_tiers,
    discounted_purchases,
    heuristic_clv,
    heuristic_inputs,
    observed_lifespan_years,
    purchases_if_alive,
    require_finite,
    score_customers,
)
from forecast.value.valuation import Valuation
from tests import reference as ref

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
