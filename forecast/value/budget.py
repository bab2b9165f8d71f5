"""Budget figures per segment: new-customer CLV, maximum acquisition cost, value at risk, payback.

New-customer CLV of a segment (the acquisition budget's yardstick; docs/reference.md, "Budget figures and
segments") is the value of a customer acquired today, not the residual value of the existing ones:

    CLV_new = m * (v_1 + s * sum_{k=1..H} (E[X(t_k)] - E[X(t_{k-1})]) / (1 + d)^k),

with m the margin, v_1 the segment's mean first-purchase value (paid at acquisition, undiscounted),
E[X(t)] the purchase model's unconditional expected repeat purchases of a new customer (the population
model: a segment does not get its own purchase model), and s the segment's expected spend per repeat
purchase: the mean of its customers' Gamma-Gamma expected spend (one-time buyers contribute the
population mean, repeat buyers their shrunk own average). So "a new customer of that segment" means:
buys at the population's rate, spends like the segment's customers. That is the right reading for the
segments known at acquisition (channel, country, cohort). For value tiers and RFM groups, which are
known only after customers have bought, it says what a customer who turns out to spend like that tier
is worth; use it as an upper bound, not as a target to bid on.

Maximum acquisition cost = CLV_new / target LTV:CAC. Value at risk = the predictive CLV of the customers
whose P(alive) is below the threshold (the value a retention campaign works on). At a CAC (``budget.cac``), a
segment pays back when CLV_new >= target x CAC, and its payback month is the first month k in 0..H at which
the discounted cumulative expected margin m * (v_1 + s * sum_{j<=k} ...) reaches the CAC (month 0 is the first
purchase itself). Only segments known at acquisition are biddable: acquisition cohorts and the data's own
segments, not value tiers or RFM groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.data.compress import as_floats, as_numbers
from forecast.errors import DataError
from forecast.models import PurchaseModel
from forecast.value.costs import new_customer_alive_months, new_customer_costs
from forecast.value.segments import ALL_SEGMENTATION, RFM, VALUE_TIERS, SegmentCells, segmentation_column
from forecast.value.uncertainty import ClvDraws, discounted_purchases_new
from forecast.value.valuation import Valuation

BUDGET_COLUMNS = [
    "clv_lower_total", "clv_upper_total", "heuristic_gap_lower", "heuristic_gap_upper", "first_purchase_value",
    "new_customer_spend", "new_customer_clv", "new_customer_clv_lower", "new_customer_clv_upper",
    "max_acquisition_cost", "max_acquisition_cost_lower", "max_acquisition_cost_upper", "customers_at_risk",
    "value_at_risk", "value_at_risk_lower", "value_at_risk_upper",
]  # fmt: skip


def first_purchase_value(summary: pd.DataFrame) -> pd.Series:
    """Amount of each customer's first purchase (currency): revenue minus the repeat purchases' total."""
    value = summary["revenue"] - summary["frequency"] * summary["monetary_value"]
    return value.rename("first_purchase_value")


def customers_at_risk(customers: pd.DataFrame, p_alive_threshold: float) -> np.ndarray:
    """Which customers count towards value at risk: P(alive) below the threshold."""
    return as_floats(customers["p_alive"]) < p_alive_threshold


def new_customer_clv(
    first_value: float | np.ndarray,
    spend_per_purchase: float | np.ndarray,
    purchases: PurchaseModel,
    valuation: Valuation,
) -> np.ndarray:
    """Discounted expected margin of a newly acquired customer, cumulated by month 0..H (currency).

    Parameters
    ----------
    first_value
        Value of the first purchase (currency), made at acquisition (month 0, undiscounted).
    spend_per_purchase
        Expected spend per repeat purchase (currency).
    purchases
        Fitted purchase model; its unconditional expectation for a new customer is used.
    valuation
        Horizon, monthly discount rate, margin and time unit, as for ``forecast.value.clv.score_customers``.

    Returns
    -------
    numpy.ndarray
        Shape (..., H + 1): element k is the margin earned by the end of month k, discounted, less the cost of
        serving the customer by then (``forecast.value.costs.new_customer_costs``; none by default); the last
        element is the new-customer CLV.
    """
    repeat_purchases = discounted_purchases_new(purchases, valuation)
    repeat = np.concatenate([[0.0], repeat_purchases])
    first = np.asarray(first_value, float)[..., None]
    spend = np.asarray(spend_per_purchase, float)[..., None]
    gross = np.asarray(valuation.margin * (first + spend * repeat))
    if not valuation.has_costs:
        return gross
    return gross - new_customer_costs(purchases, valuation, repeat_purchases)


def payback_month(cumulative_margin: np.ndarray, cac: float | np.ndarray) -> np.ndarray:
    """First month at which the cumulative margin reaches the acquisition cost; -1 when it never does.

    Parameters
    ----------
    cumulative_margin
        Shape (..., H + 1), as returned by ``new_customer_clv``.
    cac
        Acquisition cost per customer (currency): one, or one per row shaped (..., 1).
    """
    reached = np.asarray(cumulative_margin) >= cac
    return np.where(reached.any(axis=-1), reached.argmax(axis=-1), -1)


def budget_columns(
    segments: pd.DataFrame,
    customers: pd.DataFrame,
    purchases: PurchaseModel,
    draws: ClvDraws | None,
    valuation: Valuation,
    target_ltv_to_cac: float,
    p_alive_threshold: float,
    cells: SegmentCells | None = None,
) -> pd.DataFrame:
    """Add intervals and budget figures to a segment table (``forecast.value.segments.segment_table``).

    Parameters
    ----------
    segments
        One row per (segmentation, segment), with customers, clv_total and clv_heuristic_total.
    customers
        Per-customer table with clv, p_alive, expected_spend, revenue, frequency, monetary_value and the
        segmentation columns.
    purchases
        Fitted purchase model (for a new customer's expected purchases).
    draws
        CLV under parameter draws, totalled by the cells of every segmentation of ``segments`` with the
        customers at risk (``customers_at_risk``), or None (no intervals: the interval columns are NaN).
    valuation
        Horizon, monthly discount rate, margin and time unit, as for ``forecast.value.clv.score_customers``.
    target_ltv_to_cac
        Maximum acquisition cost = new-customer CLV / this ratio.
    p_alive_threshold
        Customers with P(alive) below it count towards value at risk.
    cells
        The customers' ``SegmentCells`` of everybody (None) and the segmentations of ``segments``, if already
        found.

    Returns
    -------
    pandas.DataFrame
        ``segments`` with the columns of ``BUDGET_COLUMNS`` added (currency except customers_at_risk).
    """
    missing = [c for c in ("clv", "p_alive", "expected_spend", "revenue", "frequency") if c not in customers]
    if missing:
        raise DataError(f"The customer table lacks the columns {missing} needed for budget figures.")
    if cells is None:
        named = sorted(set(segments["segmentation"]) - {ALL_SEGMENTATION})
        cells = SegmentCells.of(customers, [None, *(segmentation_column(name) for name in named)])
    elif set(cells.names) != set(segments["segmentation"]):
        raise ValueError(f"Cells of the segmentations {cells.names} cannot add budget figures to those of the table.")
    sums = segment_budget_sums(customers, cells, p_alive_threshold)
    return budget_columns_of_sums(segments, sums, purchases, draws, valuation, target_ltv_to_cac)


def budget_columns_of_sums(
    segments: pd.DataFrame,
    sums: pd.DataFrame,
    purchases: PurchaseModel,
    draws: ClvDraws | None,
    valuation: Valuation,
    target_ltv_to_cac: float,
) -> pd.DataFrame:
    """``budget_columns`` from the segments' budget sums (``segment_budget_sums``), however an engine found them.

    ``sums`` is indexed by (segmentation, segment), with first_purchase_value, new_customer_spend,
    customers_at_risk and value_at_risk.
    """
    table = segments.reset_index(drop=True).merge(sums.reset_index(), on=["segmentation", "segment"], how="left")
    table["new_customer_clv"] = new_customer_clv(
        table["first_purchase_value"].to_numpy(), table["new_customer_spend"].to_numpy(), purchases, valuation
    )[:, -1]
    table["max_acquisition_cost"] = table["new_customer_clv"] / target_ltv_to_cac
    table = table.join(interval_columns(table, draws, valuation, purchases))
    table["max_acquisition_cost_lower"] = table["new_customer_clv_lower"] / target_ltv_to_cac
    table["max_acquisition_cost_upper"] = table["new_customer_clv_upper"] / target_ltv_to_cac
    return table[[*segments.columns, *BUDGET_COLUMNS]]


def segment_budget_sums(customers: pd.DataFrame, cells: SegmentCells, p_alive_threshold: float) -> pd.DataFrame:
    """Per segment of every segmentation: the means that value a new customer, and the customers at risk.

    Parameters
    ----------
    customers
        Per-customer table with clv, p_alive, expected_spend, revenue, frequency and monetary_value.
    cells
        The customers' ``SegmentCells``.
    p_alive_threshold
        Customers with P(alive) below it count towards value at risk.

    Returns
    -------
    pandas.DataFrame
        Indexed by (segmentation, segment) as ``SegmentCells.index``, with first_purchase_value and
        new_customer_spend (the segment's means of the first purchase and of the expected spend per purchase,
        currency), customers_at_risk (int) and value_at_risk (their total CLV, currency).
    """
    # Summed per cell a column or two at a time, each freed before the next is made; revenue - frequency x
    # monetary_value in place, the operations of first_purchase_value.
    first_value = np.multiply(as_numbers(customers["frequency"]), as_floats(customers["monetary_value"]))
    np.subtract(as_floats(customers["revenue"]), first_value, out=first_value)
    spend = pd.DataFrame(
        {"first_purchase_value": first_value, "expected_spend": as_floats(customers["expected_spend"])}, copy=False
    )
    del first_value
    first_and_spend = cells.sums(spend)
    del spend
    at_risk = customers_at_risk(customers, p_alive_threshold)
    risk_clv = cells.sums(pd.DataFrame({"risk_clv": np.where(at_risk, as_floats(customers["clv"]), 0.0)}, copy=False))
    sums = cells.totals(
        {
            "first_purchase_value": first_and_spend[:, 0],
            "expected_spend": first_and_spend[:, 1],
            "at_risk": cells.counts(at_risk),
            "risk_clv": risk_clv[:, 0],
        }
    )
    return budget_sums_of(sums)


def budget_sums_of(sums: pd.DataFrame) -> pd.DataFrame:
    """``segment_budget_sums``' table from the per-segment sums, however an engine added them up: customers, and
    the sums of first_purchase_value (revenue - frequency x monetary_value), expected_spend, at_risk (customers
    below the P(alive) threshold) and risk_clv (their CLV)."""
    count = sums["customers"]
    return pd.DataFrame(
        {
            "first_purchase_value": sums["first_purchase_value"] / count,
            "new_customer_spend": sums["expected_spend"] / count,
            "customers_at_risk": sums["at_risk"].astype(np.int64),
            "value_at_risk": sums["risk_clv"],
        }
    )


#: The interval columns of the budget figures, each pair from the quantiles of one figure's per-draw values.
INTERVAL_COLUMNS = [
    "clv_lower_total", "clv_upper_total", "heuristic_gap_lower", "heuristic_gap_upper", "new_customer_clv_lower",
    "new_customer_clv_upper", "value_at_risk_lower", "value_at_risk_upper",
]  # fmt: skip


def interval_columns(
    table: pd.DataFrame, draws: ClvDraws | None, valuation: Valuation, purchases: PurchaseModel
) -> pd.DataFrame:
    """Bounds of each segment's CLV total, new-customer CLV and value at risk across the parameter draws.

    The CLV total and the value at risk are realised totals: their intervals add the customers' own randomness
    (``ClvDraws.total_interval``). The new-customer CLV is an expected value per customer, and the heuristic gap
    compares two expected values: their intervals cover the parameters only.

    Parameters
    ----------
    table
        Segment table with segmentation, segment, customers, clv_heuristic_total and first_purchase_value.
    draws
        CLV under parameter draws (``budget_columns``), or None: every bound is NaN.
    valuation
        Margin and costs (the cost of active months is the point estimate's, the cost of purchases each draw's).
    purchases
        Fitted purchase model (for the cost of a new customer's active months).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``table``, the columns of ``INTERVAL_COLUMNS`` (currency; value at risk NaN when ``draws``
        have no totals at risk).
    """
    bounds = pd.DataFrame(np.nan, index=table.index, columns=INTERVAL_COLUMNS)
    if draws is None:
        return bounds
    keys = list(zip(table["segmentation"], table["segment"], strict=True))
    bounds["clv_lower_total"], bounds["clv_upper_total"] = draws.total_interval(draws.clv_totals, keys, "clv")
    expected_lower, expected_upper = draws.interval(draws.clv_totals.reindex(keys).to_numpy())
    heuristic = table["clv_heuristic_total"].to_numpy(float)
    bounds["heuristic_gap_lower"], bounds["heuristic_gap_upper"] = (
        heuristic - expected_upper,
        heuristic - expected_lower,
    )
    spend = draws.spend_totals.reindex(keys).to_numpy() / table["customers"].to_numpy()[:, None]
    repeat = draws.new_customer_purchases
    per_draw = valuation.margin * (table["first_purchase_value"].to_numpy()[:, None] + spend * repeat)
    if valuation.has_costs:
        per_draw = per_draw - valuation.cost_per_purchase * (1.0 + repeat)
        if valuation.cost_per_active_month > 0:
            per_draw = per_draw - valuation.cost_per_active_month * new_customer_alive_months(purchases, valuation)[-1]
    bounds["new_customer_clv_lower"], bounds["new_customer_clv_upper"] = draws.interval(per_draw)
    if draws.risk_totals is not None:
        risk = draws.total_interval(draws.risk_totals, keys, "risk")
        bounds["value_at_risk_lower"], bounds["value_at_risk_upper"] = risk
    return bounds


#: The columns ``decision_columns`` adds to a segment table.
DECISION_COLUMNS = ["cac", "ltv_to_cac", "pays_back", "payback_month", "biddable"]
#: Segmentations known only after customers have bought (value tiers, RFM groups): nobody can bid on them.
KNOWN_AFTER_ACQUISITION = frozenset({VALUE_TIERS, RFM})


def segment_costs(table: pd.DataFrame, cac: float | dict[str, float] | None) -> np.ndarray:
    """The acquisition cost per customer of each row of a segment table (NaN where none is given).

    Parameters
    ----------
    table
        Segment table with the column ``segment``.
    cac
        ``budget.cac``: one amount for every segment, amounts by segment name (``default`` for the rest), or None.
    """
    if cac is None:
        return np.full(len(table), np.nan)
    if not isinstance(cac, dict):
        return np.full(len(table), float(cac))
    default = cac.get("default", np.nan)
    return np.array([cac.get(str(segment), default) for segment in table["segment"]], dtype=float)


def decision_columns(
    segments: pd.DataFrame,
    purchases: PurchaseModel,
    valuation: Valuation,
    cac: float | dict[str, float] | None,
    target_ltv_to_cac: float,
) -> pd.DataFrame:
    """Add to a segment table whether a new customer acquired at the segment's CAC pays back, and when.

    Parameters
    ----------
    segments
        Output of ``budget_columns``.
    purchases
        Fitted purchase model (for a new customer's expected purchases).
    valuation
        Horizon, monthly discount rate, margin and time unit, as for ``forecast.value.clv.score_customers``.
    cac
        ``budget.cac`` (one amount, amounts by segment name, or None: the decision columns stay empty).
    target_ltv_to_cac
        A segment pays back when its new-customer CLV is at least this many times its CAC.

    Returns
    -------
    pandas.DataFrame
        ``segments`` with ``DECISION_COLUMNS``: cac, ltv_to_cac (new-customer CLV / CAC), pays_back (ltv_to_cac at
        least the target), payback_month (the first month, 0 = the first purchase, by whose end the discounted
        cumulative margin reaches the CAC; missing when it does not within the horizon), biddable (the segment
        is known when a customer is acquired: not a value tier or an RFM group).
    """
    costs = segment_costs(segments, cac)
    cumulative = new_customer_clv(
        segments["first_purchase_value"].to_numpy(), segments["new_customer_spend"].to_numpy(), purchases, valuation
    )
    month = payback_month(cumulative, np.nan_to_num(costs, nan=np.inf)[:, None])
    table = segments.copy()
    table["cac"] = costs
    table["ltv_to_cac"] = table["new_customer_clv"] / costs
    given = ~np.isnan(costs)
    table["pays_back"] = pd.array(np.where(given, table["ltv_to_cac"] >= target_ltv_to_cac, False), dtype="boolean")
    table.loc[~given, "pays_back"] = pd.NA
    table["payback_month"] = pd.array(np.where(month >= 0, month, 0), dtype="Int64")
    table.loc[month < 0, "payback_month"] = pd.NA
    table["biddable"] = ~table["segmentation"].isin(KNOWN_AFTER_ACQUISITION)
    return table


def verdict(row: pd.Series, target_ltv_to_cac: float, horizon_months: int) -> str:
    """One sentence on whether to bid for a segment at its CAC, for the budget command and the report."""
    cac, ltv = row["cac"], row["ltv_to_cac"]
    within = (
        f"the CAC is recovered in month {row['payback_month']}"
        if not pd.isna(row["payback_month"])
        else f"the CAC is not recovered within {horizon_months} months"
    )
    if row["pays_back"]:
        return (
            f"pays back at {cac:,.2f}: LTV:CAC {ltv:.2f} reaches the target {target_ltv_to_cac:g} and {within}; "
            f"bid up to {row['max_acquisition_cost']:,.2f} per customer"
        )
    return (
        f"misses the target at {cac:,.2f}: LTV:CAC {ltv:.2f} is below {target_ltv_to_cac:g} ({within}); "
        f"bid at most {row['max_acquisition_cost']:,.2f} per customer"
    )
