"""The cost of serving a customer, subtracted after the margin: the net CLV of the model and of the heuristic alike.

CLV in the marketing literature is net income: a customer who spends 200,000 over five years and costs 100,000 to
serve over that time is worth 100,000. Two costs can be set (``costs`` in the config; c_p and c_a below), both zero
by default, when the net CLV equals the gross (the CLV at margin):

    predictive (month k of a horizon of S months, discounted like the CLV)
        cost = P(alive) x sum_{k=1..S} (c_p x (E[X(t_k) | alive] - E[X(t_{k-1}) | alive]) + c_a x A_k) / (1 + d)^k
    heuristic (its lifespan L in years, undiscounted like the heuristic itself)
        cost = (c_p x purchases per year + 12 c_a) x L
    heuristic on the matched basis (``forecast.value.comparison``)
        cost = (c_p x purchases per year / 12 + c_a) x sum_{k=1..S} 1 / (1 + d)^k

A_k is the expected share of month k a customer alive at T stays alive: the mean of the survival curve over the
month (Simpson's rule on its ends and middle; within 1e-5 of the exact integral for Pareto/NBD on CDNOW). Given
x repeat purchases by age T, a customer alive at T buys at rate lambda ~ Gamma(r + x, alpha + T) and is still
alive t later with probability

    BG/NBD      S(t) = E[exp(-lambda p t)], p ~ Beta(a, b + x)        = 2F1(r + x, a; a + b + x; -t / (alpha + T))
    MBG/NBD     the same with p ~ Beta(a, b + x + 1)                  = 2F1(r + x, a; a + b + x + 1; -t / (alpha + T))
    Pareto/NBD  S(t) = E[exp(-mu t)], mu ~ Gamma(s, beta + T)         = ((beta + T) / (beta + T + t))^s
    NBD         S(t) = 1 (no dropout)

(BG/NBD and MBG/NBD drop out right after a purchase with probability p, so dropouts come at rate lambda p; Fader,
Hardie & Lee 2005 and Batislam et al. 2007 for the posteriors). The models' expected purchases follow from it,
E[X(t) | alive] = integral_0^t E[lambda 1{alive at u}] du, which the tests check against each model's closed form.

A new customer (the budget's new-customer CLV) also pays c_p for the first purchase, at acquisition (month 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import hyp2f1

from forecast.config import DAYS_PER_MONTH
from forecast.data.compress import Histories, take
from forecast.errors import FitError
from forecast.models import PurchaseModel
from forecast.value.valuation import Valuation

#: The net CLV columns of the customer table, each the gross column of the same name without ``_net`` less costs.
NET_COLUMNS = ["clv_net", "clv_matched_net", "clv_heuristic_net"]


def survival_if_alive(model: PurchaseModel, frequency: np.ndarray, T: np.ndarray, t: float) -> np.ndarray:
    """P(alive at T + t | alive at T, x repeat purchases by age T), per customer (module docstring).

    Parameters
    ----------
    model
        Fitted purchase model (bgnbd, mbgnbd, pareto or nbd).
    frequency, T
        Repeat purchases and ages (model time units).
    t
        Time after T (model time units).
    """
    x, age = np.asarray(frequency, float), np.asarray(T, float)
    params = model.params_
    with np.errstate(all="ignore"):
        if model.name in ("bgnbd", "mbgnbd"):
            r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
            c = a + b + x + (1.0 if model.name == "mbgnbd" else 0.0)
            # Pfaff's transformation 2F1(A, B; C; -z) = (1 + z)^-B 2F1(C - A, B; C; z / (1 + z)) keeps the argument
            # in [0, 1), where scipy's hyp2f1 stays finite (at -z below -1 it returns inf for heavy buyers).
            values = (1.0 + t / (alpha + age)) ** -a * hyp2f1(c - r - x, a, c, t / (alpha + age + t))
        elif model.name == "pareto":
            values = ((params["beta"] + age) / (params["beta"] + age + t)) ** params["s"]
        elif model.name == "nbd":
            values = np.ones_like(x)
        else:
            raise FitError(f"No survival curve is known for the {model.title} model; set costs.per_active_month to 0.")
    values = np.asarray(values, float)
    if not np.isfinite(values).all():
        raise FitError(f"The {model.title} survival curve is not finite for some customer histories.")
    return np.clip(values, 0.0, 1.0)


def discounted_alive_months(
    model: PurchaseModel, frequency: np.ndarray, T: np.ndarray, valuation: Valuation, spans: Sequence[int]
) -> np.ndarray:
    """sum_{k=1..span} A_k / (1 + d)^k for a customer alive at T, per customer and span: shape (customers, spans).

    Evaluated month by month, so that memory stays one array of the customers whatever the spans.
    """
    month = DAYS_PER_MONTH / valuation.days_per_unit
    v = 1.0 / (1.0 + valuation.monthly_discount_rate)
    sums = np.empty((len(frequency), len(spans)))
    total, at_start = np.zeros(len(frequency)), np.ones(len(frequency))
    for k in range(1, max(spans, default=0) + 1):
        middle = survival_if_alive(model, frequency, T, (k - 0.5) * month)
        at_end = survival_if_alive(model, frequency, T, k * month)
        total += (at_start + 4.0 * middle + at_end) / 6.0 * v**k
        at_start = at_end
        for i, span in enumerate(spans):
            if span == k:
                sums[:, i] = total
    return sums


def costs_if_alive(
    model: PurchaseModel,
    pairs: np.ndarray,
    valuation: Valuation,
    spans: Sequence[int],
    discounted_purchases: np.ndarray,
) -> np.ndarray:
    """The discounted cost of serving a customer alive at T over each span, per unique (x, T) pair.

    Parameters
    ----------
    model
        Fitted purchase model.
    pairs
        Unique (frequency, T) pairs (``Histories.pairs``).
    valuation
        Discount rate, time unit and costs.
    spans
        Numbers of months.
    discounted_purchases
        Shape (pairs, spans): the discounted expected purchases if alive over each span
        (``forecast.value.clv.discounted_purchases_if_alive``).
    """
    costs = valuation.cost_per_purchase * np.asarray(discounted_purchases, float)
    if valuation.cost_per_active_month > 0:
        months = discounted_alive_months(model, pairs[:, 0], pairs[:, 1], valuation, spans)
        costs = costs + valuation.cost_per_active_month * months
    return costs


def heuristic_costs(
    purchases_per_year: np.ndarray | pd.Series | float, lifespan_years: float, valuation: Valuation
) -> Any:
    """The heuristic's cost of serving a customer over its lifespan, undiscounted: (c_p x per year + 12 c_a) x L.

    Examples
    --------
    >>> v = Valuation(horizon_months=12, monthly_discount_rate=0.0, margin=1.0, days_per_unit=7.0,
    ...               cost_per_purchase=5_000.0, cost_per_active_month=50_000 / 60)
    >>> round(heuristic_costs(2.0, 5.0, v), 6)   # 10 purchases and 60 months: the literature's 100,000
    100000.0
    """
    return (valuation.cost_per_purchase * purchases_per_year + 12 * valuation.cost_per_active_month) * lifespan_years


def net_columns(
    customers: dict[str, np.ndarray] | pd.DataFrame,
    histories: Histories,
    model: PurchaseModel,
    valuation: Valuation,
    spans: tuple[int, int],
    discounted_purchases: np.ndarray,
    lifespan_years: float,
) -> dict[str, np.ndarray]:
    """The net CLV of each customer: ``NET_COLUMNS``, the gross columns less the costs of serving the customer.

    Parameters
    ----------
    customers
        Per-customer columns clv, clv_matched, clv_heuristic, p_alive and purchases_per_year (in the order of
        ``histories``' customers).
    histories
        The customers' unique histories.
    model
        Fitted purchase model.
    valuation
        Horizon, discount rate, time unit and costs.
    spans
        (horizon months, matched span months): the spans of clv and clv_matched.
    discounted_purchases
        Shape (pairs, 2): the discounted expected purchases if alive over the two spans, per pair.
    lifespan_years
        The heuristic's lifespan.
    """
    gross = {name: np.asarray(customers[name.removesuffix("_net")], float) for name in NET_COLUMNS}
    if not valuation.has_costs:
        return gross  # the gross columns' own arrays: without costs, net is gross (no copy of millions of values)
    per_pair = costs_if_alive(model, histories.pairs, valuation, spans, discounted_purchases)
    p_alive = np.asarray(customers["p_alive"], float)
    rows = histories.row_of_customer
    per_year = np.asarray(customers["purchases_per_year"], float)
    return {
        "clv_net": gross["clv_net"] - p_alive * take(per_pair[histories.pair_of_row, 0], rows),
        "clv_matched_net": gross["clv_matched_net"] - p_alive * take(per_pair[histories.pair_of_row, 1], rows),
        "clv_heuristic_net": gross["clv_heuristic_net"] - heuristic_costs(per_year, lifespan_years, valuation),
    }


def new_customer_costs(model: PurchaseModel, valuation: Valuation, repeat_purchases: np.ndarray) -> np.ndarray:
    """A new customer's discounted cost of serving, cumulated by month 0..H: shape (..., H + 1).

    Month 0 is the first purchase (c_p, undiscounted); month k adds c_p x the month's discounted expected repeat
    purchases and c_a x the expected share of the month alive, discounted (``new_customer_alive_months``).

    Parameters
    ----------
    model
        Fitted purchase model.
    valuation
        Horizon, discount rate, time unit and costs.
    repeat_purchases
        A new customer's discounted expected repeat purchases cumulated by month 1..H
        (``forecast.value.uncertainty.discounted_purchases_new``), shape (..., H).
    """
    repeat = np.asarray(repeat_purchases, float)
    cumulative = valuation.cost_per_purchase * (1.0 + np.concatenate([np.zeros((*repeat.shape[:-1], 1)), repeat], -1))
    if valuation.cost_per_active_month > 0:
        cumulative += valuation.cost_per_active_month * new_customer_alive_months(model, valuation)
    return cumulative


def new_customer_alive_months(model: PurchaseModel, valuation: Valuation) -> np.ndarray:
    """A new customer's expected discounted months alive, cumulated by month 0..H: shape (H + 1,).

    P(alive right after the first purchase) (1 for BG/NBD and Pareto/NBD; b / (a + b) for MBG/NBD, which allows
    a dropout then) x ``discounted_alive_months`` of the history x = 0, T = 0.
    """
    new = np.zeros(1)
    alive_at_start = float(model.p_alive(new, new, new)[0])
    months = discounted_alive_months(model, new, new, valuation, range(1, valuation.horizon_months + 1))[0]
    return alive_at_start * np.concatenate([[0.0], months])


def net_segment_columns(segments: pd.DataFrame, valuation: Valuation, lifespan_years: float) -> pd.DataFrame:
    """Add clv_heuristic_net_total to a segment table: its clv_heuristic_total less the customers' heuristic costs
    (``heuristic_costs`` of the segment's mean purchases per year, as the heuristic uses the segment's means)."""
    costs = segments["customers"] * heuristic_costs(segments["purchases_per_year"], lifespan_years, valuation)
    return segments.assign(clv_heuristic_net_total=(segments["clv_heuristic_total"] - costs).to_numpy(float))
