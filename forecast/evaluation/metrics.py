"""Scores of per-customer holdout predictions: errors, rank quality, calibration by decile, and the winner.

Tied predictions never depend on row order: rank measures give a tied group its mean rank (Spearman), its share of
a boundary (top-20% capture, deciles) or its mean actual value (normalized Gini). Predictions are compared at 1e-9,
so equal sums added in another order (last-bit differences) still tie. The measures are described in
docs/reference.md, "Backtest".

References
----------
Wang, Liu & Miao (2019), "A deep probabilistic model for customer lifetime value prediction", arXiv:1912.07753
(normalized Gini and decile charts as the measures of a CLV ranking).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP_SHARE = 0.20
DECILES = 10
#: The scores that decide the overall winner: the total's error, revenue RMSE and normalized Gini (proper scores of
#: the level, the per-customer amounts and the ordering). The others are information.
DECIDING = ("total_revenue_error", "rmse_revenue", "normalized_gini")
#: Metrics where lower is better (absolute value for the signed total error), then higher is better.
LOWER_IS_BETTER = ("total_revenue_error", "rmse_revenue", "mae_purchases", "rmse_purchases", "mae_revenue")
HIGHER_IS_BETTER = ("normalized_gini", "spearman_revenue", "top20_capture")
#: Predictions equal to this many decimals tie.
TIE_DECIMALS = 9


def mae(predicted: np.ndarray | pd.Series, actual: np.ndarray | pd.Series) -> float:
    """Mean absolute error per customer."""
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(actual, float))))


def rmse(predicted: np.ndarray | pd.Series, actual: np.ndarray | pd.Series) -> float:
    """Root mean squared error per customer."""
    return float(np.sqrt(np.mean((np.asarray(predicted, float) - np.asarray(actual, float)) ** 2)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0  # ranks start at 1; ties share their mean rank
    return ranks


def spearman(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    """Spearman rank correlation (ties get their average rank); None when either side is constant."""
    x = _average_ranks(np.round(np.asarray(predicted, float), TIE_DECIMALS))
    y = _average_ranks(np.round(np.asarray(actual, float), TIE_DECIMALS))
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def tied_groups(predicted: np.ndarray, actual: np.ndarray) -> pd.DataFrame:
    """Customers grouped by equal prediction, highest first: each group's size and actual total.

    Returns
    -------
    pandas.DataFrame
        One row per distinct prediction (rounded to ``TIE_DECIMALS``), in descending order, with columns
        ``size`` (customers) and ``sum`` (their actual total).
    """
    frame = pd.DataFrame({"predicted": np.round(np.asarray(predicted, float), TIE_DECIMALS),
                          "actual": np.asarray(actual, float)})  # fmt: skip
    return frame.groupby("predicted", sort=True)["actual"].agg(["size", "sum"]).iloc[::-1]


def top_capture(predicted: np.ndarray, actual: np.ndarray, share: float = TOP_SHARE) -> float | None:
    """Share of the actual total earned by the ``share`` of customers the prediction ranks highest.

    The top group has ``share x n`` customers (a fraction of a customer counts fractionally). Customers
    tied at the boundary share the remaining places equally, so ties are not broken by an arbitrary order.
    None when the actual total is not positive.
    """
    actual = np.asarray(actual, float)
    total = actual.sum()
    if total <= 0 or len(actual) == 0:
        return None
    places = share * len(actual)
    captured = 0.0
    groups = tied_groups(predicted, actual)
    for size, group_sum in zip(groups["size"].to_numpy(), groups["sum"].to_numpy(), strict=True):
        if places <= 0:
            break
        taken = min(size, places)
        captured += group_sum * taken / size
        places -= taken
    return float(captured / total)


def gini(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    """Gini of the actual values ordered by prediction: twice the area between the cumulative-share curve and the
    diagonal, with customers ranked from the highest prediction down.

    With L_k the share of the actual total held by the k customers ranked highest (a tied group's customers each
    get the group's mean actual, so the curve is straight across the group), the area under the curve by the
    trapezoid rule is A = (sum_k L_k - 1/2) / n and the Gini is 2A - 1: 0 for a random order, negative for an order
    worse than random. None when the actual total is not positive.
    """
    groups = tied_groups(predicted, actual)
    total, n = float(groups["sum"].sum()), float(groups["size"].sum())
    if n == 0 or total <= 0:
        return None
    sizes, sums = groups["size"].to_numpy(float), groups["sum"].to_numpy(float)
    before = np.cumsum(sums) - sums  # actual total of the customers ranked above each group
    # sum of L_k over a group of m customers with mean actual y: m (before + y (m + 1) / 2) / total.
    area_sum = float(np.sum(sizes * before + sums * (sizes + 1.0) / 2.0)) / total
    return 2.0 * (area_sum - 0.5) / n - 1.0


def normalized_gini(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    """The Gini of the prediction's ordering divided by the Gini of the perfect ordering (the actual values' own).

    1 for an ordering as good as the perfect one, about 0 for a random one, -1 for the reverse of the perfect one;
    unchanged by any strictly increasing transformation of the predictions. Tied predictions get their group's mean
    actual, so row order never matters. None when the actual total is not positive or all actual values are equal.

    References
    ----------
    Wang, Liu & Miao (2019), section 5.2; docs/REFERENCE.md, "Ranking and calibration measures".
    """
    model, perfect = gini(predicted, actual), gini(actual, actual)
    if model is None or perfect is None or perfect <= 0:
        return None
    return model / perfect


def decile_table(
    predicted_revenue: np.ndarray,
    actual_revenue: np.ndarray,
    predicted_purchases: np.ndarray,
    actual_purchases: np.ndarray,
) -> list[dict[str, float | int]]:
    """Totals per decile of predicted revenue (decile 1 = the 10% ranked highest): the calibration table.

    Every decile holds n / 10 customers. Customers with equal predicted revenue are not split by an arbitrary order:
    a tied group that straddles a decile boundary is shared between the deciles in proportion to the places it takes
    in each, so ``customers`` may be fractional and a decile of tied customers gets their mean actual values.
    """
    columns = {
        "predicted_revenue": predicted_revenue, "actual_revenue": actual_revenue,
        "predicted_purchases": predicted_purchases, "actual_purchases": actual_purchases,
    }  # fmt: skip
    frame = pd.DataFrame({name: np.asarray(v, float) for name, v in columns.items()})
    frame["tie"] = np.round(frame["predicted_revenue"].to_numpy(), TIE_DECIMALS)
    groups = frame.groupby("tie", sort=True).agg(size=("tie", "size"), **{k: (k, "sum") for k in columns}).iloc[::-1]
    n = len(frame)
    ends = np.cumsum(groups["size"].to_numpy(float))
    starts = ends - groups["size"].to_numpy(float)
    rows: list[dict[str, float | int]] = []
    for decile in range(DECILES):
        low, high = decile * n / DECILES, (decile + 1) * n / DECILES
        overlap = np.clip(np.minimum(ends, high) - np.maximum(starts, low), 0.0, None)
        share = overlap / groups["size"].to_numpy(float)
        rows.append({"decile": decile + 1, "customers": float(overlap.sum())}
                    | {k: float(share @ groups[k].to_numpy(float)) for k in columns})  # fmt: skip
    return rows


def method_metrics(customers: pd.DataFrame, method: str) -> dict[str, Any]:
    """The backtest.json entry of one method: totals, the deciding scores, the information ones, the decile table.

    ``customers`` has ``actual_purchases``, ``actual_revenue``, ``<method>_purchases`` and ``<method>_revenue``.
    """
    purchases = customers[f"{method}_purchases"].to_numpy(float)
    revenue = customers[f"{method}_revenue"].to_numpy(float)
    actual_purchases = customers["actual_purchases"].to_numpy(float)
    actual_revenue = customers["actual_revenue"].to_numpy(float)
    actual_total = float(actual_revenue.sum())
    return {
        "predicted_purchases": float(purchases.sum()),
        "predicted_revenue": float(revenue.sum()),
        "total_revenue_error": float(revenue.sum() / actual_total - 1.0) if actual_total > 0 else None,
        "rmse_revenue": rmse(revenue, actual_revenue),
        "normalized_gini": normalized_gini(revenue, actual_revenue),
        "mae_purchases": mae(purchases, actual_purchases),
        "rmse_purchases": rmse(purchases, actual_purchases),
        "mae_revenue": mae(revenue, actual_revenue),
        "spearman_revenue": spearman(revenue, actual_revenue),
        "top20_capture": top_capture(revenue, actual_revenue),
        "deciles": decile_table(revenue, actual_revenue, purchases, actual_purchases),
    }


def _key(metric: str, value: float) -> float:
    """Sort key: smaller is better (absolute value for the signed total error)."""
    if metric == "total_revenue_error":
        return abs(value)
    return value if metric in LOWER_IS_BETTER else -value


def winners(methods: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    """The best method per metric (lowest error, highest rank quality); the first listed wins a tie."""
    best: dict[str, str | None] = {}
    for metric in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER):
        scored = [(name, m[metric]) for name, m in methods.items() if m.get(metric) is not None]
        best[metric] = min(scored, key=lambda item: _key(metric, item[1]))[0] if scored else None
    return best


def overall_winner(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The method that wins the most deciding scores (``DECIDING``); ties go to the lower sum of its ranks on them,
    then to the higher normalized Gini, then to the first listed.

    Returns
    -------
    dict
        ``method`` (None without any score), ``decided_by`` (the deciding metrics), ``wins`` (method -> deciding
        scores won) and ``ranks`` (method -> sum of ranks, 1 = best, a missing score ranked last).
    """
    names = list(methods)
    wins = dict.fromkeys(names, 0)
    ranks = dict.fromkeys(names, 0)
    for metric in DECIDING:
        keys = {name: _key(metric, m[metric]) for name, m in methods.items() if m.get(metric) is not None}
        for name in names:
            # Equal scores share a rank: 1 + the methods strictly better; a missing score ranks last.
            rank = 1 + sum(other < keys[name] for other in keys.values()) if name in keys else len(names)
            ranks[name] += rank
            wins[name] += rank == 1
    if not any(m.get(metric) is not None for m in methods.values() for metric in DECIDING):
        return {"method": None, "decided_by": list(DECIDING), "wins": wins, "ranks": ranks}
    gini_of = {name: methods[name].get("normalized_gini") or -np.inf for name in names}
    best = min(names, key=lambda name: (-wins[name], ranks[name], -gini_of[name], names.index(name)))
    return {"method": best, "decided_by": list(DECIDING), "wins": wins, "ranks": ranks}
