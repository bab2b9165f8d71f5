"""The predictive and the heuristic CLV compared like for like: over the same months, discounted the same way.

The heuristic counts ``lifespan_years`` of purchases undiscounted; the predictive CLV counts ``horizon_months``
discounted, so their plain ratio mixes the models' view with the spans and the discounting. The matched basis is
the heuristic's own lifespan, S = round(12 x lifespan_years) months, with month k of both discounted at
1 / (1 + d)^k (d = ``monthly_discount_rate``):

    predictive = sum_{k=1..S} m x E[spend] x (E[X(t_k)] - E[X(t_{k-1})]) / (1 + d)^k   (``clv_matched``)
    heuristic  = sum_{k=1..S} m x avg purchase value x purchases per year / 12 / (1 + d)^k

per customer; the manifest's ``comparison`` adds them up over the customers, segments.csv per segment with the
segment's averages (as its ``clv_heuristic_total``). The gap, heuristic - predictive, is then the value a budget
built on the heuristic assumes on top of what the models expect over the same discounted months.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from forecast.value.valuation import Valuation

#: The matched columns of a segment table, in order after ``heuristic_gap`` (``matched_segment_columns``).
MATCHED_SEGMENT_COLUMNS = [
    "matched_span_months", "clv_matched_total", "clv_heuristic_matched_total", "heuristic_gap_matched",
]  # fmt: skip


def matched_span_months(lifespan_years: float) -> int:
    """The heuristic's lifespan in whole months (at least 1): the span of the like-for-like comparison.

    Examples
    --------
    >>> matched_span_months(3), matched_span_months(4.17)
    (36, 50)
    """
    return max(1, round(12 * float(lifespan_years)))


def discount_sum(valuation: Valuation, months: int) -> float:
    """sum_{k=1..months} 1 / (1 + d)^k: the value of one currency unit a month for ``months`` months."""
    return float(np.sum(1.0 / (1.0 + valuation.monthly_discount_rate) ** np.arange(1, months + 1)))


def basis_text(valuation: Valuation, span_months: int) -> str:
    """The matched basis in words, to stand next to every comparison.

    Examples
    --------
    >>> basis_text(Valuation(horizon_months=12, monthly_discount_rate=0.01, margin=0.3, days_per_unit=7.0), 36)
    'the same 36 months, each discounted at 1% a month'
    """
    rate = valuation.monthly_discount_rate
    if rate == 0:
        return f"the same {span_months} months, undiscounted"
    return f"the same {span_months} months, each discounted at {rate * 100:.3g}% a month"


def matched_heuristic(
    avg_purchase_value: np.ndarray | pd.Series | float,
    purchases_per_year: np.ndarray | pd.Series | float,
    valuation: Valuation,
    span_months: int,
) -> Any:
    """The heuristic over ``span_months`` months discounted monthly: its monthly value x margin x ``discount_sum``."""
    return avg_purchase_value * (purchases_per_year / 12) * valuation.margin * discount_sum(valuation, span_months)


def matched_heuristic_costs(
    purchases_per_year: np.ndarray | pd.Series | float, valuation: Valuation, span_months: int
) -> Any:
    """The heuristic's cost of serving (``forecast.value.costs``) over ``span_months`` months, discounted monthly
    as ``matched_heuristic`` discounts its value."""
    monthly = valuation.cost_per_purchase * purchases_per_year / 12 + valuation.cost_per_active_month
    return monthly * discount_sum(valuation, span_months)


#: What ``comparison_record`` adds up over the customers (``comparison_sums``): their number, the predictive CLV on
#: the matched basis (gross and net), the purchases per year, and the yearly value, avg_purchase_value x
#: purchases_per_year.
COMPARISON_SUMS = ("customers", "clv_matched", "clv_matched_net", "purchases_per_year", "value_per_year")


def comparison_sums(customers: pd.DataFrame) -> dict[str, float]:
    """``COMPARISON_SUMS`` over a customer table (with clv_matched, clv_matched_net, avg_purchase_value and
    purchases_per_year); another engine adds the same up where its customers are."""
    yearly = customers["purchases_per_year"].to_numpy(float)
    return {
        "customers": float(len(customers)),
        "clv_matched": float(customers["clv_matched"].sum()),
        "clv_matched_net": float(customers["clv_matched_net"].sum()),
        "purchases_per_year": float(yearly.sum()),
        "value_per_year": float(np.sum(customers["avg_purchase_value"].to_numpy(float) * yearly)),
    }


def comparison_record(sums: Mapping[str, float], valuation: Valuation, lifespan_years: float) -> dict[str, Any]:
    """The manifest's ``comparison``: predictive and heuristic totals on the matched basis, their gap and ratio.

    Parameters
    ----------
    sums
        The customers' ``COMPARISON_SUMS`` (``comparison_sums``). The heuristic is linear in each customer's
        yearly value and purchases, so their sums give its total.
    valuation
        Monthly discount rate and margin of the run.
    lifespan_years
        The heuristic's lifespan (configured, or estimated with ``auto``).

    Returns
    -------
    dict
        span_months, discounted, monthly_discount_rate, basis (in words), predictive (sum of clv_matched),
        heuristic (the customers' ``matched_heuristic`` added up), gap (heuristic - predictive) and ratio
        (heuristic / predictive; None when the predictive total is 0); net: None without costs, else the costs
        and the same totals and gap net of them (clv_matched_net, and the heuristic less
        ``matched_heuristic_costs``).
    """
    span = matched_span_months(lifespan_years)
    predictive = sums["clv_matched"]
    heuristic = float(matched_heuristic(sums["value_per_year"], 1.0, valuation, span))
    record: dict[str, Any] = {
        "span_months": span,
        "discounted": valuation.monthly_discount_rate > 0,
        "monthly_discount_rate": valuation.monthly_discount_rate,
        "basis": basis_text(valuation, span),
        "predictive": predictive,
        "heuristic": heuristic,
        "gap": heuristic - predictive,
        "ratio": heuristic / predictive if predictive else None,
        "net": None,
    }
    if valuation.has_costs:
        predictive_net = sums["clv_matched_net"]
        customers = sums["customers"]
        # The costs are linear in each customer's purchases per year, with a fixed cost per customer and month.
        mean_per_year = sums["purchases_per_year"] / customers if customers else 0.0
        heuristic_net = heuristic - customers * float(matched_heuristic_costs(mean_per_year, valuation, span))
        record["net"] = {
            "cost_per_purchase": valuation.cost_per_purchase,
            "cost_per_active_month": valuation.cost_per_active_month,
            "predictive": predictive_net,
            "heuristic": heuristic_net,
            "gap": heuristic_net - predictive_net,
        }
    return record


def matched_segment_columns(segments: pd.DataFrame, valuation: Valuation, lifespan_years: float) -> pd.DataFrame:
    """Add the matched heuristic and gap to a segment table that has clv_matched_total, after its heuristic_gap.

    The segment's heuristic uses its averages, as ``clv_heuristic_total`` does: customers x ``matched_heuristic``
    of the mean purchase value and the mean purchases per year. ``clv_matched_total`` (the predictive side) is the
    segment's sum of clv_matched (``forecast.value.segments.segment_table``).

    Returns
    -------
    pandas.DataFrame
        A copy with ``MATCHED_SEGMENT_COLUMNS`` after heuristic_gap: matched_span_months, clv_matched_total,
        clv_heuristic_matched_total and heuristic_gap_matched (heuristic - predictive, both over the span,
        discounted).
    """
    span = matched_span_months(lifespan_years)
    heuristic = segments["customers"] * matched_heuristic(
        segments["avg_purchase_value"], segments["purchases_per_year"], valuation, span
    )
    table = segments.assign(
        matched_span_months=np.full(len(segments), span, dtype=np.int64),
        clv_heuristic_matched_total=heuristic.to_numpy(float),
        heuristic_gap_matched=(heuristic - segments["clv_matched_total"]).to_numpy(float),
    )
    columns = list(segments.columns)
    before = columns[: columns.index("heuristic_gap") + 1]
    after = [c for c in table.columns if c not in before + MATCHED_SEGMENT_COLUMNS]
    return table[before + MATCHED_SEGMENT_COLUMNS + after]
