"""Per-segment totals: predictive beside heuristic CLV, for value tiers and the data's own segments."""

from __future__ import annotations

import pandas as pd

from forecast.clv import heuristic_clv

ALL = "all customers"


def segment_table(
    customers: pd.DataFrame, segmentations: list[str], lifespan_years: float, margin: float
) -> pd.DataFrame:
    """Summarise customers per segment of each segmentation, plus one row for everybody.

    The segment heuristic uses segment averages, as marketing teams compute it:
    mean purchase value x mean purchases per year x lifespan x margin, times the customers.

    Parameters
    ----------
    customers
        Per-customer table with revenue, p_alive, expected_purchases, clv, avg_purchase_value,
        purchases_per_year and the segmentation columns.
    segmentations
        Columns to group by (``segment`` for the value tiers, then any data segment columns).
    lifespan_years
        Expected customer lifespan for the heuristic (years).
    margin
        Gross margin as a fraction of spend.

    Returns
    -------
    pandas.DataFrame
        One row per (segmentation, segment) with customers, revenue_to_date, mean_p_alive,
        expected_purchases, clv_total, avg_purchase_value, purchases_per_year, clv_heuristic_total
        and heuristic_gap (heuristic minus predictive).
    """
    frames = []
    everyone = customers.assign(_all=ALL)
    for column in ["_all", *segmentations]:
        grouped = everyone.groupby(column, observed=True, sort=True)
        table = grouped.agg(
            customers=("clv", "size"),
            revenue_to_date=("revenue", "sum"),
            mean_p_alive=("p_alive", "mean"),
            expected_purchases=("expected_purchases", "sum"),
            clv_total=("clv", "sum"),
            avg_purchase_value=("avg_purchase_value", "mean"),
            purchases_per_year=("purchases_per_year", "mean"),
        )
        table["clv_heuristic_total"] = table["customers"] * heuristic_clv(
            table["avg_purchase_value"], table["purchases_per_year"], lifespan_years, margin
        )
        table["heuristic_gap"] = table["clv_heuristic_total"] - table["clv_total"]
        table.index = table.index.astype(str)
        table.insert(0, "segmentation", "all" if column == "_all" else column)
        frames.append(table.rename_axis("segment").reset_index())
    columns = ["segmentation", "segment"] + [c for c in frames[0].columns if c not in ("segmentation", "segment")]
    return pd.concat(frames, ignore_index=True)[columns]
