"""Per-segment totals: predictive beside heuristic CLV, for value tiers and the data's own segments."""

from __future__ import annotations

import numpy as np
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


#: RFM groups by recency score (rows: 3 = most recent third) and frequency score (columns: 1 = one purchase).
RFM_GROUP_GRID = {
    3: {1: "new", 2: "loyal", 3: "champions"},
    2: {1: "one-time", 2: "loyal", 3: "loyal"},
    1: {1: "lapsed", 2: "at risk", 3: "at risk"},
}
RFM_GROUPS = ["champions", "loyal", "new", "at risk", "one-time", "lapsed"]


def rfm_groups(summary: pd.DataFrame) -> pd.Series:
    """Named RFM-style groups from the observed history alone (no model), so they explain themselves.

    Recency score: the time since the last purchase, T - recency, split into thirds of the customers
    (3 = the most recent third, 1 = the third who bought longest ago). Frequency score: 1 = no repeat
    purchase; 2 = repeat purchases up to the median of the repeat buyers; 3 = more than that median.

    ============  ======================  ======================  ======================
    recency       one purchase (F=1)      some repeats (F=2)      many repeats (F=3)
    ============  ======================  ======================  ======================
    recent (3)    new                     loyal                   champions
    middle (2)    one-time                loyal                   loyal
    long ago (1)  lapsed                  at risk                 at risk
    ============  ======================  ======================  ======================

    Returns
    -------
    pandas.Series
        Ordered categorical named ``rfm_group`` (champions, loyal, new, at risk, one-time, lapsed),
        indexed like ``summary``.
    """
    since_last = (summary["T"] - summary["recency"]).to_numpy(float)
    frequency = summary["frequency"].to_numpy(float)
    recent_cut, old_cut = np.quantile(since_last, [1 / 3, 2 / 3])
    recency_score = np.where(since_last <= recent_cut, 3, np.where(since_last > old_cut, 1, 2))
    repeat = frequency[frequency > 0]
    median_repeats = float(np.median(repeat)) if len(repeat) else 0.0
    frequency_score = np.where(frequency == 0, 1, np.where(frequency > median_repeats, 3, 2))
    labels = [RFM_GROUP_GRID[r][f] for r, f in zip(recency_score.tolist(), frequency_score.tolist(), strict=True)]
    return pd.Series(pd.Categorical(labels, categories=RFM_GROUPS, ordered=True), index=summary.index, name="rfm_group")
