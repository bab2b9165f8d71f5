"""The like-for-like comparison: span, discounting, the matched heuristic and the segment columns, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.value.clv import heuristic_clv
from forecast.value.comparison import (
    MATCHED_SEGMENT_COLUMNS,
    basis_text,
    comparison_record,
    comparison_sums,
    discount_sum,
    matched_heuristic,
    matched_segment_columns,
    matched_span_months,
)
from forecast.value.valuation import Valuation

WEEKLY = Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0)


def test_span_is_the_lifespan_in_whole_months():
    assert [matched_span_months(y) for y in (3, 2.5, 4.17, 0.01)] == [36, 30, 50, 1]


def test_undiscounted_matched_heuristic_over_the_lifespan_is_the_heuristic():
    """With d = 0 and a whole number of months the matched heuristic is the heuristic itself: 800 x 5 x 3 x 0.3."""
    flat = Valuation(horizon_months=12, monthly_discount_rate=0.0, margin=0.3, days_per_unit=7.0)
    assert matched_heuristic(800.0, 5.0, flat, 36) == pytest.approx(heuristic_clv(800, 5, 3, margin=0.3), rel=1e-14)
    assert basis_text(flat, 36) == "the same 36 months, undiscounted"


def test_matched_heuristic_discounts_each_month():
    """Month k of 800 x 5 / 12 x 0.3 = 100 is worth 100 / 1.01^k: over 36 months 100 x 30.1075."""
    annuity = sum(1 / 1.01**k for k in range(1, 37))
    assert discount_sum(WEEKLY, 36) == pytest.approx(annuity, rel=1e-15)
    assert matched_heuristic(800.0, 5.0, WEEKLY, 36) == pytest.approx(100 * annuity, rel=1e-14)
    assert basis_text(WEEKLY, 36) == "the same 36 months, each discounted at 1% a month"


def test_comparison_record_adds_up_the_customers_on_the_matched_basis():
    customers = pd.DataFrame(
        {"clv_matched": [10.0, 20.0], "clv_matched_net": [10.0, 20.0], "avg_purchase_value": [800.0, 60.0],
         "purchases_per_year": [5.0, 2.0]}
    )  # fmt: skip
    record = comparison_record(comparison_sums(customers), WEEKLY, 3.0)
    heuristic = (800 * 5 + 60 * 2) / 12 * 0.3 * discount_sum(WEEKLY, 36)
    assert record["span_months"] == 36 and record["discounted"] is True
    assert record["predictive"] == 30.0
    assert record["heuristic"] == pytest.approx(heuristic, rel=1e-14)
    assert record["gap"] == pytest.approx(heuristic - 30, rel=1e-14)
    assert record["ratio"] == pytest.approx(heuristic / 30, rel=1e-14)
    assert record["basis"] == "the same 36 months, each discounted at 1% a month"


def test_matched_segment_columns_use_segment_averages_and_follow_the_gap():
    segments = pd.DataFrame(
        {
            "segment": ["all", "a"],
            "customers": [4, 1],
            "avg_purchase_value": [50.0, 80.0],
            "purchases_per_year": [2.0, 6.0],
            "clv_heuristic_total": [0.0, 0.0],
            "heuristic_gap": [0.0, 0.0],
            "clv_matched_total": [100.0, 30.0],
            "clv_lifetime_total": [300.0, 90.0],
        }
    )
    table = matched_segment_columns(segments, WEEKLY, 3.0)
    gap_at = list(table.columns).index("heuristic_gap")
    assert list(table.columns)[gap_at + 1 : gap_at + 5] == MATCHED_SEGMENT_COLUMNS
    assert list(table.columns)[-1] == "clv_lifetime_total"
    expected = np.array([4 * 50 * 2, 80 * 6]) / 12 * 0.3 * discount_sum(WEEKLY, 36)
    np.testing.assert_allclose(table["clv_heuristic_matched_total"], expected, rtol=1e-14)
    np.testing.assert_allclose(table["heuristic_gap_matched"], expected - [100, 30], rtol=1e-14)
    assert (table["matched_span_months"] == 36).all()
