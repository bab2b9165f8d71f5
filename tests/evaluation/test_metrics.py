"""Tests of forecast.evaluation.metrics: normalized Gini, the tie-aware decile table and the overall winner."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.evaluation.metrics import decile_table, gini, normalized_gini, overall_winner, top_capture


def test_normalized_gini_of_a_hand_computed_example() -> None:
    """Actual 0, 10, 30, 60; predicted 1, 2, 2, 3. Ranked by prediction: 60, then the tie (10 and 30) at its mean
    20 each, then 0, so the cumulative shares are 0.6, 0.8, 1, 1 (sum 3.4) against 0.6, 0.9, 1, 1 (sum 3.5) for the
    perfect order. Gini = 2 (sum - 1/2) / n - 1: 0.45 and 0.5, normalized 0.9."""
    actual = np.array([0.0, 10.0, 30.0, 60.0])
    predicted = np.array([1.0, 2.0, 2.0, 3.0])
    assert gini(predicted, actual) == pytest.approx(0.45, abs=1e-15)
    assert gini(actual, actual) == pytest.approx(0.5, abs=1e-15)
    assert normalized_gini(predicted, actual) == pytest.approx(0.9, abs=1e-15)


def test_normalized_gini_is_1_for_the_perfect_order_minus_1_for_its_reverse_and_about_0_for_a_random_one() -> None:
    rng = np.random.default_rng(11)
    actual = rng.gamma(0.5, 40.0, 20_000) * (rng.random(20_000) < 0.3)
    assert normalized_gini(actual, actual) == pytest.approx(1.0, abs=1e-12)
    assert normalized_gini(2 * actual + 5, actual) == pytest.approx(1.0, abs=1e-12)
    assert normalized_gini(-actual, actual) == pytest.approx(-1.0, abs=1e-12)
    random_scores = [normalized_gini(rng.random(20_000), actual) for _ in range(5)]
    assert all(abs(score) < 0.03 for score in random_scores if score is not None)


def test_tied_predictions_count_with_their_mean_whatever_the_row_order() -> None:
    """Constant predictions are a random order: Gini 0 exactly; permuting the rows changes nothing."""
    actual = np.array([5.0, 0, 0, 7, 1, 0, 30, 2])
    assert normalized_gini(np.ones(8), actual) == pytest.approx(0.0, abs=1e-15)
    predicted = np.array([1.0, 0, 0, 1, 0, 0, 2, 0])
    order = np.random.default_rng(3).permutation(8)
    assert normalized_gini(predicted[order], actual[order]) == pytest.approx(normalized_gini(predicted, actual))


def test_normalized_gini_is_undefined_without_revenue_or_spread() -> None:
    assert normalized_gini(np.arange(3.0), np.zeros(3)) is None
    assert normalized_gini(np.arange(3.0), np.full(3, 4.0)) is None


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 50), st.floats(0, 100)), min_size=2, max_size=40),
    st.sampled_from(["log1p", "cube", "affine", "rank"]),
)
def test_normalized_gini_is_invariant_to_increasing_transformations(
    pairs: list[tuple[float, float]], transform: str
) -> None:
    """Only the order of the predictions and their ties matter; the score stays within -1..1."""
    predicted, actual = (np.array(values) for values in zip(*pairs, strict=True))
    predicted = np.round(predicted, 6)  # no two values closer than the 1e-9 at which predictions tie
    changed = {
        "log1p": np.log1p(predicted),
        "cube": predicted**3 + 1.0,
        "affine": 3.0 * predicted + 7.0,
        "rank": np.unique(predicted, return_inverse=True)[1].astype(float),
    }[transform]
    score = normalized_gini(predicted, actual)
    if score is None:
        assert normalized_gini(changed, actual) is None
        return
    assert normalized_gini(changed, actual) == pytest.approx(score, abs=1e-9)
    assert -1 - 1e-9 <= score <= 1 + 1e-9


def test_decile_table_shares_tied_groups_between_deciles() -> None:
    """Ten customers, four tied at the top for one decile of one customer: each decile of the tie gets a quarter of
    each tied customer, i.e. the tie's mean; totals are kept."""
    predicted = np.array([9.0, 9, 9, 9, 5, 4, 3, 2, 1, 0])
    actual = np.array([40.0, 0, 0, 0, 5, 4, 3, 2, 1, 0])
    table = decile_table(predicted, actual, predicted, actual)
    assert [row["customers"] for row in table] == [1.0] * 10
    for row in table[:4]:
        assert row["actual_revenue"] == pytest.approx(10.0) and row["predicted_revenue"] == pytest.approx(9.0)
    assert [row["actual_revenue"] for row in table[4:]] == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert sum(row["actual_revenue"] for row in table) == pytest.approx(actual.sum())
    uneven = decile_table(np.ones(15), np.arange(15.0), np.ones(15), np.arange(15.0))
    assert [row["customers"] for row in uneven] == pytest.approx([1.5] * 10)
    assert [row["actual_revenue"] for row in uneven] == pytest.approx([1.5 * 7.0] * 10)


def test_overall_winner_counts_deciding_scores_and_breaks_ties_by_ranks() -> None:
    """Deciding scores: |total error|, revenue RMSE (lower is better), normalized Gini (higher). MAE and Spearman
    do not count."""
    methods = {
        "a": {"total_revenue_error": -0.2, "rmse_revenue": 90.0, "normalized_gini": 0.67, "mae_revenue": 1.0},
        "b": {"total_revenue_error": 0.05, "rmse_revenue": 100.0, "normalized_gini": 0.70, "mae_revenue": 9.0},
        "c": {"total_revenue_error": 0.5, "rmse_revenue": 130.0, "normalized_gini": 0.68, "spearman_revenue": 0.9},
    }
    result = overall_winner(methods)
    assert result["method"] == "b"
    assert result["wins"] == {"a": 1, "b": 2, "c": 0}
    assert result["ranks"] == {"a": 1 + 2 + 3, "b": 1 + 2 + 1, "c": 3 + 3 + 2}
    tie = {  # one win each: the lower sum of ranks wins (a: 1 + 2 + 2 = 5, b: 2 + 3 + 1 = 6, c: 3 + 1 + 3 = 7)
        "a": {"total_revenue_error": 0.1, "rmse_revenue": 100.0, "normalized_gini": 0.7},
        "b": {"total_revenue_error": 0.2, "rmse_revenue": 110.0, "normalized_gini": 0.8},
        "c": {"total_revenue_error": -0.3, "rmse_revenue": 90.0, "normalized_gini": 0.6},
    }
    assert overall_winner(tie)["wins"] == {"a": 1, "b": 1, "c": 1}
    assert overall_winner(tie)["ranks"] == {"a": 5, "b": 6, "c": 7}
    assert overall_winner(tie)["method"] == "a"
    missing = {"a": {"total_revenue_error": None, "rmse_revenue": 90.0, "normalized_gini": None}}
    assert overall_winner(missing)["method"] == "a"
    assert overall_winner({"a": {}})["method"] is None


def test_top_capture_and_gini_agree_on_a_perfect_order() -> None:
    """The perfect order captures the most in its top 20% and has the largest Gini."""
    rng = np.random.default_rng(5)
    actual = rng.exponential(10.0, 500)
    noisy = actual + rng.normal(0, 5.0, 500)
    assert top_capture(noisy, actual) <= top_capture(actual, actual)  # type: ignore[operator]
    assert gini(noisy, actual) <= gini(actual, actual)  # type: ignore[operator]
