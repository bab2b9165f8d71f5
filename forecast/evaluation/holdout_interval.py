"""The predictive interval of the holdout's total purchases and revenue, and whether the realised totals fell in it.

The calibration fit's parameters are drawn from their sampling distribution (``forecast.value.uncertainty``); under
each draw the expected holdout totals are summed over the customers' unique histories; the customers' own
randomness around them (``forecast.value.process``) is added as a normal with the summed variance. The interval's
quantiles then cover both, as the interval of a realised total must; whether they cover the realised totals in
about ``ci_level`` of backtests is what the coverage study in tests/evaluation checks on simulated logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forecast.data.compress import Histories, SpendHistories
from forecast.errors import FitError
from forecast.models import GammaGamma, PurchaseModel
from forecast.value.process import Periods, customer_variances, predictive_interval
from forecast.value.uncertainty import parameter_draws


def expected_totals_per_draw(
    purchases: list[PurchaseModel],
    spend: list[GammaGamma],
    length: float,
    histories: Histories,
    spend_histories: SpendHistories,
) -> np.ndarray:
    """Expected total purchases and revenue over ``length`` under each pair of drawn models: shape (2, draws), NaN
    for a draw whose predictions are not finite.

    Evaluated per unique history and added up with the counts of each (purchase history, spend history)
    combination, so the cost does not grow with the customers.
    """
    spend_rows = len(spend_histories.rows)
    combined = histories.row_of_customer.astype(np.int64) * spend_rows + spend_histories.row_of_customer
    keys, counts = np.unique(combined, return_counts=True)
    row, spend_row = keys // spend_rows, keys % spend_rows
    x, t_x, T = (histories.rows[:, i] for i in range(3))
    totals = np.empty((2, len(purchases)))
    for i, (purchase_model, spend_model) in enumerate(zip(purchases, spend, strict=True)):
        try:
            expected = np.asarray(purchase_model.expected_purchases(length, x, t_x, T), float)[row]
            per_purchase = np.asarray(spend_model.expected_spend(*spend_histories.rows.T), float)[spend_row]
        except FitError:  # a draw far in the tail whose predictions are not finite: left out by the caller
            totals[:, i] = np.nan
            continue
        totals[:, i] = counts @ expected, counts @ (expected * per_purchase)
    return totals


def holdout_interval(
    summary: pd.DataFrame,
    purchases: PurchaseModel,
    spend: GammaGamma,
    length: float,
    actual: dict[str, float],
    ci_level: float,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """backtest.json's ``holdout_interval``: per total (purchases, revenue) the expectation, the predictive interval
    and whether the realised total lies in it.

    Parameters
    ----------
    summary
        The calibration summary.
    purchases, spend
        The calibration fit's models.
    length
        Holdout length in model time units.
    actual
        The realised totals, keys purchases and revenue.
    ci_level, draws, seed
        Level of the interval, parameter draws behind it (the run's ``interval_draws``) and their seed.

    Raises
    ------
    FitError
        A fit has no parameter covariance, or too few draws give finite totals.
    """
    histories, spend_histories = Histories.from_summary(summary), SpendHistories.from_summary(summary)
    rng = np.random.default_rng(seed)
    purchase_models = parameter_draws(purchases, draws, rng)
    spend_models = parameter_draws(spend, draws, rng)
    per_draw = expected_totals_per_draw(purchase_models, spend_models, length, histories, spend_histories)
    usable = np.isfinite(per_draw).all(axis=0)
    if usable.sum() < 0.9 * draws:
        raise FitError(f"Only {int(usable.sum())} of {draws} parameter draws give finite holdout totals.")
    at_fit = expected_totals_per_draw([purchases], [spend], length, histories, spend_histories)[:, 0]
    variance = customer_variances(purchases, spend, histories, spend_histories, Periods.single(length), 1.0, seed)
    lower, upper = predictive_interval(
        per_draw[:, usable], variance[["purchases", "value"]].sum().to_numpy(), ci_level, seed
    )
    document: dict[str, Any] = {"level": ci_level, "draws": int(usable.sum()), "kind": "predictive"}
    for i, name in enumerate(("purchases", "revenue")):
        document[name] = {
            "expected": float(at_fit[i]),
            "lower": float(lower[i]),
            "upper": float(upper[i]),
            "actual": float(actual[name]),
            "covered": bool(lower[i] <= actual[name] <= upper[i]),
        }
    return document
